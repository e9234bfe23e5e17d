// Runs the cases tests/gpu_quant.rs wrote (argv[1]: their directory; argv[2]: only this case)
// through kernels/quant.cu under the emulator, launched as src/gpu/quant.rs launches them but
// on small grids (so that warps stride over several rows), and compares with the CPU results.
#include "emu.h"
#include "quant.cu"  // kernels/, on the include path
#include <string>
#include <fstream>
#include <sstream>
#include <iterator>

static std::vector<u8> readf(const std::string& p) {
  std::ifstream f(p, std::ios::binary); return std::vector<u8>((std::istreambuf_iterator<char>(f)), {});
}
struct TI { int id; const char* name; int block, bytes, vid, xblock, xbytes; };
static const TI TYPES[] = {
  {0, "F32", 1, 4, 0, 1, 4}, {1, "F16", 1, 2, 1, 1, 2}, {30, "BF16", 1, 2, 30, 1, 2},
  {2, "Q4_0", 32, 18, 8, 32, 34}, {3, "Q4_1", 32, 20, 9, 32, 36}, {6, "Q5_0", 32, 22, 8, 32, 34},
  {7, "Q5_1", 32, 24, 9, 32, 36}, {8, "Q8_0", 32, 34, 8, 32, 34}, {12, "Q4_K", 256, 144, 15, 256, 292},
  {13, "Q5_K", 256, 176, 15, 256, 292}, {14, "Q6_K", 256, 210, 15, 256, 292},
};
static const TI* ti(int id) { for (auto& t : TYPES) if (t.id == id) return &t; return nullptr; }

typedef void (*Mvq)(const u8*, unsigned long long, u32, u32, const u8*, unsigned long long, unsigned long long, float*, u32, u32);
typedef void (*Mvf)(const u8*, u32, u32, const u8*, float*);
#define NTS(p) {p##_n1, p##_n2, p##_n3, p##_n4, p##_n5, p##_n6, p##_n7, p##_n8}
static Mvq mvq_fn(int id, int nt) {
  static const Mvq q4_0[] = NTS(quant_mv_q4_0), q4_1[] = NTS(quant_mv_q4_1), q5_0[] = NTS(quant_mv_q5_0),
    q5_1[] = NTS(quant_mv_q5_1), q8_0[] = NTS(quant_mv_q8_0), q4_k[] = NTS(quant_mv_q4_k), q5_k[] = NTS(quant_mv_q5_k), q6_k[] = NTS(quant_mv_q6_k);
  switch (id) { case 2: return q4_0[nt-1]; case 3: return q4_1[nt-1]; case 6: return q5_0[nt-1]; case 7: return q5_1[nt-1];
    case 8: return q8_0[nt-1]; case 12: return q4_k[nt-1]; case 13: return q5_k[nt-1]; case 14: return q6_k[nt-1]; }
  return nullptr;
}
static Mvf mvf_fn(int id, bool wide, int nt) {
  static const Mvf a[] = NTS(quant_mvf_f32_v4), b[] = NTS(quant_mvf_f32_v1), c[] = NTS(quant_mvf_f16_v8),
    d[] = NTS(quant_mvf_f16_v1), e[] = NTS(quant_mvf_bf16_v8), f[] = NTS(quant_mvf_bf16_v1);
  switch (id) { case 0: return (wide ? a : b)[nt-1]; case 1: return (wide ? c : d)[nt-1]; case 30: return (wide ? e : f)[nt-1]; }
  return nullptr;
}
typedef void (*Rows)(const u8*, u32, u32, const int*, u32, float*);
typedef void (*Deq)(const u8*, unsigned long long, u8*, u32);
static Rows rows_fn(int id) {
  switch (id) { case 0: return quant_rows_f32; case 1: return quant_rows_f16; case 30: return quant_rows_bf16; case 2: return quant_rows_q4_0;
    case 3: return quant_rows_q4_1; case 6: return quant_rows_q5_0; case 7: return quant_rows_q5_1; case 8: return quant_rows_q8_0;
    case 12: return quant_rows_q4_k; case 13: return quant_rows_q5_k; case 14: return quant_rows_q6_k; }
  return nullptr;
}
static Deq deq_fn(int id) {
  switch (id) { case 0: return quant_deq_f32; case 1: return quant_deq_f16; case 30: return quant_deq_bf16; case 2: return quant_deq_q4_0;
    case 3: return quant_deq_q4_1; case 6: return quant_deq_q5_0; case 7: return quant_deq_q5_1; case 8: return quant_deq_q8_0;
    case 12: return quant_deq_q4_k; case 13: return quant_deq_q5_k; case 14: return quant_deq_q6_k; }
  return nullptr;
}

static u8* up(const std::vector<u8>& v) { u8* p = emu::dalloc(v.size()); memcpy(p, v.data(), v.size()); return p; }

static int GRID_Q = 3;  // small grids: warps stride over several rows

// emulated quantize(): returns device bytes. shift: x starts that many bytes past a 16-byte
// boundary (4: Q8_K's quantization takes its unaligned loads).
static std::vector<u8> quantize(const TI& t, const std::vector<u8>& x, int cols, int n_tok, int shift = 0) {
  size_t n = (size_t)cols * n_tok;
  size_t xrow = (size_t)cols / t.xblock * t.xbytes;
  u8* dx = emu::dalloc(x.size() + shift) + shift; memcpy(dx, x.data(), x.size());
  u8* dout = emu::dalloc(xrow * n_tok);
  unsigned long long units = n / t.xblock;
  switch (t.vid) {
    case 0: emu::launch(2, 256, 0, [&] { quant_act_f32((const float*)dx, (float*)dout, units); }); break;
    case 1: emu::launch(2, 256, 0, [&] { quant_act_f16((const float*)dx, (u16*)dout, units); }); break;
    case 30: emu::launch(2, 256, 0, [&] { quant_act_bf16((const float*)dx, (u16*)dout, units); }); break;
    case 8: emu::launch(2, 256, 0, [&] { quant_act_q8_0((const float*)dx, dout, units); }); break;
    case 9: emu::launch(2, 256, 0, [&] { quant_act_q8_1((const float*)dx, dout, units); }); break;
    case 15: emu::launch(2, 256, 0, [&] { quant_act_q8_k((const float*)dx, dout, units); }); break;
  }
  return std::vector<u8>(dout, dout + xrow * n_tok);
}

static bool close(float got, float want, float bound) {
  if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got);
  if (std::isinf(want) || std::isinf(got)) return want == got;
  return std::fabs(got - want) <= 1e-5f * bound + 1.17549435e-38f;
}

int main(int argc, char** argv) {
  if (argc < 2) { fprintf(stderr, "usage: emu CASE_DIR [CASE]\n"); return 2; }
  std::string root = std::string(argv[1]) + "/";
  std::ifstream idx(root + "index.txt");
  std::string line; int fails = 0, cases = 0;
  std::string only = argc > 2 ? argv[2] : "";
  while (std::getline(idx, line)) {
    std::istringstream is(line); std::string id; int ty, rows, cols, n_tok, nids;
    is >> id >> ty >> rows >> cols >> n_tok >> nids;
    if (!only.empty() && only != id) continue;
    const TI& t = *ti(ty); cases++;
    std::string d = root + id + "/";
    auto w = readf(d + "w.bin"), x = readf(d + "x.bin"), xq = readf(d + "xq.bin"), yb = readf(d + "y.bin"),
         bb = readf(d + "bound.bin"), xs = readf(d + "xs.bin"), xsq = readf(d + "xsq.bin"), wsp = readf(d + "wsp.bin"),
         idsb = readf(d + "ids.bin"), rowsb = readf(d + "rows.bin");
    // quantize
    bool qok = true;
    auto gq = quantize(t, x, cols, n_tok);
    if (gq != xq) { qok = false; }
    if (t.vid == 15 && quantize(t, x, cols, n_tok, 4) != xq) { qok = false; }
    auto gqs = quantize(t, xs, cols, n_tok);
    size_t bad = 0, first = (size_t)-1;
    for (size_t i = 0; i < gqs.size(); i++) if (gqs[i] != xsq[i]) { bad++; if (first == (size_t)-1) first = i; }
    if (bad) qok = false;
    // matvec
    size_t rb = (size_t)cols / t.block * t.bytes, xrow = (size_t)cols / t.xblock * t.xbytes;
    u8* dw = up(w); u8* dxq = up(xq); float* dy = (float*)emu::dalloc((size_t)rows * n_tok * 4);
    for (int t0 = 0; t0 < n_tok; t0 += 8) {
      int nt = std::min(8, n_tok - t0);
      const u8* xs_ = dxq + (size_t)t0 * xrow; float* ys_ = dy + (size_t)t0 * rows;
      if (t.block > 1) {
        size_t nb = cols / t.block;
        size_t cap = 32768 / nt / 16 * 16;
        auto slot_for = [&](size_t tb) { return (tb * t.xbytes + 48 + 15) / 16 * 16; };
        size_t tb = nb, slot = slot_for(nb);
        if (slot > cap) { tb = std::max<size_t>(1, (cap - 48) / t.xbytes); slot = slot_for(tb); }
        size_t smem = nt * slot + 4 * 2 * 2048;
        unsigned grid = std::min<unsigned>((rows + 3) / 4, GRID_Q);
        Mvq f = mvq_fn(ty, nt);
        emu::launch(grid, 128, smem, [&] { f(dw, (unsigned long long)rows * rb, rows, nb, xs_, (unsigned long long)nt * xrow, xrow, ys_, tb, slot); });
      } else {
        int es = t.bytes; int vec = 16 / es;
        bool wide = cols % vec == 0 && ((uintptr_t)dw % 16 == 0) && ((uintptr_t)xs_ % 16 == 0);
        Mvf f = mvf_fn(ty, wide, nt);
        unsigned grid = std::min<unsigned>((rows + 3) / 4, 2);
        emu::launch(grid, 128, 0, [&] { f(dw, rows, cols, xs_, ys_); });
      }
    }
    const float* y = (const float*)yb.data(); const float* bd = (const float*)bb.data();
    size_t mbad = 0; double worst = 0; size_t wi = 0;
    for (size_t i = 0; i < (size_t)rows * n_tok; i++) {
      if (!close(dy[i], y[i], bd[i])) { if (!mbad) wi = i; mbad++; }
      double rel = bd[i] > 0 ? std::fabs(dy[i] - y[i]) / bd[i] : 0; if (rel > worst) worst = rel;
    }
    // get_rows
    u8* dwsp = up(wsp); u8* dids = up(idsb); float* drows = (float*)emu::dalloc((size_t)nids * cols * 4);
    emu::launch(3, 256, 0, [&] { rows_fn(ty)(dwsp, rows, cols, (const int*)dids, nids, drows); });
    size_t rbad = 0; size_t rfirst = 0;
    for (size_t i = 0; i < (size_t)nids * cols; i++) if (memcmp(&drows[i], rowsb.data() + 4 * i, 4)) { if (!rbad) rfirst = i; rbad++; }
    // dequantize row 0 to f32 (== lookup of id 0)
    float* ddq = (float*)emu::dalloc((size_t)cols * 4);
    emu::launch(2, 256, 0, [&] { deq_fn(ty)(dwsp, cols, (u8*)ddq, 0); });
    size_t dbad = 0; for (int i = 0; i < cols; i++) if (memcmp(&ddq[i], rowsb.data() + 4 * i, 4)) dbad++;
    bool ok = qok && !mbad && !rbad && !dbad;
    if (!ok) fails++;
    printf("%s %-5s %5dx%-6d nt=%-2d quant %s (special mismatches %zu%s) matvec %s (%zu bad, worst %.2e of bound) rows %s (%zu bad) deq %s\n",
           id.c_str(), t.name, rows, cols, n_tok, gq == xq ? "ok" : "BAD", bad, bad ? (" first at " + std::to_string(first)).c_str() : "",
           mbad ? "BAD" : "ok", mbad, worst, rbad ? "BAD" : "ok", rbad, dbad ? "BAD" : "ok");
    if (mbad) printf("   first bad y[%zu]: got %.9g want %.9g bound %.3g\n", wi, dy[wi], y[wi], bd[wi]);
    if (rbad) { u32 g, wnt; memcpy(&g, &drows[rfirst], 4); memcpy(&wnt, rowsb.data() + 4 * rfirst, 4); printf("   first bad row elem %zu: got %08x want %08x\n", rfirst, g, wnt); }
    if (bad) printf("   first bad special byte %zu: got %02x want %02x\n", first, gqs[first], xsq[first]);
    fflush(stdout);
    emu::dfree_all();
  }
  printf("%d cases, %d failed\n", cases, fails);
  return fails ? 1 : 0;
}
