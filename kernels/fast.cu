// Decode kernels (one token): matrix-vector products for the K-quants that make up a Q4_K_M
// model, and the fused steps around them. One warp per weight row, weights loaded straight
// from global memory (no shared-memory staging), the Q8_K activations read through L1 (every
// row uses the same few KiB), dp4a on the same integers as the CPU kernels.

namespace fastmv {

__device__ __forceinline__ int ld_i32(const u8* p) { return *(const int*)p; }

// 8 bytes from a 2-byte aligned address (Q6_K super-blocks are 210 bytes): three aligned
// 4-byte loads and two funnel shifts (the 4 bytes after the 8 lie in the same super-block
// wherever this is called), not four 2-byte loads.
__device__ __forceinline__ void ld8_a2(const u8* p, u32& lo, u32& hi) {
    const u64 a = (u64)p;
    const u32* w = (const u32*)(a & ~(u64)3);
    const u32 sh = (u32)(a & 3u) * 8u;
    const u32 w0 = __ldg(w), w1 = __ldg(w + 1), w2 = __ldg(w + 2);
    lo = __funnelshift_r(w0, w1, sh);
    hi = __funnelshift_r(w1, w2, sh);
}

// Scale and min of sub-block k of a Q4_K super-block whose first 16 bytes are H (its 12 scale
// bytes are H.y, H.z, H.w), from registers: a byte array indexed by the lane's sub-block
// would live in local memory (a stack frame, a store and loads per super-block).
__device__ __forceinline__ void scale_min_k4(unsigned k, const uint4& H, int& sc, int& m) {
    const unsigned sh = 8u * (k & 3u);
    const unsigned a = (H.y >> sh) & 0xFFu, b = (H.z >> sh) & 0xFFu;  // bytes k & 3, 4 + (k & 3)
    if (k < 4) {
        sc = (int)(a & 63u);
        m = (int)(b & 63u);
    } else {
        const unsigned c = (H.w >> sh) & 0xFFu;  // byte 8 + (k & 3)
        sc = (int)((c & 0xFu) | ((a >> 6) << 4));
        m = (int)((c >> 4) | ((b >> 6) << 4));
    }
}

// Q4_K weights (144-byte super-blocks), Q8_K activations (292-byte blocks). Lane l takes
// super-block s = 4i + l/8, and in it the 16 bytes qs[32j + 16h ..] (j = (l%8)/2, h = l%2):
// 16 weights of sub-block 2j (low nibbles) and 16 of sub-block 2j+1 (high nibbles). Returns
// the lane's partial sum (the caller reduces the warp).
__device__ __forceinline__ float row_q4_k(const u8* __restrict__ wr, const u8* __restrict__ x,
                                          unsigned nsb, unsigned lane) {
    const unsigned t = lane & 7, j = t >> 1, h = t & 1;
    float acc = 0.f;
#pragma unroll 4
    for (unsigned s = lane >> 3; s < nsb; s += 4) {
        const u8* b = wr + (size_t)s * 144u;
        const uint4 H = __ldg((const uint4*)b);
        const uint4 q = __ldg((const uint4*)(b + 16 + 32 * j + 16 * h));
        const u8* xb = x + (size_t)s * 292u;
        const float xd = __ldg((const float*)xb);
        const u8* xa = xb + 4 + 64 * j + 16 * h;
        const u8* xc = xa + 32;
        const short* bs = (const short*)(xb + 260);
        int sc1, m1, sc2, m2;
        scale_min_k4(2 * j, H, sc1, m1);
        scale_min_k4(2 * j + 1, H, sc2, m2);
        const unsigned qw[4] = {q.x, q.y, q.z, q.w};
        int sa = 0, sb = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            sa = __dp4a((int)(qw[k] & 0x0F0F0F0Fu), ld_i32(xa + 4 * k), sa);
            sb = __dp4a((int)((qw[k] >> 4) & 0x0F0F0F0Fu), ld_i32(xc + 4 * k), sb);
        }
        const int mins = m1 * (int)bs[4 * j + h] + m2 * (int)bs[4 * j + 2 + h];
        acc += xd * (h2f((u16)(H.x & 0xFFFFu)) * (float)(sc1 * sa + sc2 * sb) -
                     h2f((u16)(H.x >> 16)) * (float)mins);
    }
    return acc;
}

__device__ __forceinline__ int sub32s(u32 v) { return (int)__vsubss4(v, 0x20202020u); }

// Q6_K weights (210-byte super-blocks, so 2-byte aligned loads), Q8_K activations. Lane l
// takes super-block s = 4i + l/8, and in it half n = (l%8)/4 and positions l0 = 8((l%8)%4)
// .. l0+8 of the four quarters: ql bytes 64n + l0 (quarters 0, 2) and 64n + 32 + l0 (1, 3),
// qh bytes 128 + 32n + l0 (two bits per quarter), scales 192 + 8n.
__device__ __forceinline__ float row_q6_k(const u8* __restrict__ wr, const u8* __restrict__ x,
                                          unsigned nsb, unsigned lane) {
    const unsigned t = lane & 7, n = t >> 2, q = t & 3, l0 = 8 * q;
    const u32 sh0 = 8u * (q >> 1), sh1 = sh0 + 16u;
    float acc = 0.f;
#pragma unroll 4
    for (unsigned s = lane >> 3; s < nsb; s += 4) {
        const u8* P = wr + (size_t)s * 210u;
        u32 qa[2], qb[2], qh[2], sw[2];
        ld8_a2(P + 64 * n + l0, qa[0], qa[1]);
        ld8_a2(P + 64 * n + 32 + l0, qb[0], qb[1]);
        ld8_a2(P + 128 + 32 * n + l0, qh[0], qh[1]);
        ld8_a2(P + 192 + 8 * n, sw[0], sw[1]);
        const float dw = h2f(__ldg((const u16*)(P + 208)));
        int sc[4];
        sc[0] = (int)(signed char)(u8)(sw[0] >> sh0);
        sc[1] = (int)(signed char)(u8)(sw[0] >> sh1);
        sc[2] = (int)(signed char)(u8)(sw[1] >> sh0);
        sc[3] = (int)(signed char)(u8)(sw[1] >> sh1);
        const u8* xb = x + (size_t)s * 292u;
        const float xd = __ldg((const float*)xb);
        const u8* xq = xb + 4 + 128 * n + l0;
        int isum = 0;
#pragma unroll
        for (int m = 0; m < 4; m++) {
            int dot = 0;
#pragma unroll
            for (int i = 0; i < 2; i++) {
                u32 v;
                if (m == 0) v = (qa[i] & 0x0f0f0f0fu) | ((qh[i] & 0x03030303u) << 4);
                else if (m == 1) v = (qb[i] & 0x0f0f0f0fu) | (((qh[i] >> 2) & 0x03030303u) << 4);
                else if (m == 2) v = ((qa[i] >> 4) & 0x0f0f0f0fu) | (((qh[i] >> 4) & 0x03030303u) << 4);
                else v = ((qb[i] >> 4) & 0x0f0f0f0fu) | (((qh[i] >> 6) & 0x03030303u) << 4);
                dot = __dp4a(sub32s(v), ld_i32(xq + 32 * m + 4 * i), dot);
            }
            isum += sc[m] * dot;
        }
        acc += xd * dw * (float)isum;
    }
    return acc;
}

// Weight type codes of the fast kernels.
#define FAST_Q4_K 0u
#define FAST_Q6_K 1u

__device__ __forceinline__ float row_dot(u32 ty, const u8* w, unsigned row, const u8* x,
                                         unsigned nsb, unsigned lane) {
    if (ty == FAST_Q6_K) return row_q6_k(w + (size_t)row * nsb * 210u, x, nsb, lane);
    return row_q4_k(w + (size_t)row * nsb * 144u, x, nsb, lane);
}

}  // namespace fastmv

#define FAST_WARPS 8

// Up to three products with the same Q8_K activation row x (nsb blocks): segment i has
// weights w_i (type (flags >> 2i) & 3), rows_i rows, output y_i; bit 8 + i of flags: add the
// product to y_i instead of storing it (the residual stream). `split` (1, 2 or 4) warps share
// a row of the concatenated segments, each taking a contiguous run of its super-blocks; their
// sums are added in warp order.
extern "C" __global__ void __launch_bounds__(FAST_WARPS * 32)
    fast_mv(const u8* __restrict__ x, u32 nsb, const u8* w0, float* y0, u32 rows0, const u8* w1,
            float* y1, u32 rows1, const u8* w2, float* y2, u32 rows2, u32 flags, u32 split) {
    __shared__ float part[FAST_WARPS];
    const unsigned lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    unsigned row = blockIdx.x * (FAST_WARPS / split) + wid / split;
    const unsigned piece = wid % split;
    const u8* w = w0;
    float* y = y0;
    u32 seg = 3;
    if (row < rows0) {
        seg = 0;
    } else if (row < rows0 + rows1) {
        row -= rows0, w = w1, y = y1, seg = 1;
    } else if (row < rows0 + rows1 + rows2) {
        row -= rows0 + rows1, w = w2, y = y2, seg = 2;
    }
    float acc = 0.f;
    const u32 ty = (flags >> (2 * (seg % 3))) & 3u;
    const unsigned per = (nsb + split - 1) / split;
    const unsigned s0 = min(nsb, piece * per), s1 = min(nsb, s0 + per);
    const unsigned bs = ty == FAST_Q6_K ? 210u : 144u;
    const u8* wr = w + ((size_t)row * nsb + s0) * bs;
    // the weights are no earlier kernel's output: ask for them before waiting for x
    if (seg < 3) prefetch_l2(wr, (u64)(s1 - s0) * bs, lane);
    pdl_wait();
    pdl_launch();
    if (seg < 3) {
        const u8* xr = x + (size_t)s0 * 292u;
        acc = warp_sum(ty == FAST_Q6_K ? fastmv::row_q6_k(wr, xr, s1 - s0, lane)
                                       : fastmv::row_q4_k(wr, xr, s1 - s0, lane));
    }
    if (split > 1) {
        if (lane == 0) part[wid] = acc;
        __syncthreads();
        if (piece != 0) return;
        for (unsigned p = 1; p < split; ++p) acc += part[wid + p];
    }
    if (seg < 3 && lane == 0) y[row] = (flags >> (8 + seg)) & 1u ? __fadd_rn(y[row], acc) : acc;
}

// SwiGLU of two products with the same Q8_K activation row: out[r] = silu(G x)[r] * (U x)[r]
// (the arithmetic of ops_swiglu). Warps 0..3 of a block take gate rows, 4..7 the same up rows.
extern "C" __global__ void __launch_bounds__(FAST_WARPS * 32)
    fast_gate_up(const u8* __restrict__ x, u32 nsb, const u8* wg, const u8* wu, u32 rows,
                 u32 flags, float* out) {
    __shared__ float part[FAST_WARPS];
    const unsigned lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const unsigned half = FAST_WARPS / 2;
    const unsigned row = blockIdx.x * half + (wid % half);
    const bool up = wid >= half;
    const u32 ty = (flags >> (up ? 2 : 0)) & 3u;
    if (row < rows) {  // the weights are no earlier kernel's output: ask for them first
        const u64 bs = ty == FAST_Q6_K ? 210u : 144u;
        prefetch_l2((up ? wu : wg) + (u64)row * nsb * bs, (u64)nsb * bs, lane);
    }
    pdl_wait();
    pdl_launch();
    if (row < rows) {
        const float acc = warp_sum(fastmv::row_dot(ty, up ? wu : wg, row, x, nsb, lane));
        if (lane == 0) part[wid] = acc;
    }
    __syncthreads();
    if (threadIdx.x < half) {
        const unsigned r = blockIdx.x * half + threadIdx.x;
        if (r < rows) {
            const float g = part[threadIdx.x], u = part[threadIdx.x + half];
            out[r] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
        }
    }
}
