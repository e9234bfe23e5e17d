// Decode matvec variants for Q4_K x Q8_K (one token), timed against a plain read kernel and the
// device-to-device copy: the experiment behind the choice of kernels/fast.cu (docs/gpu-inference.md).
// Build and run on a GPU machine: nvcc -O3 -arch=sm_90 -o /tmp/mv scripts/gpu/matvec_variants.cu && /tmp/mv
#include <cstdio>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1);} } while (0)

__device__ __forceinline__ float h2f(u16 h) { return __half2float(*(const __half*)&h); }
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ void scale_min_k4(int k, const u8* q, int& sc, int& m) {
    if (k < 4) { sc = q[k] & 63; m = q[k + 4] & 63; }
    else { sc = (q[k + 4] & 0xF) | ((q[k - 4] >> 6) << 4); m = (q[k + 4] >> 4) | ((q[k] >> 6) << 4); }
}
__device__ __forceinline__ int ld_i32(const u8* p) { return *(const int*)p; }
union Hdr16 { uint4 v; u8 b[16]; u16 h[8]; };

__global__ void readbw(const uint4* __restrict__ p, size_t n, float* out) {
    u32 acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint4 v = __ldg(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678u) out[0] = 1.f;
}

// one Q4_K super-block for the lane: returns contribution
__device__ __forceinline__ float q4k_sb(const u8* b, const u8* xb, unsigned j, unsigned h) {
    Hdr16 H; H.v = __ldg((const uint4*)b);
    const uint4 q = __ldg((const uint4*)(b + 16 + 32 * j + 16 * h));
    const float xd = __ldg((const float*)xb);
    const u8* xa = xb + 4 + 64 * j + 16 * h;
    const u8* xc = xa + 32;
    const short* bs = (const short*)(xb + 260);
    int sc1, m1, sc2, m2;
    scale_min_k4(2 * j, H.b + 4, sc1, m1);
    scale_min_k4(2 * j + 1, H.b + 4, sc2, m2);
    const unsigned qw[4] = {q.x, q.y, q.z, q.w};
    int sa = 0, sb = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        sa = __dp4a((int)(qw[k] & 0x0F0F0F0Fu), ld_i32(xa + 4 * k), sa);
        sb = __dp4a((int)((qw[k] >> 4) & 0x0F0F0F0Fu), ld_i32(xc + 4 * k), sb);
    }
    const int mins = m1 * (int)bs[4 * j + h] + m2 * (int)bs[4 * j + 2 + h];
    return xd * (h2f(H.h[0]) * (float)(sc1 * sa + sc2 * sb) - h2f(H.h[1]) * (float)mins);
}

template <int WARPS, int UNR>
__global__ void __launch_bounds__(WARPS * 32) q4k_v0(const u8* __restrict__ w, const u8* __restrict__ x, float* __restrict__ y, unsigned rows, unsigned nsb) {
    const unsigned lane = threadIdx.x & 31;
    const unsigned row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) return;
    const unsigned t = lane & 7, j = t >> 1, h = t & 1;
    const u8* wr = w + (size_t)row * nsb * 144u;
    float acc = 0.f;
#pragma unroll UNR
    for (unsigned s = lane >> 3; s < nsb; s += 4) acc += q4k_sb(wr + (size_t)s * 144u, x + (size_t)s * 292u, j, h);
    acc = warp_sum(acc);
    if (lane == 0) y[row] = acc;
}

// two rows per warp, interleaved
template <int WARPS>
__global__ void __launch_bounds__(WARPS * 32) q4k_r2(const u8* __restrict__ w, const u8* __restrict__ x, float* __restrict__ y, unsigned rows, unsigned nsb) {
    const unsigned lane = threadIdx.x & 31;
    const unsigned row = ((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * 2;
    if (row >= rows) return;
    const bool two = row + 1 < rows;
    const unsigned t = lane & 7, j = t >> 1, h = t & 1;
    const u8* wr = w + (size_t)row * nsb * 144u;
    const u8* wr2 = two ? wr + (size_t)nsb * 144u : wr;
    float a0 = 0.f, a1 = 0.f;
#pragma unroll 2
    for (unsigned s = lane >> 3; s < nsb; s += 4) {
        a0 += q4k_sb(wr + (size_t)s * 144u, x + (size_t)s * 292u, j, h);
        a1 += q4k_sb(wr2 + (size_t)s * 144u, x + (size_t)s * 292u, j, h);
    }
    a0 = warp_sum(a0); a1 = warp_sum(a1);
    if (lane == 0) { y[row] = a0; if (two) y[row + 1] = a1; }
}

// x staged in shared memory, persistent grid-stride over rows
template <int WARPS>
__global__ void __launch_bounds__(WARPS * 32) q4k_smem(const u8* __restrict__ w, const u8* __restrict__ x, float* __restrict__ y, unsigned rows, unsigned nsb) {
    extern __shared__ __align__(16) u8 xs[];
    const unsigned n4 = nsb * 292u / 4u;
    for (unsigned i = threadIdx.x; i < n4; i += blockDim.x) ((u32*)xs)[i] = __ldg((const u32*)x + i);
    __syncthreads();
    const unsigned lane = threadIdx.x & 31;
    const unsigned t = lane & 7, j = t >> 1, h = t & 1;
    for (unsigned row = blockIdx.x * WARPS + (threadIdx.x >> 5); row < rows; row += gridDim.x * WARPS) {
        const u8* wr = w + (size_t)row * nsb * 144u;
        float acc = 0.f;
#pragma unroll 4
        for (unsigned s = lane >> 3; s < nsb; s += 4) {
            const u8* b = wr + (size_t)s * 144u;
            Hdr16 H; H.v = __ldg((const uint4*)b);
            const uint4 q = __ldg((const uint4*)(b + 16 + 32 * j + 16 * h));
            const u8* xb = xs + s * 292u;
            const float xd = *(const float*)xb;
            const u8* xa = xb + 4 + 64 * j + 16 * h;
            const u8* xc = xa + 32;
            const short* bs = (const short*)(xb + 260);
            int sc1, m1, sc2, m2;
            scale_min_k4(2 * j, H.b + 4, sc1, m1);
            scale_min_k4(2 * j + 1, H.b + 4, sc2, m2);
            const unsigned qw[4] = {q.x, q.y, q.z, q.w};
            int sa = 0, sb = 0;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                sa = __dp4a((int)(qw[k] & 0x0F0F0F0Fu), ld_i32(xa + 4 * k), sa);
                sb = __dp4a((int)((qw[k] >> 4) & 0x0F0F0F0Fu), ld_i32(xc + 4 * k), sb);
            }
            const int mins = m1 * (int)bs[4 * j + h] + m2 * (int)bs[4 * j + 2 + h];
            acc += xd * (h2f(H.h[0]) * (float)(sc1 * sa + sc2 * sb) - h2f(H.h[1]) * (float)mins);
        }
        acc = warp_sum(acc);
        if (lane == 0) y[row] = acc;
    }
}

// Q6_K, 8 lanes per super-block: lane t -> half n = t>>2, q = t&3, l0 = 8q.
__device__ __forceinline__ int sub32(u32 v) { return (int)__vsubss4(v, 0x20202020u); }
__device__ __forceinline__ float q6k_core(uint2 qa, uint2 qb, uint2 qh, uint2 sw, float dw, const u8* xb, unsigned n, unsigned q) {
    const unsigned l0 = 8 * q;
    const u32 qa_[2] = {qa.x, qa.y}, qb_[2] = {qb.x, qb.y}, qh_[2] = {qh.x, qh.y};
    const u32 sh0 = 8u * (q >> 1), sh1 = sh0 + 16u;
    int sc[4];
    sc[0] = (int)(signed char)(u8)(sw.x >> sh0);
    sc[1] = (int)(signed char)(u8)(sw.x >> sh1);
    sc[2] = (int)(signed char)(u8)(sw.y >> sh0);
    sc[3] = (int)(signed char)(u8)(sw.y >> sh1);
    const float xd = __ldg((const float*)xb);
    const u8* xq = xb + 4 + 128 * n + l0;
    int isum = 0;
#pragma unroll
    for (int m = 0; m < 4; m++) {
        int dot = 0;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            u32 v;
            if (m == 0) v = (qa_[i] & 0x0f0f0f0fu) | ((qh_[i] & 0x03030303u) << 4);
            else if (m == 1) v = (qb_[i] & 0x0f0f0f0fu) | (((qh_[i] >> 2) & 0x03030303u) << 4);
            else if (m == 2) v = ((qa_[i] >> 4) & 0x0f0f0f0fu) | (((qh_[i] >> 4) & 0x03030303u) << 4);
            else v = ((qb_[i] >> 4) & 0x0f0f0f0fu) | (((qh_[i] >> 6) & 0x03030303u) << 4);
            dot = __dp4a(sub32(v), ld_i32(xq + 32 * m + 4 * i), dot);
        }
        isum += sc[m] * dot;
    }
    return xd * dw * (float)isum;
}
// repacked row: nsb payloads of 208 bytes, then nsb f16 d
template <int WARPS>
__global__ void __launch_bounds__(WARPS * 32) q6k_rp(const u8* __restrict__ w, const u8* __restrict__ x, float* __restrict__ y, unsigned rows, unsigned nsb) {
    const unsigned lane = threadIdx.x & 31;
    const unsigned row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) return;
    const unsigned t = lane & 7, n = t >> 2, q = t & 3, l0 = 8 * q;
    const u8* wr = w + (size_t)row * nsb * 210u;
    const u16* dr = (const u16*)(wr + (size_t)nsb * 208u);
    float acc = 0.f;
#pragma unroll 4
    for (unsigned s = lane >> 3; s < nsb; s += 4) {
        const u8* P = wr + (size_t)s * 208u;
        const uint2 qa = __ldg((const uint2*)(P + 64 * n + l0));
        const uint2 qb = __ldg((const uint2*)(P + 64 * n + 32 + l0));
        const uint2 qh = __ldg((const uint2*)(P + 128 + 32 * n + l0));
        const uint2 sw = __ldg((const uint2*)(P + 192 + 8 * n));
        const float dw = h2f(__ldg(dr + s));
        acc += q6k_core(qa, qb, qh, sw, dw, x + (size_t)s * 292u, n, q);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = acc;
}
__device__ __forceinline__ uint2 ld8u(const u8* p) {  // 2-byte aligned 8-byte load
    const u16* h = (const u16*)p;
    uint2 r; r.x = (u32)__ldg(h) | ((u32)__ldg(h + 1) << 16); r.y = (u32)__ldg(h + 2) | ((u32)__ldg(h + 3) << 16);
    return r;
}
template <int WARPS>
__global__ void __launch_bounds__(WARPS * 32) q6k_orig(const u8* __restrict__ w, const u8* __restrict__ x, float* __restrict__ y, unsigned rows, unsigned nsb) {
    const unsigned lane = threadIdx.x & 31;
    const unsigned row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) return;
    const unsigned t = lane & 7, n = t >> 2, q = t & 3, l0 = 8 * q;
    const u8* wr = w + (size_t)row * nsb * 210u;
    float acc = 0.f;
#pragma unroll 4
    for (unsigned s = lane >> 3; s < nsb; s += 4) {
        const u8* P = wr + (size_t)s * 210u;
        const uint2 qa = ld8u(P + 64 * n + l0), qb = ld8u(P + 64 * n + 32 + l0);
        const uint2 qh = ld8u(P + 128 + 32 * n + l0), sw = ld8u(P + 192 + 8 * n);
        const float dw = h2f(__ldg((const u16*)(P + 208)));
        acc += q6k_core(qa, qb, qh, sw, dw, x + (size_t)s * 292u, n, q);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = acc;
}


// x in registers: lane's x data for its (up to 4) super-blocks loaded once, then rows.
// PERSIST: rows strided by all warps of the grid; else R consecutive rows per warp.
template <int R, bool PERSIST, int SPLIT>
__global__ void __launch_bounds__(256) q4k_xr(const u8* __restrict__ w, const u8* __restrict__ x, float* __restrict__ y, unsigned rows, unsigned nsb) {
    __shared__ float part[8];
    const unsigned lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const unsigned t = lane & 7, j = t >> 1, h = t & 1;
    const unsigned piece = wid % SPLIT;
    const unsigned per = nsb / SPLIT;  // assume divisible
    const unsigned s0 = piece * per;
    int xa[4][4], xc[4][4], mb0[4], mb1[4];
    float xd[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const unsigned s = (lane >> 3) + 4 * i;
        if (s < per) {
            const u8* xb = x + (size_t)(s0 + s) * 292u;
            xd[i] = __ldg((const float*)xb);
            const u8* pa = xb + 4 + 64 * j + 16 * h;
#pragma unroll
            for (int k = 0; k < 4; k++) { xa[i][k] = ld_i32(pa + 4 * k); xc[i][k] = ld_i32(pa + 32 + 4 * k); }
            const short* bs = (const short*)(xb + 260);
            mb0[i] = bs[4 * j + h]; mb1[i] = bs[4 * j + 2 + h];
        } else { xd[i] = 0.f; mb0[i] = mb1[i] = 0;
#pragma unroll
            for (int k = 0; k < 4; k++) { xa[i][k] = 0; xc[i][k] = 0; } }
    }
    const unsigned rpb = 8 / SPLIT;  // rows per block-step
    unsigned r0, rstep, rend;
    if (PERSIST) { r0 = blockIdx.x * rpb + wid / SPLIT; rstep = gridDim.x * rpb; rend = rows; }
    else { r0 = (blockIdx.x * rpb + wid / SPLIT) * R; rstep = 1; rend = min(rows, r0 + R); }
    const unsigned iters = PERSIST ? (rows + rstep - 1 - (blockIdx.x * rpb)) / rstep : R;  // uniform per block for sync
    unsigned row = r0;
    for (unsigned it = 0; it < (PERSIST ? (rows + gridDim.x * rpb - 1) / (gridDim.x * rpb) : R); it++, row += rstep) {
        const bool ok = row < rend;
        float acc = 0.f;
        if (ok) {
            const u8* wr = w + ((size_t)row * nsb + s0) * 144u;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const unsigned s = (lane >> 3) + 4 * i;
                if (s < per) {
                    const u8* b = wr + (size_t)s * 144u;
                    Hdr16 H; H.v = __ldg((const uint4*)b);
                    const uint4 q = __ldg((const uint4*)(b + 16 + 32 * j + 16 * h));
                    int sc1, m1, sc2, m2;
                    scale_min_k4(2 * j, H.b + 4, sc1, m1);
                    scale_min_k4(2 * j + 1, H.b + 4, sc2, m2);
                    const unsigned qw[4] = {q.x, q.y, q.z, q.w};
                    int sa = 0, sb = 0;
#pragma unroll
                    for (int k = 0; k < 4; ++k) {
                        sa = __dp4a((int)(qw[k] & 0x0F0F0F0Fu), xa[i][k], sa);
                        sb = __dp4a((int)((qw[k] >> 4) & 0x0F0F0F0Fu), xc[i][k], sb);
                    }
                    acc += xd[i] * (h2f(H.h[0]) * (float)(sc1 * sa + sc2 * sb) - h2f(H.h[1]) * (float)(m1 * mb0[i] + m2 * mb1[i]));
                }
            }
        }
        acc = warp_sum(acc);
        if (SPLIT > 1) {
            if (lane == 0) part[wid] = acc;
            __syncthreads();
            if (piece == 0 && lane == 0 && ok) { for (int p = 1; p < SPLIT; p++) acc += part[wid + p]; y[row] = acc; }
            __syncthreads();
        } else if (lane == 0 && ok) y[row] = acc;
    }
    (void)iters;
}

// batch of IT super-blocks per lane with all loads issued first (addresses clamped in bounds,
// contributions masked), SPLIT warps per row.
template <int IT, int SPLIT>
__global__ void __launch_bounds__(256) q4k_b(const u8* __restrict__ w, const u8* __restrict__ x, float* __restrict__ y, unsigned rows, unsigned nsb) {
    __shared__ float part[8];
    const unsigned lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const unsigned t = lane & 7, j = t >> 1, h = t & 1;
    const unsigned piece = wid % SPLIT;
    const unsigned row = blockIdx.x * (8 / SPLIT) + wid / SPLIT;
    const bool ok = row < rows;
    const unsigned per = (nsb + SPLIT - 1) / SPLIT;
    const unsigned s0 = min(nsb, piece * per), s1 = min(nsb, s0 + per);
    const u8* wr = w + (size_t)(ok ? row : 0) * nsb * 144u;
    float acc = 0.f;
    for (unsigned base = s0; base < s1; base += 4 * IT) {
        uint4 H[IT], Q[IT];
#pragma unroll
        for (int i = 0; i < IT; i++) {
            const unsigned s = min(base + (lane >> 3) + 4 * i, s1 - 1);
            const u8* b = wr + (size_t)s * 144u;
            H[i] = __ldg((const uint4*)b);
            Q[i] = __ldg((const uint4*)(b + 16 + 32 * j + 16 * h));
        }
#pragma unroll
        for (int i = 0; i < IT; i++) {
            const unsigned sr = base + (lane >> 3) + 4 * i;
            const unsigned s = min(sr, s1 - 1);
            Hdr16 HH; HH.v = H[i];
            const u8* xb = x + (size_t)s * 292u;
            const float xd = __ldg((const float*)xb);
            const u8* xa = xb + 4 + 64 * j + 16 * h;
            const u8* xc = xa + 32;
            const short* bs = (const short*)(xb + 260);
            int sc1, m1, sc2, m2;
            scale_min_k4(2 * j, HH.b + 4, sc1, m1);
            scale_min_k4(2 * j + 1, HH.b + 4, sc2, m2);
            const unsigned qw[4] = {Q[i].x, Q[i].y, Q[i].z, Q[i].w};
            int sa = 0, sb = 0;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                sa = __dp4a((int)(qw[k] & 0x0F0F0F0Fu), ld_i32(xa + 4 * k), sa);
                sb = __dp4a((int)((qw[k] >> 4) & 0x0F0F0F0Fu), ld_i32(xc + 4 * k), sb);
            }
            const int mins = m1 * (int)bs[4 * j + h] + m2 * (int)bs[4 * j + 2 + h];
            const float v = xd * (h2f(HH.h[0]) * (float)(sc1 * sa + sc2 * sb) - h2f(HH.h[1]) * (float)mins);
            acc += sr < s1 ? v : 0.f;
        }
    }
    acc = warp_sum(acc);
    if (SPLIT > 1) {
        if (lane == 0) part[wid] = acc;
        __syncthreads();
        if (piece != 0) return;
        for (int p = 1; p < SPLIT; p++) acc += part[wid + p];
    }
    if (lane == 0 && ok) y[row] = acc;
}

__global__ void empty_k(float* p) { if (threadIdx.x == 1000) p[0] = 1; }

// ---------------------------------------------------------------- host
static float hf(u16 h) { __half x; memcpy(&x, &h, 2); return __half2float(x); }
static void hscale_min(int j, const u8* q, int& d, int& m) {
    if (j < 4) { d = q[j] & 63; m = q[j + 4] & 63; }
    else { d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4); m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4); }
}
static double ref_q4k(const u8* row, const u8* x, int nsb, double* mag) {
    double s = 0; *mag = 0;
    for (int b = 0; b < nsb; b++) {
        const u8* B = row + b * 144; const u8* X = x + b * 292;
        float d = hf(*(u16*)B), dm = hf(*(u16*)(B + 2)); float xd; memcpy(&xd, X, 4);
        const u8* qs = B + 16;
        for (int e = 0; e < 256; e++) {
            int j = e / 32; int p = j / 2; int l = e % 32;
            int nib = (j & 1) ? (qs[32 * p + l] >> 4) : (qs[32 * p + l] & 15);
            int sc, m; hscale_min(j, B + 4, sc, m);
            double wv = (double)d * sc * nib - (double)dm * m;
            double xv = (double)xd * (signed char)X[4 + e];
            s += wv * xv; *mag += fabs(wv * xv);
        }
    }
    return s;
}
static double ref_q6k(const u8* B0, const u8* x, int nsb, double* mag) {
    double s = 0; *mag = 0;
    for (int b = 0; b < nsb; b++) {
        const u8* B = B0 + b * 210; const u8* X = x + b * 292; float xd; memcpy(&xd, X, 4);
        float d = hf(*(u16*)(B + 208));
        for (int n = 0; n < 2; n++) {
            const u8* ql = B + 64 * n; const u8* qh = B + 128 + 32 * n; const signed char* sc = (const signed char*)(B + 192 + 8 * n);
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                int qq[4] = {q1, q2, q3, q4};
                for (int k = 0; k < 4; k++) {
                    double wv = (double)d * sc[is + 2 * k] * qq[k];
                    double xv = (double)xd * (signed char)X[4 + 128 * n + l + 32 * k];
                    s += wv * xv; *mag += fabs(wv * xv);
                }
            }
        }
    }
    return s;
}
static u32 rng = 12345;
static u32 rnd() { rng = rng * 1664525u + 1013904223u; return rng >> 8; }
static u16 f2h_host(float f) { __half h = __float2half(f); u16 r; memcpy(&r, &h, 2); return r; }

typedef void (*KFn)(const u8*, const u8*, float*, unsigned, unsigned);

struct Ctx { std::vector<u8*> mats; size_t bytes; u8* x; float* y; int rows, nsb; };

static double bench(const char* name, Ctx& c, dim3 grid, dim3 block, size_t smem, KFn f, int iters, double copybw) {
    cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
    for (int i = 0; i < 10; i++) f<<<grid, block, smem>>>(c.mats[i % c.mats.size()], c.x, c.y, c.rows, c.nsb);
    cudaEventRecord(a);
    for (int i = 0; i < iters; i++) f<<<grid, block, smem>>>(c.mats[i % c.mats.size()], c.x, c.y, c.rows, c.nsb);
    cudaEventRecord(b); CK(cudaEventSynchronize(b));
    float ms; cudaEventElapsedTime(&ms, a, b);
    double us = ms * 1e3 / iters, gbs = c.bytes / (us * 1e-6) / 1e9;
    printf("  %-22s %8.2f us  %7.0f GB/s  %5.1f%% of copy\n", name, us, gbs, 100 * gbs / copybw);
    return us;
}

int main() {
    cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
    int sms = prop.multiProcessorCount;
    printf("%s, %d SMs, L2 %d MB\n", prop.name, sms, prop.l2CacheSize >> 20);
    // copy bandwidth
    size_t GB = 1ull << 30; u8 *s, *d; CK(cudaMalloc(&s, GB)); CK(cudaMalloc(&d, GB));
    cudaMemset(s, 1, GB);
    cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
    cudaMemcpy(d, s, GB, cudaMemcpyDeviceToDevice);
    cudaEventRecord(a); for (int i = 0; i < 10; i++) cudaMemcpy(d, s, GB, cudaMemcpyDeviceToDevice); cudaEventRecord(b); cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b); double copybw = 2.0 * 10 * GB / (ms * 1e-3) / 1e9;
    printf("D2D copy %.0f GB/s (read+write)\n", copybw);
    float* o; CK(cudaMalloc(&o, 64));
    for (int bpsm : {4, 8, 16}) {
        readbw<<<sms * bpsm, 256>>>((const uint4*)s, GB / 16, o);
        cudaEventRecord(a); for (int i = 0; i < 10; i++) readbw<<<sms * bpsm, 256>>>((const uint4*)s, GB / 16, o); cudaEventRecord(b); cudaEventSynchronize(b);
        cudaEventElapsedTime(&ms, a, b); printf("read-only kernel (%d CTAs/SM) %.0f GB/s\n", bpsm, 10.0 * GB / (ms * 1e-3) / 1e9);
    }
    // small sizes read
    for (size_t mb : {2, 10, 14, 33, 46, 63}) {
        size_t n = mb << 20; int iters = 200;
        cudaEventRecord(a); for (int i = 0; i < iters; i++) readbw<<<sms * 8, 256>>>((const uint4*)(s + (i % 16) * (48ull << 20)), n / 16, o); cudaEventRecord(b); cudaEventSynchronize(b);
        cudaEventElapsedTime(&ms, a, b); printf("read-only %zu MiB: %.2f us, %.0f GB/s\n", mb, ms * 1e3 / iters, (double)n * iters / (ms * 1e-3) / 1e9);
    }
    cudaEventRecord(a); for (int i = 0; i < 2000; i++) empty_k<<<1, 32>>>(o); cudaEventRecord(b); cudaEventSynchronize(b);
    cudaEventElapsedTime(&ms, a, b); printf("empty kernel back-to-back: %.2f us/launch\n", ms * 1e3 / 2000);
    {
        cudaStream_t st; cudaStreamCreate(&st); cudaGraph_t g; cudaGraphExec_t ge;
        cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal);
        for (int i = 0; i < 200; i++) empty_k<<<1, 32, 0, st>>>(o);
        cudaStreamEndCapture(st, &g); CK(cudaGraphInstantiate(&ge, g, 0));
        cudaGraphLaunch(ge, st); cudaStreamSynchronize(st);
        cudaEventRecord(a, st); for (int i = 0; i < 10; i++) cudaGraphLaunch(ge, st); cudaEventRecord(b, st); cudaEventSynchronize(b);
        cudaEventElapsedTime(&ms, a, b); printf("empty kernel in a graph: %.2f us/node\n", ms * 1e3 / 2000);
    }
    cudaFree(d);
    struct Shape { int rows, cols; };
    for (int ty = 0; ty < 2; ty++) {
        for (Shape sh : {Shape{4096, 4096}, Shape{1024, 4096}, Shape{14336, 4096}, Shape{4096, 14336}}) {
            int nsb = sh.cols / 256; int bsz = ty == 0 ? 144 : 210;
            size_t bytes = (size_t)sh.rows * nsb * bsz;
            std::vector<u8> hw(bytes), hx(nsb * 292);
            for (size_t i = 0; i < bytes; i++) hw[i] = rnd() & 255;
            for (int r = 0; r < sh.rows; r++) for (int bb = 0; bb < nsb; bb++) {
                u8* B = &hw[((size_t)r * nsb + bb) * bsz];
                if (ty == 0) { u16 dd = f2h_host(0.001f + (rnd() % 1000) * 1e-5f), dm = f2h_host((rnd() % 1000) * 1e-5f); memcpy(B, &dd, 2); memcpy(B + 2, &dm, 2); }
                else { u16 dd = f2h_host(0.001f + (rnd() % 1000) * 1e-5f); memcpy(B + 208, &dd, 2); }
            }
            for (int bb = 0; bb < nsb; bb++) { float xd = 0.01f; memcpy(&hx[bb * 292], &xd, 4); short bsum[16] = {0};
                for (int e = 0; e < 256; e++) { signed char v = (signed char)((int)(rnd() % 255) - 127); hx[bb * 292 + 4 + e] = (u8)v; bsum[e / 16] += v; }
                memcpy(&hx[bb * 292 + 260], bsum, 32); }
            // repacked copy (Q6_K)
            std::vector<u8> hr(bytes);
            if (ty == 1) for (int r = 0; r < sh.rows; r++) for (int bb = 0; bb < nsb; bb++) {
                const u8* B = &hw[((size_t)r * nsb + bb) * 210]; u8* R = &hr[(size_t)r * nsb * 210];
                memcpy(R + bb * 208, B, 208); memcpy(R + nsb * 208 + 2 * bb, B + 208, 2); }
            Ctx c; c.bytes = bytes; c.rows = sh.rows; c.nsb = nsb;
            int copies = (int)std::max<size_t>(1, std::min<size_t>(16, (300ull << 20) / bytes + 1));
            for (int i = 0; i < copies; i++) { u8* m; CK(cudaMalloc(&m, bytes)); CK(cudaMemcpy(m, ty == 1 && false ? hr.data() : hw.data(), bytes, cudaMemcpyHostToDevice)); c.mats.push_back(m); }
            std::vector<u8*> rmats;
            if (ty == 1) for (int i = 0; i < copies; i++) { u8* m; CK(cudaMalloc(&m, bytes)); CK(cudaMemcpy(m, hr.data(), bytes, cudaMemcpyHostToDevice)); rmats.push_back(m); }
            CK(cudaMalloc(&c.x, hx.size())); CK(cudaMemcpy(c.x, hx.data(), hx.size(), cudaMemcpyHostToDevice));
            CK(cudaMalloc(&c.y, sh.rows * 4));
            printf("%s %d x %d (%.1f MiB, %d copies)\n", ty == 0 ? "Q4_K" : "Q6_K", sh.rows, sh.cols, bytes / 1048576.0, copies);
            auto check = [&](const char* nm) {
                std::vector<float> hy(sh.rows); CK(cudaMemcpy(hy.data(), c.y, sh.rows * 4, cudaMemcpyDeviceToHost));
                double worst = 0;
                for (int r = 0; r < sh.rows; r += 97) { double mag; double ref = ty == 0 ? ref_q4k(&hw[(size_t)r * nsb * 144], hx.data(), nsb, &mag) : ref_q6k(&hw[(size_t)r * nsb * 210], hx.data(), nsb, &mag);
                    worst = std::max(worst, fabs(hy[r] - ref) / mag); }
                printf("    check %s: max rel err %.2e %s\n", nm, worst, worst < 1e-5 ? "ok" : "BAD");
            };
            int it = 300;
            if (ty == 0) {
                unsigned r = sh.rows;
                cudaMemset(c.y, 0, r * 4);
                bench("v0 w8 u4 (current)", c, dim3((r + 7) / 8), dim3(256), 0, q4k_v0<8, 4>, it, copybw); check("v0");
                bench("v0 w4 u4", c, dim3((r + 3) / 4), dim3(128), 0, q4k_v0<4, 4>, it, copybw);
                bench("v0 w16 u4", c, dim3((r + 15) / 16), dim3(512), 0, q4k_v0<16, 4>, it, copybw);
                bench("v0 w8 u8", c, dim3((r + 7) / 8), dim3(256), 0, q4k_v0<8, 8>, it, copybw);
                cudaMemset(c.y, 0, r * 4);
                bench("two rows per warp", c, dim3((r / 2 + 7) / 8), dim3(256), 0, q4k_r2<8>, it, copybw); check("r2");
                cudaFuncSetAttribute(q4k_smem<8>, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10);
                cudaMemset(c.y, 0, r * 4);
                bench("x in shared memory", c, dim3((r + 7) / 8), dim3(256), nsb * 292, q4k_smem<8>, it, copybw); check("smem");
                if (nsb <= 16) {
                    cudaMemset(c.y, 0, r * 4);
                    bench("x in registers R=2", c, dim3((r + 15) / 16), dim3(256), 0, q4k_xr<2, false, 1>, it, copybw); check("xr");
                    cudaMemset(c.y, 0, r * 4);
                    bench("x in registers, persistent", c, dim3(std::min<unsigned>(sms * 8, (r + 7) / 8)), dim3(256), 0, q4k_xr<1, true, 1>, it, copybw); check("xrp");
                }
                struct V { const char* n; KFn f; int split; };
                V vs[] = {{"b IT2 s1", q4k_b<2, 1>, 1}, {"b IT4 s1", q4k_b<4, 1>, 1}, {"b IT8 s1", q4k_b<8, 1>, 1},
                          {"b IT2 s2", q4k_b<2, 2>, 2}, {"b IT4 s2", q4k_b<4, 2>, 2}, {"b IT2 s4", q4k_b<2, 4>, 4}, {"b IT4 s4", q4k_b<4, 4>, 4}};
                for (auto& v : vs) {
                    cudaMemset(c.y, 0, r * 4);
                    unsigned rpb = 8 / v.split;
                    bench(v.n, c, dim3((r + rpb - 1) / rpb), dim3(256), 0, v.f, it, copybw); check(v.n);
                }
            } else {
                unsigned r = sh.rows;
                cudaMemset(c.y, 0, r * 4);
                bench("orig w8", c, dim3((r + 7) / 8), dim3(256), 0, q6k_orig<8>, it, copybw); check("orig");
                bench("orig w4", c, dim3((r + 3) / 4), dim3(128), 0, q6k_orig<4>, it, copybw);
                std::swap(c.mats, rmats);
                cudaMemset(c.y, 0, r * 4);
                bench("repacked w8", c, dim3((r + 7) / 8), dim3(256), 0, q6k_rp<8>, it, copybw); check("repacked");
                bench("repacked w4", c, dim3((r + 3) / 4), dim3(128), 0, q6k_rp<4>, it, copybw);
                std::swap(c.mats, rmats);
                for (auto m : rmats) cudaFree(m);
            }
            for (auto m : c.mats) cudaFree(m);
            cudaFree(c.x); cudaFree(c.y);
        }
    }
    return 0;
}
