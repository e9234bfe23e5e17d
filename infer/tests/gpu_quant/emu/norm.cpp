// The fused decode norm (ops_rms_norm_q8k: RMSNorm and the Q8_K quantization of its output, one
// barrier for the sum of squares) against the unfused pair it stands for (ops_rms_norm, then
// quant_act_q8_k), both under the emulator, byte for byte, in both block layouts (292: the
// CPU's; 304: the decode products'). The reductions and rms_norm sections of kernels/ops.cu come
// from ops_norm.cu, which tests/gpu_quant.rs cuts out of it (the rest of ops.cu needs more of
// CUDA than the emulator has). Inputs: rows of 256, 4096 and 8192 floats, normal values at
// scales 2^-20 .. 2^20, a few 1000x outliers, magnitudes over 2^-30 .. 2^30, zero rows and
// rows zero in every other half block.
#include "emu.h"
#define __shared__ static
#undef __align__
#define __align__(n) __attribute__((aligned(n)))
#include "quant.cu"  // kernels/, on the include path
#include "ops_norm.cu"
#include <random>

int main() {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  int bad = 0, cases = 0;
  for (int trial = 0; trial < 48; trial++) {
    const int n = trial % 4 == 3 ? 8192 : trial % 4 == 2 ? 256 : 4096;
    const size_t nb = n / 256;
    std::vector<float> x(n), w(n);
    const float sc = std::ldexp(1.0f, (int)(rng() % 41) - 20);
    for (int i = 0; i < n; i++) {
      x[i] = trial % 2 ? nd(rng) * std::ldexp(1.0f, (int)(rng() % 61) - 30)
                       : nd(rng) * sc * (rng() % 17 == 0 ? 1000.f : 1.f);
      w[i] = nd(rng);
      if (trial == 4 || (trial == 6 && i % 256 < 128)) x[i] = 0.f;
    }
    u8* dx = emu::dalloc(n * 4); memcpy(dx, x.data(), n * 4);
    u8* dw = emu::dalloc(n * 4); memcpy(dw, w.data(), n * 4);
    u8* ro = emu::dalloc(n * 4);
    u8* rq = emu::dalloc(nb * 292);
    emu::launch(1, 256, 0, [&] { ops_rms_norm((const float*)dx, (const float*)dw, (float*)ro, n, 1e-5f); });
    emu::launch(2, 256, 0, [&] { quant_act_q8_k((const float*)ro, rq, nb); });
    for (u32 xbs : {292u, 304u}) {
      const u32 qo = xbs - 288u;
      u8* o = emu::dalloc(n * 4);
      u8* q = emu::dalloc(nb * xbs);
      memset(q, 0x55, nb * xbs);
      emu::launch(nb, 256, 0, [&] {
        ops_rms_norm_q8k((const float*)dx, (const float*)dw, (float*)o, q, n, 1e-5f, xbs);
      });
      bool same = memcmp(o, ro, n * 4) == 0;
      for (size_t b = 0; b < nb; b++) {
        const u8* g = q + b * xbs;
        const u8* r = rq + b * 292;
        same = same && memcmp(g, r, 4) == 0 && memcmp(g + qo, r + 4, 288) == 0;
        for (u32 k = 4; k < qo; k++) same = same && g[k] == 0;
      }
      cases++;
      if (!same) {
        bad++;
        printf("n %d, %u-byte blocks, case %d: the fused norm differs\n", n, xbs, trial);
      }
    }
  }
  printf("fused norm: %d of %d cases differ\n", bad, cases);
  return bad != 0;
}
