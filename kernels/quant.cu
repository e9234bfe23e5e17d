// Activation quantization, dequant-fused matrix-vector products and row lookups for the ggml
// weight types, matched to the CPU engine (infer/src/quant/). Launch wrappers, and the
// invariants they check before every launch: infer/src/gpu/quant.rs.
//
// This file shares one translation unit with ops.cu: device helpers live in namespace lsq,
// kernels carry the quant_ prefix, macros the LSQ_ prefix (undefined at the end).
//
// Numerics
// - Activation quantization and row lookups are bit-identical to the CPU (ggml's x86 AVX2
//   build): same scale formulas, round-half-even, x86 NaN propagation (the NaN an SSE operation
//   returns is its first NaN operand made quiet, or the negative default NaN 0xffc00000 for
//   inf * 0 and the like; the GPU would return 0x7fffffff). Products and sums that a compiler
//   could fuse into an FMA are written with __fmul_rn/__fadd_rn.
// - Matrix-vector products compute the same exact integer block sums as the CPU kernels
//   (dp4a on the same integers), scaled by the same f32 block scales; only the f32 summation
//   order across blocks differs.
//
// Matrix-vector products (quant_mv_*): one warp per weight row at a time, rows strided over a
// persistent grid of 4-warp CTAs.
// - The activation rows (already quantized, in the CPU byte layout) are staged once per CTA
//   into shared memory with 16-byte cp.async copies; long rows times many tokens are processed
//   in column tiles (y is then accumulated tile by tile by the same thread).
// - Each warp streams its weight row through two 2 KiB shared-memory windows: the next window
//   is copied (aligned 16-byte cp.async, fully coalesced, whatever the block size) while the
//   current one is computed. Blocks of 18, 22, 34 or 210 bytes are therefore never loaded from
//   global memory with narrow loads; in shared memory they are read as aligned 32-bit words
//   joined with funnel shifts.
// - 32-element blocks: one lane per block. K super-blocks: 16 (Q4_K, Q5_K) or 8 (Q6_K) lanes
//   per super-block, each lane reading a distinct run of weight bytes.
// Float weights (quant_mvf_*): a warp per row, 16-byte loads where the row length allows.

#ifndef LSQ_SMEM
#define LSQ_SMEM(name) extern __shared__ __align__(16) u8 name[]
#endif
// Alignment a load relies on (checked by the emulator in tests/gpu_quant/emu/; free here).
#ifndef LSQ_ALIGNED
#define LSQ_ALIGNED(p, n)
#endif

namespace lsq {

// ------------------------------------------------------------------------- scalar helpers

__device__ __forceinline__ u32 umin32(u32 a, u32 b) { return a < b ? a : b; }

__device__ __forceinline__ bool is_nan(float f) {
    return (__float_as_uint(f) & 0x7fffffffu) > 0x7f800000u;
}
__device__ __forceinline__ float quiet(float f) {
    return __uint_as_float(__float_as_uint(f) | 0x00400000u);
}
// The NaN an x86 SSE operation on a and b returns.
__device__ __forceinline__ float x86_nan(float a, float b) {
    if (is_nan(a)) return quiet(a);
    if (is_nan(b)) return quiet(b);
    return __uint_as_float(0xffc00000u);
}
__device__ __forceinline__ float xmul(float a, float b) {
    const float r = __fmul_rn(a, b);
    return is_nan(r) ? x86_nan(a, b) : r;
}
__device__ __forceinline__ float xadd(float a, float b) {
    const float r = __fadd_rn(a, b);
    return is_nan(r) ? x86_nan(a, b) : r;
}
__device__ __forceinline__ float xsub(float a, float b) {
    const float r = __fsub_rn(a, b);
    return is_nan(r) ? x86_nan(a, b) : r;
}
__device__ __forceinline__ float xdiv(float a, float b) {
    const float r = __fdiv_rn(a, b);
    return is_nan(r) ? x86_nan(a, b) : r;
}
// f16 -> f32 as F16C does it (NaNs made quiet, payload kept).
__device__ __forceinline__ float h2f_x86(u32 h) {
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0u)
        return __uint_as_float(((h & 0x8000u) << 16) | 0x7fc00000u | ((h & 0x03ffu) << 13));
    return h2f((u16)h);
}
// f32 -> f16, round to nearest even; NaNs as F16C: quiet, payload truncated.
__device__ __forceinline__ u32 f2h_x86(float f) {
    const u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return ((u >> 16) & 0x8000u) | 0x7e00u | ((u & 0x007fffffu) >> 13);
    return f2h(f);
}
// bf16 -> f32 as the half crate does it (NaNs made quiet).
__device__ __forceinline__ float bf2f_x86(u32 b) {
    if ((b & 0x7fffu) > 0x7f80u) return __uint_as_float((b | 0x40u) << 16);
    return __uint_as_float(b << 16);
}

// Little-endian loads from byte pointers of any alignment (row lookups).
__device__ __forceinline__ u32 lb16(const u8* p) { return (u32)p[0] | ((u32)p[1] << 8); }
__device__ __forceinline__ u32 lb32(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

// Shared-memory reads: p is 2-byte aligned (weight windows, activation tiles).
__device__ __forceinline__ u32 ld16s(const u8* p) {
    LSQ_ALIGNED(p, 2);
    return *(const u16*)p;
}
__device__ __forceinline__ u32 ld32s(const u8* p) {
    LSQ_ALIGNED(p, 4);
    return *(const u32*)p;
}
template <class T>
__device__ __forceinline__ T ldv(const u8* p) {
    LSQ_ALIGNED(p, sizeof(T));
    return *(const T*)p;
}
// N consecutive little-endian words starting at the 2-byte aligned p: N + 1 aligned reads
// joined by funnel shifts. Reads up to 4 bytes past the last word (the buffers leave room).
template <int N>
__device__ __forceinline__ void ldw2(const u8* p, u32 (&out)[N]) {
    LSQ_ALIGNED(p, 2);
    const u32* q = (const u32*)((unsigned long long)p & ~3ull);
    const u32 sh = ((u32)(unsigned long long)p & 2u) << 3;
    u32 prev = q[0];
#pragma unroll
    for (int i = 0; i < N; i++) {
        const u32 next = q[i + 1];
        out[i] = __funnelshift_r(prev, next, sh);
        prev = next;
    }
}

// Bytes 0..15 (four 4-bit nibbles in, one per byte out) -> 0x10 in each byte whose bit is set.
__device__ __forceinline__ u32 spread4(u32 h) { return ((h * 0x00204081u) & 0x01010101u) << 4; }
// Per byte: 0..15 -> -8..7, 0..31 -> -16..15, 0..63 -> -32..31 (no carries between bytes).
__device__ __forceinline__ u32 sub8(u32 v) { return (v + 0x78787878u) ^ 0x80808080u; }
__device__ __forceinline__ u32 sub16(u32 v) { return (v + 0x70707070u) ^ 0x80808080u; }
__device__ __forceinline__ u32 sub32(u32 v) { return (v + 0x60606060u) ^ 0x80808080u; }
__device__ __forceinline__ int dp4(u32 a, u32 b, int c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 610
    for (int i = 0; i < 32; i += 8) c += (int)(signed char)(a >> i) * (int)(signed char)(b >> i);
    return c;
#else
    return __dp4a((int)a, (int)b, c);
#endif
}
__device__ __forceinline__ int bsum4(u32 x, int c) { return dp4(0x01010101u, x, c); }

// ------------------------------------------------------------------------ async copies

#ifndef LSQ_EMU
__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
// 16 bytes global -> shared, both 16-byte aligned; only the first n (0..16) bytes are read,
// the rest of the destination is zeroed.
__device__ __forceinline__ void cp16(u8* s, const u8* g, u32 n) {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(s)), "l"(g),
                 "r"(n)
                 : "memory");
#else
    if (n == 16u) {
        *(uint4*)s = *(const uint4*)g;
    } else {
        for (u32 i = 0; i < 16u; i++) s[i] = i < n ? g[i] : (u8)0;
    }
#endif
}
__device__ __forceinline__ void cp_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Wait until at most N of this thread's copy groups are pending.
template <int N>
__device__ __forceinline__ void cp_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
#endif

// Copy global bytes [g0, g1) into dst (16-byte aligned) so that dst[i] holds byte
// (g0 & ~15) + i, with `nl` threads (this one is number `me`). Nothing at or past `gend` is read
// (the chunk that straddles it is zero-filled). g0 & ~15 must not lie before the allocation.
__device__ __forceinline__ void stage(u8* dst, unsigned long long g0, unsigned long long g1,
                                      unsigned long long gend, u32 me, u32 nl) {
    const unsigned long long a = g0 & ~15ull;
    const u32 chunks = (u32)(((g1 + 15ull) & ~15ull) - a) >> 4;
    for (u32 c = me; c < chunks; c += nl) {
        const unsigned long long src = a + 16ull * c;
        const u32 n = src + 16ull <= gend ? 16u : (src < gend ? (u32)(gend - src) : 0u);
        cp16(dst + 16u * c, (const u8*)src, n);
    }
}

// ------------------------------------------------------------- fused dots, one lane's share
//
// lane<NT>(wb, sub, xb0, tok, acc): wb is the weight block in shared memory, sub the lane's
// index among the LPB lanes of that block, xb0 + tok[t] the activation block of token t in
// shared memory; adds the lane's share of every token's dot product to acc[t].

constexpr int WARPS = 4;    // warps per CTA of the quantized matvec
constexpr int WIN = 2048;   // bytes of one weight window (two per warp)
constexpr int SLACK = 48;   // window / activation slot bytes kept free for alignment and over-read

// Window blocks: as many as fit, a multiple of the blocks per sub-step for K types.
constexpr int win_blocks(int bs, int lpb) {
    return lpb == 1 ? (WIN - SLACK) / bs : ((WIN - SLACK) / bs) / (32 / lpb) * (32 / lpb);
}

// Q4_0 x Q8_0: d * sum((q - 8) * x).
struct KQ4_0 {
    static constexpr int BS = 18, XBS = 34, LPB = 1, B = win_blocks(18, 1);
    template <int NT>
    __device__ static __forceinline__ void lane(const u8* wb, int, const u8* xb0,
                                                const u32 (&tok)[NT], float (&acc)[NT]) {
        const float dw = h2f((u16)ld16s(wb));
        u32 q[4];
        ldw2<4>(wb + 2, q);
        u32 v[8];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            v[k] = sub8(q[k] & 0x0f0f0f0fu);
            v[k + 4] = sub8((q[k] >> 4) & 0x0f0f0f0fu);
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const u8* xb = xb0 + tok[t];
            const float dx = h2f((u16)ld16s(xb));
            u32 x[8];
            ldw2<8>(xb + 2, x);
            int s = 0;
#pragma unroll
            for (int k = 0; k < 8; k++) s = dp4(v[k], x[k], s);
            acc[t] = fmaf(dw * dx, (float)s, acc[t]);
        }
    }
};

// Q4_1 x Q8_1: d * sum(q * x) + m * s.
struct KQ4_1 {
    static constexpr int BS = 20, XBS = 36, LPB = 1, B = win_blocks(20, 1);
    template <int NT>
    __device__ static __forceinline__ void lane(const u8* wb, int, const u8* xb0,
                                                const u32 (&tok)[NT], float (&acc)[NT]) {
        const u32 dm = ld32s(wb);
        const float dw = h2f((u16)(dm & 0xffffu)), mw = h2f((u16)(dm >> 16));
        u32 v[8];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 q = ld32s(wb + 4 + 4 * k);
            v[k] = q & 0x0f0f0f0fu;
            v[k + 4] = (q >> 4) & 0x0f0f0f0fu;
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const u8* xb = xb0 + tok[t];
            const u32 ds = ld32s(xb);
            int s = 0;
#pragma unroll
            for (int k = 0; k < 8; k++) s = dp4(v[k], ld32s(xb + 4 + 4 * k), s);
            acc[t] = fmaf(dw * h2f((u16)(ds & 0xffffu)), (float)s, acc[t]);
            acc[t] = fmaf(mw, h2f((u16)(ds >> 16)), acc[t]);
        }
    }
};

// Q5_0 x Q8_0: d * sum((q5 - 16) * x).
struct KQ5_0 {
    static constexpr int BS = 22, XBS = 34, LPB = 1, B = win_blocks(22, 1);
    template <int NT>
    __device__ static __forceinline__ void lane(const u8* wb, int, const u8* xb0,
                                                const u32 (&tok)[NT], float (&acc)[NT]) {
        const float dw = h2f((u16)ld16s(wb));
        u32 q[5];  // qh, qs[0..16]
        ldw2<5>(wb + 2, q);
        const u32 qh = q[0];
        u32 v[8];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            v[k] = sub16((q[k + 1] & 0x0f0f0f0fu) | spread4((qh >> (4 * k)) & 0xfu));
            v[k + 4] = sub16(((q[k + 1] >> 4) & 0x0f0f0f0fu) | spread4((qh >> (16 + 4 * k)) & 0xfu));
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const u8* xb = xb0 + tok[t];
            const float dx = h2f((u16)ld16s(xb));
            u32 x[8];
            ldw2<8>(xb + 2, x);
            int s = 0;
#pragma unroll
            for (int k = 0; k < 8; k++) s = dp4(v[k], x[k], s);
            acc[t] = fmaf(dw * dx, (float)s, acc[t]);
        }
    }
};

// Q5_1 x Q8_1: d * sum(q5 * x) + m * s.
struct KQ5_1 {
    static constexpr int BS = 24, XBS = 36, LPB = 1, B = win_blocks(24, 1);
    template <int NT>
    __device__ static __forceinline__ void lane(const u8* wb, int, const u8* xb0,
                                                const u32 (&tok)[NT], float (&acc)[NT]) {
        const u32 dm = ld32s(wb);
        const float dw = h2f((u16)(dm & 0xffffu)), mw = h2f((u16)(dm >> 16));
        const u32 qh = ld32s(wb + 4);
        u32 v[8];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u32 q = ld32s(wb + 8 + 4 * k);
            v[k] = (q & 0x0f0f0f0fu) | spread4((qh >> (4 * k)) & 0xfu);
            v[k + 4] = ((q >> 4) & 0x0f0f0f0fu) | spread4((qh >> (16 + 4 * k)) & 0xfu);
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const u8* xb = xb0 + tok[t];
            const u32 ds = ld32s(xb);
            int s = 0;
#pragma unroll
            for (int k = 0; k < 8; k++) s = dp4(v[k], ld32s(xb + 4 + 4 * k), s);
            acc[t] = fmaf(dw * h2f((u16)(ds & 0xffffu)), (float)s, acc[t]);
            acc[t] = fmaf(mw, h2f((u16)(ds >> 16)), acc[t]);
        }
    }
};

// Q8_0 x Q8_0: d * sum(q * x).
struct KQ8_0 {
    static constexpr int BS = 34, XBS = 34, LPB = 1, B = win_blocks(34, 1);
    template <int NT>
    __device__ static __forceinline__ void lane(const u8* wb, int, const u8* xb0,
                                                const u32 (&tok)[NT], float (&acc)[NT]) {
        const float dw = h2f((u16)ld16s(wb));
        u32 v[8];
        ldw2<8>(wb + 2, v);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const u8* xb = xb0 + tok[t];
            const float dx = h2f((u16)ld16s(xb));
            u32 x[8];
            ldw2<8>(xb + 2, x);
            int s = 0;
#pragma unroll
            for (int k = 0; k < 8; k++) s = dp4(v[k], x[k], s);
            acc[t] = fmaf(dw * dx, (float)s, acc[t]);
        }
    }
};

// Byte k (0..11) of the 12 packed K scale bytes held in three words.
__device__ __forceinline__ u32 kbyte(u32 s0, u32 s1, u32 s2, u32 k) {
    const u32 w = k < 4u ? s0 : (k < 8u ? s1 : s2);
    return (w >> (8u * (k & 3u))) & 0xffu;
}
// The 6-bit scale and min of sub-block i (0..7) of a Q4_K/Q5_K block.
__device__ __forceinline__ void k4_scale_min(u32 s0, u32 s1, u32 s2, u32 i, int& sc, int& mn) {
    if (i < 4u) {
        sc = (int)(kbyte(s0, s1, s2, i) & 63u);
        mn = (int)(kbyte(s0, s1, s2, i + 4u) & 63u);
    } else {
        const u32 hi = kbyte(s0, s1, s2, i + 4u);
        sc = (int)((hi & 0xfu) | ((kbyte(s0, s1, s2, i - 4u) >> 6) << 4));
        mn = (int)((hi >> 4) | ((kbyte(s0, s1, s2, i) >> 6) << 4));
    }
}

// Q4_K/Q5_K x Q8_K, 16 lanes per super-block: lane (j, r) = (sub >> 2, sub & 3) takes the 8
// quant bytes 32j + 8r.. of the 128, i.e. elements 8r..8r+8 of sub-blocks 2j (low nibbles) and
// 2j + 1 (high nibbles). Minimum terms use the exact sums of the lane's activations (the same
// integers as the CPU's bsums).
template <bool Q5>
struct KQxK {
    static constexpr int BS = Q5 ? 176 : 144, XBS = 292, LPB = 16, B = win_blocks(BS, 16);
    template <int NT>
    __device__ static __forceinline__ void lane(const u8* wb, int sub, const u8* xb0,
                                                const u32 (&tok)[NT], float (&acc)[NT]) {
        const u32 j = (u32)sub >> 2, r = (u32)sub & 3u;
        const uint4 hdr = ldv<uint4>(wb);  // d, dmin, scales[12]; blocks are 16-aligned
        const float dw = h2f((u16)(hdr.x & 0xffffu)), dmw = h2f((u16)(hdr.x >> 16));
        int sca, mna, scb, mnb;
        k4_scale_min(hdr.y, hdr.z, hdr.w, 2u * j, sca, mna);
        k4_scale_min(hdr.y, hdr.z, hdr.w, 2u * j + 1u, scb, mnb);
        const uint2 qs = ldv<uint2>(wb + (Q5 ? 48 : 16) + 32u * j + 8u * r);
        u32 lo0 = qs.x & 0x0f0f0f0fu, lo1 = qs.y & 0x0f0f0f0fu;
        u32 hi0 = (qs.x >> 4) & 0x0f0f0f0fu, hi1 = (qs.y >> 4) & 0x0f0f0f0fu;
        if (Q5) {
            const uint2 qh = ldv<uint2>(wb + 16 + 8u * r);
            lo0 |= ((qh.x >> (2u * j)) & 0x01010101u) << 4;
            lo1 |= ((qh.y >> (2u * j)) & 0x01010101u) << 4;
            hi0 |= ((qh.x >> (2u * j + 1u)) & 0x01010101u) << 4;
            hi1 |= ((qh.y >> (2u * j + 1u)) & 0x01010101u) << 4;
        }
        // Lanes with j >= 2 read their second sub-block first: the 16 lanes of a super-block
        // then hit 16 distinct banks per load.
        const bool swap = j >= 2u;
        const u32 oa = 4u + 64u * j + 8u * r, ob = oa + 32u;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const u8* xb = xb0 + tok[t];
            const float xd = __uint_as_float(ld32s(xb));
            const u32 first = swap ? ob : oa, second = swap ? oa : ob;
            const u32 f0 = ld32s(xb + first), f1 = ld32s(xb + first + 4u);
            const u32 s0 = ld32s(xb + second), s1 = ld32s(xb + second + 4u);
            const u32 xa0 = swap ? s0 : f0, xa1 = swap ? s1 : f1;
            const u32 xb0v = swap ? f0 : s0, xb1v = swap ? f1 : s1;
            const int dota = dp4(lo0, xa0, dp4(lo1, xa1, 0));
            const int dotb = dp4(hi0, xb0v, dp4(hi1, xb1v, 0));
            const int suma = bsum4(xa0, bsum4(xa1, 0));
            const int sumb = bsum4(xb0v, bsum4(xb1v, 0));
            const int isum = sca * dota + scb * dotb;
            const int imin = mna * suma + mnb * sumb;
            acc[t] = fmaf(xd * dw, (float)isum, acc[t]);
            acc[t] = fmaf(-xd * dmw, (float)imin, acc[t]);
        }
    }
};
using KQ4_K = KQxK<false>;
using KQ5_K = KQxK<true>;

// Q6_K x Q8_K, 8 lanes per super-block: lane (h, q) = (sub >> 2, sub & 3) takes, in half h,
// positions l = 8q..8q+8 of all four quarters m: ql bytes 64h + l (m = 0 low, m = 2 high),
// 64h + 32 + l (m = 1 low, m = 3 high), qh bytes 32h + l (bits 2m, 2m + 1).
struct KQ6_K {
    static constexpr int BS = 210, XBS = 292, LPB = 8, B = win_blocks(210, 8);
    template <int NT>
    __device__ static __forceinline__ void lane(const u8* wb, int sub, const u8* xb0,
                                                const u32 (&tok)[NT], float (&acc)[NT]) {
        const u32 h = (u32)sub >> 2, q = (u32)sub & 3u, l0 = 8u * q;
        u32 qa[2], qb[2], qh[2], sw[2];
        ldw2<2>(wb + 64u * h + l0, qa);
        ldw2<2>(wb + 64u * h + 32u + l0, qb);
        ldw2<2>(wb + 128u + 32u * h + l0, qh);
        ldw2<2>(wb + 192u + 8u * h, sw);  // scales 8h..8h+8
        const float dw = h2f((u16)ld16s(wb + 208));
        // scale of quarter m: scales[8h + 2m + (q >> 1)]
        const u32 sh0 = 8u * (q >> 1), sh1 = sh0 + 16u;
        int sc[4];
        sc[0] = (int)(signed char)(u8)(sw[0] >> sh0);
        sc[1] = (int)(signed char)(u8)(sw[0] >> sh1);
        sc[2] = (int)(signed char)(u8)(sw[1] >> sh0);
        sc[3] = (int)(signed char)(u8)(sw[1] >> sh1);
        u32 v[4][2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            v[0][i] = sub32((qa[i] & 0x0f0f0f0fu) | ((qh[i] & 0x03030303u) << 4));
            v[1][i] = sub32((qb[i] & 0x0f0f0f0fu) | (((qh[i] >> 2) & 0x03030303u) << 4));
            v[2][i] = sub32(((qa[i] >> 4) & 0x0f0f0f0fu) | (((qh[i] >> 4) & 0x03030303u) << 4));
            v[3][i] = sub32(((qb[i] >> 4) & 0x0f0f0f0fu) | (((qh[i] >> 6) & 0x03030303u) << 4));
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const u8* xb = xb0 + tok[t];
            const float xd = __uint_as_float(ld32s(xb));
            const u8* xq = xb + 4u + 128u * h + l0;
            int isum = 0;
#pragma unroll
            for (int m = 0; m < 4; m++) {
                const int dot = dp4(v[m][0], ld32s(xq + 32 * m), dp4(v[m][1], ld32s(xq + 32 * m + 4), 0));
                isum += sc[m] * dot;
            }
            acc[t] = fmaf(xd * dw, (float)isum, acc[t]);
        }
    }
};

// --------------------------------------------------------------- quantized matvec driver
//
// Dynamic shared memory: NT activation slots of `slot` bytes, then two WIN-byte weight
// windows per warp. Tile of `tb` blocks: activation blocks tb0..tb0+tb of every token.
template <class K, int NT>
__device__ __forceinline__ void mvq(const u8* w, unsigned long long w_len, u32 rows, u32 nb,
                                    const u8* xq, unsigned long long x_len,
                                    unsigned long long x_row, float* y, u32 tb, u32 slot) {
    LSQ_SMEM(smem);
    constexpr u32 G = 32 / K::LPB;
    constexpr u32 B = K::B;
    const u32 tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
    u8* act = smem;
    u8* wbuf = smem + NT * slot + warp * 2u * WIN;
    const u32 gw = blockIdx.x * WARPS + warp, nw = gridDim.x * WARPS;
    const u32 nrw = gw < rows ? (rows - 1u - gw) / nw + 1u : 0u;
    const unsigned long long rb = (unsigned long long)nb * K::BS;
    const unsigned long long wbase = (unsigned long long)w, wend = wbase + w_len;
    const unsigned long long xbase = (unsigned long long)xq, xend = xbase + x_len;
    for (u32 tb0 = 0; tb0 < nb; tb0 += tb) {
        const u32 tb1 = umin32(nb, tb0 + tb);
        __syncthreads();  // every warp is done with the previous tile
        u32 tok[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const unsigned long long g0 = xbase + (unsigned long long)t * x_row +
                                          (unsigned long long)tb0 * K::XBS;
            stage(act + t * slot, g0, g0 + (unsigned long long)(tb1 - tb0) * K::XBS, xend, tid,
                  WARPS * 32u);
            tok[t] = (u32)t * slot + (u32)(g0 & 15ull);
        }
        cp_commit();
        const u32 nwin = (tb1 - tb0 + B - 1u) / B;
        const u32 nitems = nrw * nwin;
        // item i: window i % nwin of the warp's row number i / nwin
        auto window = [&](u32 i, u32& r, u32& k0, u32& k1) {
            r = gw + (i / nwin) * nw;
            k0 = tb0 + (i % nwin) * B;
            k1 = umin32(k0 + B, tb1);
        };
        auto issue = [&](u32 i) {
            u32 r, k0, k1;
            window(i, r, k0, k1);
            const unsigned long long g0 = wbase + r * rb + (unsigned long long)k0 * K::BS;
            stage(wbuf + (i & 1u) * WIN, g0, g0 + (unsigned long long)(k1 - k0) * K::BS, wend,
                  lane, 32u);
        };
        if (nitems > 0u) issue(0);
        cp_commit();
        cp_wait<1>();  // the activation group
        __syncthreads();
        float acc[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] = 0.0f;
        for (u32 i = 0; i < nitems; i++) {
            if (i + 1u < nitems) issue(i + 1u);
            cp_commit();
            cp_wait<1>();  // window i
            __syncwarp();
            u32 r, k0, k1;
            window(i, r, k0, k1);
            const u8* wb = wbuf + (i & 1u) * WIN +
                           (u32)((wbase + r * rb + (unsigned long long)k0 * K::BS) & 15ull);
            const u32 nblk = k1 - k0;
            const u8* xb0 = act + (k0 - tb0) * K::XBS;
            for (u32 s = 0; s < nblk; s += G) {
                const u32 b = s + lane / K::LPB;
                if (b < nblk)
                    K::template lane<NT>(wb + b * K::BS, (int)(lane % K::LPB), xb0 + b * K::XBS,
                                         tok, acc);
            }
            if (k1 == tb1) {  // last window of the row in this tile
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    const float v = warp_sum(acc[t]);
                    acc[t] = 0.0f;
                    if (lane == (u32)t) {
                        float* yp = y + (unsigned long long)t * rows + r;
                        *yp = tb0 == 0u ? v : *yp + v;
                    }
                }
            }
            __syncwarp();  // window i is read before window i + 2 overwrites it
        }
    }
}

// ------------------------------------------------------------------ float weight matvec

// T: 0 = f32, 1 = f16, 2 = bf16; V elements per load (16 bytes) or 1.
template <int T>
__device__ __forceinline__ float fval(u32 bits) {
    return T == 1 ? h2f((u16)bits) : __uint_as_float(bits << 16);
}
template <int T, int V>
__device__ __forceinline__ void fload(const u8* p, float (&out)[V]) {
    if (T == 0) {
        if (V == 4) {
            const float4 v = ldv<float4>(p);
            out[0] = v.x;
            out[1 % V] = v.y;
            out[2 % V] = v.z;
            out[3 % V] = v.w;
        } else {
            out[0] = ldv<float>(p);
        }
    } else {
        if (V == 8) {
            const uint4 v = ldv<uint4>(p);
            const u32 wv[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                out[(2 * i) % V] = fval<T>(wv[i] & 0xffffu);
                out[(2 * i + 1) % V] = fval<T>(wv[i] >> 16);
            }
        } else {
            out[0] = fval<T>(ldv<u16>(p));
        }
    }
}
template <int T, int V, int NT>
__device__ __forceinline__ void mvf(const u8* w, u32 rows, u32 cols, const u8* x, float* y) {
    constexpr u32 ES = T == 0 ? 4u : 2u;
    const u32 lane = threadIdx.x & 31u;
    const u32 gw = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const u32 nw = gridDim.x * (blockDim.x >> 5);
    for (u32 r = gw; r < rows; r += nw) {
        const u8* wr = w + (unsigned long long)r * cols * ES;
        float acc[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] = 0.0f;
#pragma unroll 4
        for (u32 e = lane * V; e < cols; e += 32u * V) {
            float wv[V];
            fload<T, V>(wr + (unsigned long long)e * ES, wv);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                float xv[V];
                fload<T, V>(x + ((unsigned long long)t * cols + e) * ES, xv);
#pragma unroll
                for (int i = 0; i < V; i++) acc[t] = fmaf(wv[i], xv[i], acc[t]);
            }
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float v = warp_sum(acc[t]);
            if (lane == (u32)t) y[(unsigned long long)t * rows + r] = v;
        }
    }
}

// ------------------------------------------------------------- activation quantization

// One warp per 32-element block; ggml's AVX quantize_row_q8_0/_q8_1.
// Returns through the out parameters the block's d (f32, unrounded), this lane's quant and
// the wrapping sum of the lanes' unsaturated conversions.
__device__ __forceinline__ void q8_block(float x, u32 lane, float& d, int& q, u32& sum) {
    const float a = __uint_as_float(__float_as_uint(x) & 0x7fffffffu);
    // amax: ggml folds m = (m > a) ? m : a from 0; a NaN resets the fold to what follows it.
    const u32 nans = __ballot_sync(0xffffffffu, is_nan(a));
    float amax;
    if (nans >> 31) {
        amax = __shfl_sync(0xffffffffu, a, 31);
    } else {
        const int last = nans ? 31 - __clz((int)nans) : -1;
        amax = warp_max((int)lane > last ? a : 0.0f);
    }
    d = xdiv(amax, 127.0f);
    const float id = amax != 0.0f ? xdiv(127.0f, amax) : 0.0f;
    const float v = rintf(__fmul_rn(x, id));
    // cvtps2dq: NaN or out of range -> INT_MIN; then saturating packs to i8
    const int wide = (is_nan(v) || !(v >= -2147483648.0f && v < 2147483648.0f)) ? (int)0x80000000u
                                                                                   : (int)v;
    q = wide < -128 ? -128 : (wide > 127 ? 127 : wide);
    u32 s = (u32)wide;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    sum = s;
}

// ---------------------------------------------------------------- element dequantization
//
// deq(b, i): element i of the block at b, bit-identical to infer/src/quant/dequant.rs.
struct DF32 {
    static constexpr int QK = 1, BS = 4;
    __device__ static float deq(const u8* b, u32) { return __uint_as_float(lb32(b)); }
};
struct DF16 {
    static constexpr int QK = 1, BS = 2;
    __device__ static float deq(const u8* b, u32) { return h2f_x86(lb16(b)); }
};
struct DBF16 {
    static constexpr int QK = 1, BS = 2;
    __device__ static float deq(const u8* b, u32) { return bf2f_x86(lb16(b)); }
};
struct DQ4_0 {
    static constexpr int QK = 32, BS = 18;
    __device__ static float deq(const u8* b, u32 i) {
        const u32 q = b[2 + (i & 15u)];
        const int n = (int)(i < 16u ? (q & 15u) : (q >> 4));
        return xmul(h2f_x86(lb16(b)), (float)(n - 8));
    }
};
struct DQ4_1 {
    static constexpr int QK = 32, BS = 20;
    __device__ static float deq(const u8* b, u32 i) {
        const u32 q = b[4 + (i & 15u)];
        const u32 n = i < 16u ? (q & 15u) : (q >> 4);
        return xadd(xmul(h2f_x86(lb16(b)), (float)n), h2f_x86(lb16(b + 2)));
    }
};
__device__ __forceinline__ u32 q5_value(const u8* qh, const u8* qs, u32 i) {
    const u32 q = qs[i & 15u];
    const u32 n = i < 16u ? (q & 15u) : (q >> 4);
    return n | (((u32)(qh[i >> 3] >> (i & 7u)) & 1u) << 4);
}
struct DQ5_0 {
    static constexpr int QK = 32, BS = 22;
    __device__ static float deq(const u8* b, u32 i) {
        return xmul(h2f_x86(lb16(b)), (float)((int)q5_value(b + 2, b + 6, i) - 16));
    }
};
struct DQ5_1 {
    static constexpr int QK = 32, BS = 24;
    __device__ static float deq(const u8* b, u32 i) {
        return xadd(xmul(h2f_x86(lb16(b)), (float)q5_value(b + 4, b + 8, i)),
                    h2f_x86(lb16(b + 2)));
    }
};
struct DQ8_0 {
    static constexpr int QK = 32, BS = 34;
    __device__ static float deq(const u8* b, u32 i) {
        return xmul(h2f_x86(lb16(b)), (float)(signed char)b[2 + i]);
    }
};
struct DQ8_1 {
    static constexpr int QK = 32, BS = 36;
    __device__ static float deq(const u8* b, u32 i) {
        return xmul(h2f_x86(lb16(b)), (float)(signed char)b[4 + i]);
    }
};
// Scale and min of sub-block s of the packed K scales at p (byte loads).
__device__ __forceinline__ void k4_scale_min_b(const u8* p, u32 s, u32& sc, u32& mn) {
    if (s < 4u) {
        sc = p[s] & 63u;
        mn = p[s + 4u] & 63u;
    } else {
        sc = (p[s + 4u] & 0xfu) | ((u32)(p[s - 4u] >> 6) << 4);
        mn = (u32)(p[s + 4u] >> 4) | ((u32)(p[s] >> 6) << 4);
    }
}
template <bool Q5>
struct DQxK {
    static constexpr int QK = 256, BS = Q5 ? 176 : 144;
    __device__ static float deq(const u8* b, u32 e) {
        const u32 j = e >> 6, w = e & 63u, l = w & 31u, s = 2u * j + (w >> 5);
        u32 sc, mn;
        k4_scale_min_b(b + 4, s, sc, mn);
        const u32 q8 = b[(Q5 ? 48u : 16u) + 32u * j + l];
        u32 q = (w >> 5) ? (q8 >> 4) : (q8 & 15u);
        if (Q5) q |= ((u32)(b[16u + l] >> s) & 1u) << 4;
        const float d1 = xmul(h2f_x86(lb16(b)), (float)sc);
        const float m1 = xmul(h2f_x86(lb16(b + 2)), (float)mn);
        return xsub(xmul(d1, (float)q), m1);
    }
};
struct DQ6_K {
    static constexpr int QK = 256, BS = 210;
    __device__ static float deq(const u8* b, u32 e) {
        const u32 h = e >> 7, m = (e & 127u) >> 5, l = e & 31u;
        const u32 ql = b[64u * h + 32u * (m & 1u) + l];
        const u32 lo = m < 2u ? (ql & 15u) : (ql >> 4);
        const u32 hi = ((u32)b[128u + 32u * h + l] >> (2u * m)) & 3u;
        const float d = h2f_x86(lb16(b + 208));
        const float sc = (float)(signed char)b[192u + e / 16u];
        return xmul(xmul(d, sc), (float)((int)(lo | (hi << 4)) - 32));
    }
};
struct DQ8_K {
    static constexpr int QK = 256, BS = 292;
    __device__ static float deq(const u8* b, u32 i) {
        return xmul(__uint_as_float(lb32(b)), (float)(signed char)b[4 + i]);
    }
};

// out[i][c] = row ids[i] of the table dequantized; ids outside 0..rows give a row of zeros.
template <class D>
__device__ __forceinline__ void get_rows(const u8* table, u32 rows, u32 cols, const int* ids,
                                         u32 n, float* out) {
    const unsigned long long total = (unsigned long long)n * cols;
    const unsigned long long rb = (unsigned long long)(cols / D::QK) * D::BS;
    const unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         k < total; k += step) {
        const u32 i = (u32)(k / cols), c = (u32)(k % cols);
        const int id = ids[i];
        float v = 0.0f;
        if (id >= 0 && (u32)id < rows) {
            const u8* b = table + (unsigned long long)(u32)id * rb +
                          (unsigned long long)(c / D::QK) * D::BS;
            v = D::deq(b, c % D::QK);
        }
        out[k] = v;
    }
}

// Elements 0..n of a run of blocks, to f32 (f16 = 0) or f16 (f16 = 1, rounded to nearest even).
template <class D>
__device__ __forceinline__ void dequant(const u8* src, unsigned long long n, u8* out, u32 f16) {
    const unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; k < n;
         k += step) {
        const float v = D::deq(src + (k / D::QK) * D::BS, (u32)(k % D::QK));
        if (f16)
            ((u16*)out)[k] = (u16)f2h_x86(v);
        else
            ((float*)out)[k] = v;
    }
}

}  // namespace lsq

// ------------------------------------------------------------------------------- kernels

// Activations: x is f32 [nblk * block]; out the blocks back to back.
extern "C" __global__ void __launch_bounds__(256)
    quant_act_q8_0(const float* x, u8* out, unsigned long long nblk) {
    const u32 lane = threadIdx.x & 31u;
    for (unsigned long long b = blockIdx.x * 8ull + (threadIdx.x >> 5); b < nblk;
         b += gridDim.x * 8ull) {
        float d;
        int q;
        u32 sum;
        lsq::q8_block(x[b * 32ull + lane], lane, d, q, sum);
        u8* o = out + b * 34ull;
        LSQ_ALIGNED(o, 2);
        o[2 + lane] = (u8)q;
        if (lane == 0u) *(u16*)o = (u16)lsq::f2h_x86(d);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    quant_act_q8_1(const float* x, u8* out, unsigned long long nblk) {
    const u32 lane = threadIdx.x & 31u;
    for (unsigned long long b = blockIdx.x * 8ull + (threadIdx.x >> 5); b < nblk;
         b += gridDim.x * 8ull) {
        float d;
        int q;
        u32 sum;
        lsq::q8_block(x[b * 32ull + lane], lane, d, q, sum);
        u8* o = out + b * 36ull;
        LSQ_ALIGNED(o, 4);
        o[4 + lane] = (u8)q;
        if (lane == 0u) {
            *(u16*)o = (u16)lsq::f2h_x86(d);
            *(u16*)(o + 2) = (u16)lsq::f2h_x86(lsq::xmul(d, __int2float_rn((int)sum)));
        }
    }
}

namespace lsq {
// ggml's quantize_row_q8_K_ref of the 256 floats at xb into the block o, by one warp, lane l
// taking elements 8l .. 8l + 8 (a run: two 16-byte loads where xb is 16-byte aligned, its
// quants 8 adjacent bytes, and the 16-element group of its block sum shared with one other
// lane). Layout: the 292-byte block of the CPU (qo = 4: f32 d, 256 quants, 16 i16 block sums),
// or with qo = 16 the decode kernels' 304-byte block (d, 12 zero bytes, then the same), whose
// quants are 16-byte aligned.
__device__ __forceinline__ void q8k_block(const float* xb, u8* o, u32 lane, u32 qo = 4u) {
    float v[8];
    if (((u64)xb & 15u) == 0u) {
        const float4 a = *(const float4*)(xb + 8u * lane);
        const float4 b = *(const float4*)(xb + 8u * lane + 4u);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z,
        v[7] = b.w;
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = xb[8u * lane + k];
    }
    // first element of largest magnitude (NaNs never win: a > amax is false for them)
    float ba = -1.0f, bv = 0.0f;
    u32 be = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const float a = __uint_as_float(__float_as_uint(v[k]) & 0x7fffffffu);
        if (!lsq::is_nan(a) && a > ba) {
            ba = a;
            bv = v[k];
            be = 8u * lane + k;
        }
    }
#pragma unroll
    for (int sh = 16; sh > 0; sh >>= 1) {
        const float oa = __shfl_xor_sync(0xffffffffu, ba, sh);
        const float ov = __shfl_xor_sync(0xffffffffu, bv, sh);
        const u32 oe = __shfl_xor_sync(0xffffffffu, be, sh);
        if (oa > ba || (oa == ba && oe < be)) {
            ba = oa;
            bv = ov;
            be = oe;
        }
    }
    LSQ_ALIGNED(o, 4);
    if (!(ba > 0.0f)) {
        for (u32 i = lane; i < qo + 288u; i += 32u) o[i] = 0;
        return;
    }
    const float iscale = lsq::xdiv(-127.0f, bv);
    u32 w[2] = {0u, 0u};
    int s = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const float p = lsq::xmul(iscale, v[k]);
        const u32 t = lsq::is_nan(p) ? __float_as_uint(p)
                                     : __float_as_uint(__fadd_rn(p, 12582912.0f));
        int n = (int)(t & 0x007fffffu) - 0x00400000;
        n = n < 127 ? n : 127;
        const u8 byte = (u8)(n & 0xff);
        w[k / 4] |= (u32)byte << (8 * (k % 4));
        s += (int)(signed char)byte;
    }
    // two 4-byte stores (qo + 8 lane is 4-byte aligned in both layouts)
    *(u32*)(o + qo + 8u * lane) = w[0];
    *(u32*)(o + qo + 8u * lane + 4u) = w[1];
    // block sum of group lane / 2: this lane's 8 and its neighbour's
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    if ((lane & 1u) == 0u) *(u16*)(o + qo + 256u + lane) = (u16)(s & 0xffff);
    if (lane == 0u) *(float*)o = lsq::xdiv(1.0f, iscale);
    if (qo == 16u && lane >= 4u && lane < 16u) o[lane] = 0;
}
}  // namespace lsq

// ggml's quantize_row_q8_K_ref: one warp per 256 elements, into blocks of 288 + qo bytes
// (lsq::q8k_block).
__device__ __forceinline__ void quant_act_q8k_rows(const float* x, u8* out,
                                                  unsigned long long nblk, u32 qo) {
    const u32 lane = threadIdx.x & 31u;
    for (unsigned long long b = blockIdx.x * 8ull + (threadIdx.x >> 5); b < nblk;
         b += gridDim.x * 8ull)
        lsq::q8k_block(x + b * 256ull, out + b * (288ull + qo), lane, qo);
}
// The CPU's 292-byte blocks.
extern "C" __global__ void __launch_bounds__(256)
    quant_act_q8_k(const float* x, u8* out, unsigned long long nblk) {
    pdl_wait();  // programmatic dependent launch (common.cuh)
    pdl_launch();
    quant_act_q8k_rows(x, out, nblk, 4u);
}

extern "C" __global__ void __launch_bounds__(256)
    quant_act_f16(const float* x, u16* out, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * 256ull + threadIdx.x; i < n; i += gridDim.x * 256ull)
        out[i] = (u16)lsq::f2h_x86(x[i]);
}

extern "C" __global__ void __launch_bounds__(256)
    quant_act_bf16(const float* x, u16* out, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * 256ull + threadIdx.x; i < n; i += gridDim.x * 256ull)
        out[i] = f2bf(x[i]);
}

extern "C" __global__ void __launch_bounds__(256)
    quant_act_f32(const float* x, float* out, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * 256ull + threadIdx.x; i < n; i += gridDim.x * 256ull)
        out[i] = x[i];
}

// Quantized matvec: y [NT][rows] = W [rows][nb blocks] . xq [NT][x_row bytes]; 128 threads.
#define LSQ_MVQ(T, K, NT)                                                                      \
    extern "C" __global__ void __launch_bounds__(128) quant_mv_##T##_n##NT(                    \
        const u8* w, unsigned long long w_len, u32 rows, u32 nb, const u8* xq,                 \
        unsigned long long x_len, unsigned long long x_row, float* y, u32 tb, u32 slot) {      \
        lsq::mvq<lsq::K, NT>(w, w_len, rows, nb, xq, x_len, x_row, y, tb, slot);               \
    }
#define LSQ_MVQ_ALL(T, K) \
    LSQ_MVQ(T, K, 1)      \
    LSQ_MVQ(T, K, 2)      \
    LSQ_MVQ(T, K, 3)      \
    LSQ_MVQ(T, K, 4)      \
    LSQ_MVQ(T, K, 5)      \
    LSQ_MVQ(T, K, 6)      \
    LSQ_MVQ(T, K, 7)      \
    LSQ_MVQ(T, K, 8)
LSQ_MVQ_ALL(q4_0, KQ4_0)
LSQ_MVQ_ALL(q4_1, KQ4_1)
LSQ_MVQ_ALL(q5_0, KQ5_0)
LSQ_MVQ_ALL(q5_1, KQ5_1)
LSQ_MVQ_ALL(q8_0, KQ8_0)
LSQ_MVQ_ALL(q4_k, KQ4_K)
LSQ_MVQ_ALL(q5_k, KQ5_K)
LSQ_MVQ_ALL(q6_k, KQ6_K)

// Float matvec: y [NT][rows] = W [rows][cols] . x [NT][cols] (x in the weight's type).
#define LSQ_MVF(T, TI, V, NT)                                                                  \
    extern "C" __global__ void __launch_bounds__(128) quant_mvf_##T##_v##V##_n##NT(            \
        const u8* w, u32 rows, u32 cols, const u8* x, float* y) {                              \
        lsq::mvf<TI, V, NT>(w, rows, cols, x, y);                                              \
    }
#define LSQ_MVF_ALL(T, TI, V) \
    LSQ_MVF(T, TI, V, 1)      \
    LSQ_MVF(T, TI, V, 2)      \
    LSQ_MVF(T, TI, V, 3)      \
    LSQ_MVF(T, TI, V, 4)      \
    LSQ_MVF(T, TI, V, 5)      \
    LSQ_MVF(T, TI, V, 6)      \
    LSQ_MVF(T, TI, V, 7)      \
    LSQ_MVF(T, TI, V, 8)
LSQ_MVF_ALL(f32, 0, 4)
LSQ_MVF_ALL(f32, 0, 1)
LSQ_MVF_ALL(f16, 1, 8)
LSQ_MVF_ALL(f16, 1, 1)
LSQ_MVF_ALL(bf16, 2, 8)
LSQ_MVF_ALL(bf16, 2, 1)

// Row lookups and dequantization, one thread per element.
#define LSQ_DEQ(T, D)                                                                          \
    extern "C" __global__ void __launch_bounds__(256) quant_rows_##T(                          \
        const u8* table, u32 rows, u32 cols, const int* ids, u32 n, float* out) {              \
        lsq::get_rows<lsq::D>(table, rows, cols, ids, n, out);                                 \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(256) quant_deq_##T(                           \
        const u8* src, unsigned long long n, u8* out, u32 f16) {                               \
        lsq::dequant<lsq::D>(src, n, out, f16);                                                \
    }
LSQ_DEQ(f32, DF32)
LSQ_DEQ(f16, DF16)
LSQ_DEQ(bf16, DBF16)
LSQ_DEQ(q4_0, DQ4_0)
LSQ_DEQ(q4_1, DQ4_1)
LSQ_DEQ(q5_0, DQ5_0)
LSQ_DEQ(q5_1, DQ5_1)
LSQ_DEQ(q8_0, DQ8_0)
LSQ_DEQ(q8_1, DQ8_1)
LSQ_DEQ(q4_k, DQxK<false>)
LSQ_DEQ(q5_k, DQxK<true>)
LSQ_DEQ(q6_k, DQ6_K)
LSQ_DEQ(q8_k, DQ8_K)

#undef LSQ_MVQ
#undef LSQ_MVQ_ALL
#undef LSQ_MVF
#undef LSQ_MVF_ALL
#undef LSQ_DEQ
#undef LSQ_SMEM
