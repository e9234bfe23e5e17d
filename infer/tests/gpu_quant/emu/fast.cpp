// The decode products with two rows a warp (fast_mv2: 16 lanes a row) against one row a warp
// (fast_mv), both under the emulator, byte for byte: outputs, added-to outputs, and with RoPE
// and the f16 KV-cache store in the epilogue (Q, K, V segments). Q4_K and Q6_K rows of 1 .. 56
// super-blocks (so a lane has 0, 1 or several steps, in pairs and not), rows past the end in
// the last block and in the second half of a warp, segments of both types in one launch, both
// activation layouts (292, 304). The reductions, rms_norm and rope sections of kernels/ops.cu
// come from ops_rope.cu, which tests/gpu_quant.rs cuts out of it.
#include "emu.h"
#define __shared__ static
#undef __align__
#define __align__(n) __attribute__((aligned(n)))
#include "quant.cu"  // kernels/, on the include path
#include "ops_rope.cu"
#include "fast.cu"
#include <random>

static std::mt19937 rng(11);

static u16 rand_f16(float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  return f2h((rng() & 1 ? -1.f : 1.f) * u(rng));
}

// Random super-blocks of a weight type (0 Q4_K, 1 Q6_K) with finite scales.
static void fill_weights(u8* w, u32 ty, size_t nblocks) {
  const size_t bs = ty ? 210 : 144;
  for (size_t b = 0; b < nblocks; b++) {
    u8* p = w + b * bs;
    for (size_t i = 0; i < bs; i++) p[i] = (u8)rng();
    const u16 d = rand_f16(1e-3f, 2e-2f), m = rand_f16(1e-3f, 2e-2f);
    if (ty) {
      memcpy(p + 208, &d, 2);
    } else {
      memcpy(p, &d, 2);
      memcpy(p + 2, &m, 2);
    }
  }
}

// nsb Q8_K activation blocks of xbs bytes (292 or 304) with consistent block sums.
static void fill_x(u8* x, u32 nsb, u32 xbs) {
  const u32 qo = xbs - 288u;
  memset(x, 0, (size_t)nsb * xbs);
  for (u32 b = 0; b < nsb; b++) {
    u8* p = x + (size_t)b * xbs;
    const float d = std::ldexp(1.0f + (float)(rng() % 1000) / 1000.f, -(int)(rng() % 12));
    memcpy(p, &d, 4);
    for (int g = 0; g < 16; g++) {
      int s = 0;
      for (int i = 0; i < 16; i++) {
        const signed char q = (signed char)(int)(rng() % 255 - 127);
        p[qo + 16 * g + i] = (u8)q;
        s += q;
      }
      const short s16 = (short)s;
      memcpy(p + qo + 256 + 2 * g, &s16, 2);
    }
  }
}

struct Seg { u32 ty, rows; bool add; };

// One launch of fast_mv or fast_mv2 over copies of the same inputs; returns the outputs and
// caches, concatenated.
static std::vector<u8> run(bool two, u32 nsb, u32 xbs, const Seg* seg, const std::vector<u8>* w,
                           const std::vector<u8>& x, const std::vector<float>* y0, bool rope,
                           u32 hd, u32 n_rot, u32 pos, const std::vector<float>& factors) {
  const u32 n_ctx = pos + 2;
  u8* dx = emu::dalloc(x.size());
  memcpy(dx, x.data(), x.size());
  u8* dw[3];
  float* dy[3];
  u32 flags = 0, total = 0;
  for (int i = 0; i < 3; i++) {
    dw[i] = emu::dalloc(w[i].size() + 16);
    memcpy(dw[i], w[i].data(), w[i].size());
    dy[i] = (float*)emu::dalloc(seg[i].rows * 4 + 4);
    memcpy(dy[i], y0[i].data(), seg[i].rows * 4);
    flags |= seg[i].ty << (2 * i);
    if (seg[i].add) flags |= 1u << (8 + i);
    total += seg[i].rows;
  }
  u16* kc = nullptr;
  u16* vc = nullptr;
  float* df = nullptr;
  if (rope) {
    kc = (u16*)emu::dalloc(n_ctx * seg[1].rows * 2);
    vc = (u16*)emu::dalloc(n_ctx * seg[2].rows * 2);
    memset(kc, 0x11, n_ctx * seg[1].rows * 2);
    memset(vc, 0x22, n_ctx * seg[2].rows * 2);
    if (!factors.empty()) {
      df = (float*)emu::dalloc(factors.size() * 4);
      memcpy(df, factors.data(), factors.size() * 4);
    }
  }
  const float theta_scale = std::pow(10000.0f, -2.0f / (float)n_rot);
  const u32 dims = rope ? (hd | n_rot << 16) : 0u;
  const u32 rpb = two ? 16u : 8u;
  emu::launch((total + rpb - 1) / rpb, 256, 0, [&] {
    (two ? fast_mv2 : fast_mv)(dx, nsb, dw[0], dy[0], seg[0].rows, dw[1], dy[1], seg[1].rows,
                               dw[2], dy[2], seg[2].rows, flags, xbs, kc, vc, pos, dims,
                               theta_scale, 1.0f, df);
  });
  std::vector<u8> out;
  for (int i = 0; i < 3; i++) out.insert(out.end(), (u8*)dy[i], (u8*)(dy[i] + seg[i].rows));
  if (rope) {
    out.insert(out.end(), (u8*)kc, (u8*)(kc + n_ctx * seg[1].rows));
    out.insert(out.end(), (u8*)vc, (u8*)(vc + n_ctx * seg[2].rows));
  }
  emu::dfree_all();
  return out;
}

int main() {
  int bad = 0, cases = 0;
  const u32 nsbs[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 56};
  for (int trial = 0; trial < 36; trial++) {
    const u32 nsb = nsbs[trial % 12];
    const u32 xbs = trial % 3 == 2 ? 292u : 304u;
    const bool rope = trial % 2 == 0;
    Seg seg[3];
    u32 hd = 16, n_rot = trial % 4 == 0 ? 16 : 8;
    if (rope) {
      seg[0] = {0u, 64u, false};
      seg[1] = {(u32)(trial % 3 == 0), 32u, false};
      seg[2] = {1u, 32u, false};
    } else {
      seg[0] = {(u32)(trial % 5 == 0), 21u + (u32)(rng() % 30), trial % 4 == 1};
      seg[1] = {(u32)(trial % 3 != 0), trial % 6 == 1 ? 0u : 11u, false};
      seg[2] = {(u32)(rng() % 2), trial % 7 == 3 ? 0u : 5u + (u32)(rng() % 12), true};
    }
    std::vector<u8> w[3];
    std::vector<float> y0[3];
    std::normal_distribution<float> nd(0.f, 1.f);
    for (int i = 0; i < 3; i++) {
      w[i].resize((size_t)seg[i].rows * nsb * (seg[i].ty ? 210 : 144));
      fill_weights(w[i].data(), seg[i].ty, (size_t)seg[i].rows * nsb);
      y0[i].resize(seg[i].rows);
      for (auto& v : y0[i]) v = nd(rng);
    }
    std::vector<u8> x((size_t)nsb * xbs);
    fill_x(x.data(), nsb, xbs);
    std::vector<float> factors;
    if (rope && trial % 3 == 1)
      for (u32 i = 0; i < n_rot / 2; i++) factors.push_back(1.0f + (float)i);
    const u32 pos = 3 + (u32)(rng() % 40);
    const auto one = run(false, nsb, xbs, seg, w, x, y0, rope, hd, n_rot, pos, factors);
    const auto two = run(true, nsb, xbs, seg, w, x, y0, rope, hd, n_rot, pos, factors);
    cases++;
    // the products wrote every output row (equal bytes of two kernels that wrote nothing would
    // prove nothing), and with RoPE the caches' row pos
    size_t off = 0, unwritten = 0;
    for (int i = 0; i < 3; i++)
      for (u32 r = 0; r < seg[i].rows; r++, off += 4)
        unwritten += memcmp(one.data() + off, &y0[i][r], 4) == 0;
    if (rope) {
      const size_t kw = seg[1].rows * 2, vw = seg[2].rows * 2;
      const std::vector<u8> k0(kw, 0x11), v0(vw, 0x22);
      unwritten += memcmp(one.data() + off + pos * kw, k0.data(), kw) == 0;
      unwritten += memcmp(one.data() + off + (pos + 2) * kw + pos * vw, v0.data(), vw) == 0;
    }
    if (unwritten) {
      bad++;
      printf("case %d: %zu outputs (or cache rows) not written\n", trial, unwritten);
    }
    if (one != two) {
      bad++;
      printf("case %d (nsb %u, %u-byte blocks, rope %d): two rows a warp differ\n", trial, nsb,
             xbs, rope);
    }
  }
  printf("two rows a warp: %d of %d cases differ\n", bad, cases);
  return bad != 0;
}
