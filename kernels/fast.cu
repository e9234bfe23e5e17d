// Single-token matrix-vector product for Q4_K weights, tuned for decode: one warp per
// weight row, 16-byte weight loads straight from global memory (no shared-memory staging), the
// Q8_K activations read through L1 (every row uses the same few KiB), dp4a on the same integers
// as the CPU kernels. One launch computes y = W x for one activation row.

namespace fastmv {

union Hdr16 {
    uint4 v;
    u8 b[16];
    u16 h[8];
};

__device__ __forceinline__ void scale_min_k4(int k, const u8* q, int& sc, int& m) {
    if (k < 4) {
        sc = q[k] & 63;
        m = q[k + 4] & 63;
    } else {
        sc = (q[k + 4] & 0xF) | ((q[k - 4] >> 6) << 4);
        m = (q[k + 4] >> 4) | ((q[k] >> 6) << 4);
    }
}

__device__ __forceinline__ int ld_i32(const u8* p) { return *(const int*)p; }

}  // namespace fastmv

// Q4_K weights (144-byte super-blocks), Q8_K activations (292-byte blocks). Lane l of a warp
// takes super-block s = 4i + l/8, and in it the 16 bytes qs[32j + 16h ..] (j = (l%8)/2,
// h = l%2): 16 weights of sub-block 2j (low nibbles) and 16 of sub-block 2j+1 (high nibbles).
extern "C" __global__ void fast_mv_q4_k_n1(const u8* __restrict__ w, const u8* __restrict__ x,
                                           float* __restrict__ y, unsigned rows, unsigned nsb) {
    const unsigned lane = threadIdx.x & 31;
    const unsigned row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) return;
    const unsigned t = lane & 7, j = t >> 1, h = t & 1;
    const u8* wr = w + (size_t)row * nsb * 144u;
    float acc = 0.f;
#pragma unroll 4
    for (unsigned s = lane >> 3; s < nsb; s += 4) {
        const u8* b = wr + (size_t)s * 144u;
        fastmv::Hdr16 H;
        H.v = __ldg((const uint4*)b);
        const uint4 q = __ldg((const uint4*)(b + 16 + 32 * j + 16 * h));
        const u8* xb = x + (size_t)s * 292u;
        const float xd = __ldg((const float*)xb);
        const u8* xa = xb + 4 + 64 * j + 16 * h;
        const u8* xc = xa + 32;
        const short* bs = (const short*)(xb + 260);
        int sc1, m1, sc2, m2;
        fastmv::scale_min_k4(2 * j, H.b + 4, sc1, m1);
        fastmv::scale_min_k4(2 * j + 1, H.b + 4, sc2, m2);
        const unsigned qw[4] = {q.x, q.y, q.z, q.w};
        int sa = 0, sb = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            sa = __dp4a((int)(qw[k] & 0x0F0F0F0Fu), fastmv::ld_i32(xa + 4 * k), sa);
            sb = __dp4a((int)((qw[k] >> 4) & 0x0F0F0F0Fu), fastmv::ld_i32(xc + 4 * k), sb);
        }
        const int mins = m1 * (int)bs[4 * j + h] + m2 * (int)bs[4 * j + 2 + h];
        acc += xd * (h2f(H.h[0]) * (float)(sc1 * sa + sc2 * sb) - h2f(H.h[1]) * (float)mins);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = acc;
}
