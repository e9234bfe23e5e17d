// Decode kernels (one token): matrix-vector products for the K-quants that make up a Q4_K_M
// model, and the fused steps around them. One warp per weight row (or half a warp: fast_mv2,
// for launches that then fit one wave of blocks), weights loaded straight
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

// The Q8_K activation blocks the kernels read: the CPU's 292 bytes (quants at 4, 4-byte
// aligned; block sums at 260) or the decode layout's 304 (quants at 16, 16-byte aligned; sums
// at 272), lsq::q8k_block. The arithmetic is the same for both: only the loads differ.
template <bool X16>
struct XL {
    static constexpr unsigned BS = X16 ? 304u : 292u, Q = X16 ? 16u : 4u;
};
// 16 activation quants at p (16-byte aligned with X16, else 4).
template <bool X16>
__device__ __forceinline__ uint4 ld_x16(const u8* p) {
    if (X16) return __ldg((const uint4*)p);
    const u32* w = (const u32*)p;
    uint4 r;
    r.x = __ldg(w);
    r.y = __ldg(w + 1);
    r.z = __ldg(w + 2);
    r.w = __ldg(w + 3);
    return r;
}
// 16 bytes from a 2-byte aligned address: five aligned 4-byte loads and four funnel shifts
// (the 4 bytes after the 16 lie in the same super-block wherever this is called).
__device__ __forceinline__ uint4 ld16_a2(const u8* p) {
    const u64 a = (u64)p;
    const u32* w = (const u32*)(a & ~(u64)3);
    const u32 sh = (u32)(a & 3u) * 8u;
    const u32 w0 = __ldg(w), w1 = __ldg(w + 1), w2 = __ldg(w + 2), w3 = __ldg(w + 3),
              w4 = __ldg(w + 4);
    uint4 r;
    r.x = __funnelshift_r(w0, w1, sh);
    r.y = __funnelshift_r(w1, w2, sh);
    r.z = __funnelshift_r(w2, w3, sh);
    r.w = __funnelshift_r(w3, w4, sh);
    return r;
}
__device__ __forceinline__ int dot4x4(uint4 q, uint4 x, int acc) {
    acc = __dp4a((int)q.x, (int)x.x, acc);
    acc = __dp4a((int)q.y, (int)x.y, acc);
    acc = __dp4a((int)q.z, (int)x.z, acc);
    return __dp4a((int)q.w, (int)x.w, acc);
}
__device__ __forceinline__ uint4 and4(uint4 v, u32 m) {
    v.x &= m, v.y &= m, v.z &= m, v.w &= m;
    return v;
}
__device__ __forceinline__ uint4 shr4(uint4 v, u32 s) {
    v.x >>= s, v.y >>= s, v.z >>= s, v.w >>= s;
    return v;
}

// Q4_K weights (144-byte super-blocks). Four lanes per super-block: lane l takes super-block
// s = 8i + l/4 and in it sub-blocks 2j and 2j+1 (j = l%4): the 32 bytes qs[32j ..] (low
// nibbles: sub-block 2j, high: 2j+1) against activation quants 64j .. 64j + 64. A step is one
// super-block of a lane: its weights (load) and its share of the dot product (dot: the two
// factors a, b the lane's sum takes as fma(a, b, sum), so that every form of the products adds
// a step with the same roundings; written out with the round-to-nearest intrinsics, which the
// compiler does not contract further).
struct StepTerm {
    float a, b;
};
__device__ __forceinline__ float add_step(float acc, StepTerm t) {
    return __fmaf_rn(t.a, t.b, acc);
}
struct Q4Step {
    uint4 H, q0, q1;
    __device__ __forceinline__ void load(const u8* __restrict__ wr, unsigned s, unsigned lane) {
        const unsigned j = lane & 3;
        const u8* b = wr + (size_t)s * 144u;
        H = __ldg((const uint4*)b);
        q0 = __ldg((const uint4*)(b + 16 + 32 * j));
        q1 = __ldg((const uint4*)(b + 32 + 32 * j));
    }
    template <bool X16>
    __device__ __forceinline__ StepTerm dot(const u8* __restrict__ x, unsigned s,
                                            unsigned lane) const {
        const unsigned j = lane & 3;
        const u8* xb = x + (size_t)s * XL<X16>::BS;
        const float xd = __ldg((const float*)xb);
        const u8* xa = xb + XL<X16>::Q + 64 * j;
        const uint4 a0 = ld_x16<X16>(xa), a1 = ld_x16<X16>(xa + 16);
        const uint4 c0 = ld_x16<X16>(xa + 32), c1 = ld_x16<X16>(xa + 48);
        const u32* bsp = (const u32*)(xb + XL<X16>::Q + 256 + 8 * j);  // block sums 4j .. 4j+4
        const u32 b01 = __ldg(bsp), b23 = __ldg(bsp + 1);
        int sc1, m1, sc2, m2;
        scale_min_k4(2 * j, H, sc1, m1);
        scale_min_k4(2 * j + 1, H, sc2, m2);
        const int sa = dot4x4(and4(q1, 0x0F0F0F0Fu), a1, dot4x4(and4(q0, 0x0F0F0F0Fu), a0, 0));
        const int sb = dot4x4(and4(shr4(q1, 4), 0x0F0F0F0Fu), c1,
                              dot4x4(and4(shr4(q0, 4), 0x0F0F0F0Fu), c0, 0));
        const int s01 = (int)(short)(b01 & 0xFFFFu) + (int)(short)(b01 >> 16);
        const int s23 = (int)(short)(b23 & 0xFFFFu) + (int)(short)(b23 >> 16);
        const int mins = m1 * s01 + m2 * s23;
        // xd (d (sc1 sa + sc2 sb) - dmin mins)
        const float dm = __fmul_rn(h2f((u16)(H.x >> 16)), (float)mins);
        return {xd, __fmaf_rn(h2f((u16)(H.x & 0xFFFFu)), (float)(sc1 * sa + sc2 * sb), -dm)};
    }
};

__device__ __forceinline__ int sub32s(u32 v) { return (int)__vsubss4(v, 0x20202020u); }
__device__ __forceinline__ uint4 q6_quarter(uint4 ql, uint4 qh, unsigned lsh, unsigned hsh) {
    uint4 v;
    v.x = ((ql.x >> lsh) & 0x0f0f0f0fu) | (((qh.x >> hsh) & 0x03030303u) << 4);
    v.y = ((ql.y >> lsh) & 0x0f0f0f0fu) | (((qh.y >> hsh) & 0x03030303u) << 4);
    v.z = ((ql.z >> lsh) & 0x0f0f0f0fu) | (((qh.z >> hsh) & 0x03030303u) << 4);
    v.w = ((ql.w >> lsh) & 0x0f0f0f0fu) | (((qh.w >> hsh) & 0x03030303u) << 4);
    v.x = (u32)sub32s(v.x), v.y = (u32)sub32s(v.y), v.z = (u32)sub32s(v.z), v.w = (u32)sub32s(v.w);
    return v;
}

// Q6_K weights (210-byte super-blocks, so 2-byte aligned loads). Four lanes per super-block:
// lane l takes super-block s = 8i + l/4, and in it half n = (l%4)/2 and positions
// l0 = 16(l%2) .. l0+16 of its four quarters: ql bytes 64n + l0 (quarters 0, 2) and
// 64n + 32 + l0 (1, 3), qh bytes 128 + 32n + l0 (two bits per quarter), scales 192 + 8n.
struct Q6Step {
    uint4 qa, qb, qh;
    u32 sw0, sw1;
    float dw;
    __device__ __forceinline__ void load(const u8* __restrict__ wr, unsigned s, unsigned lane) {
        const unsigned t = lane & 3, n = t >> 1, l0 = 16 * (t & 1);
        const u8* P = wr + (size_t)s * 210u;
        qa = ld16_a2(P + 64 * n + l0);
        qb = ld16_a2(P + 64 * n + 32 + l0);
        qh = ld16_a2(P + 128 + 32 * n + l0);
        ld8_a2(P + 192 + 8 * n, sw0, sw1);
        dw = h2f(__ldg((const u16*)(P + 208)));
    }
    template <bool X16>
    __device__ __forceinline__ StepTerm dot(const u8* __restrict__ x, unsigned s,
                                            unsigned lane) const {
        const unsigned t = lane & 3, n = t >> 1, l0 = 16 * (t & 1);
        const u32 sh0 = 8u * (t & 1), sh1 = sh0 + 16u;
        const u8* xb = x + (size_t)s * XL<X16>::BS;
        const float xd = __ldg((const float*)xb);
        const u8* xq = xb + XL<X16>::Q + 128 * n + l0;
        const int d0 = dot4x4(q6_quarter(qa, qh, 0, 0), ld_x16<X16>(xq), 0);
        const int d1 = dot4x4(q6_quarter(qb, qh, 0, 2), ld_x16<X16>(xq + 32), 0);
        const int d2 = dot4x4(q6_quarter(qa, qh, 4, 4), ld_x16<X16>(xq + 64), 0);
        const int d3 = dot4x4(q6_quarter(qb, qh, 4, 6), ld_x16<X16>(xq + 96), 0);
        const int isum = (int)(signed char)(u8)(sw0 >> sh0) * d0 +
                         (int)(signed char)(u8)(sw0 >> sh1) * d1 +
                         (int)(signed char)(u8)(sw1 >> sh0) * d2 +
                         (int)(signed char)(u8)(sw1 >> sh1) * d3;
        return {__fmul_rn(xd, dw), (float)isum};
    }
};

// Weight type codes of the fast kernels, and their super-block bytes.
#define FAST_Q4_K 0u
#define FAST_Q6_K 1u
__device__ __forceinline__ unsigned block_bytes(u32 ty) {
    return ty == FAST_Q6_K ? 210u : 144u;
}

// What a row calls once its first step's weights are asked for: the wait for the earlier
// kernels (common.cuh: the weights are no earlier kernel's output, the activations are).
struct PdlWait {
    __device__ __forceinline__ void operator()() const {
        pdl_wait();
        pdl_launch();
    }
};

// A lane's partial sum of a row of nsb super-blocks (the caller reduces the row's lanes): with
// LPR = 32 lanes a row, its steps s, s + 8, ... (s = lane / 4) added in that order; the first
// step's weights are loaded before `wait`, so that for a kernel's first blocks they arrive while
// the earlier kernel still runs and only the activations' loads follow the wait. With LPR = 16
// (two rows a warp, half a warp each) lane l takes steps s, s + 4, ... (s = (l % 16) / 4): those
// of lanes l and l + 16 of the 32-lane form, added into two sums in their orders (each step by
// add_step's one fma), returned as the first xor-16 step of the 32-lane reduction adds them, so
// a row gets the same bits both ways (infer/tests/gpu_quant/emu/fast.cpp).
template <class St, bool X16, unsigned LPR, class W>
__device__ __forceinline__ float row_steps(const u8* __restrict__ wr, const u8* __restrict__ x,
                                           unsigned nsb, unsigned lane, W wait) {
    const unsigned s0 = (lane % LPR) >> 2, st = LPR / 4;
    St a;
    if (s0 < nsb) a.load(wr, s0, lane);
    wait();
    float acc = 0.f;
    if (s0 < nsb) acc = add_step(acc, a.template dot<X16>(x, s0, lane));
    if (LPR == 32) {
#pragma unroll 2
        for (unsigned s = s0 + 8; s < nsb; s += 8) {
            St b;
            b.load(wr, s, lane);
            acc = add_step(acc, b.template dot<X16>(x, s, lane));
        }
        return acc;
    }
    float acc1 = 0.f;  // the steps of lane l + 16 in the 32-lane form
    for (unsigned s = s0 + st; s < nsb; s += 2 * st) {
        St b;
        b.load(wr, s, lane);
        if (s + st < nsb) {
            St c;
            c.load(wr, s + st, lane);
            acc1 = add_step(acc1, b.template dot<X16>(x, s, lane));
            acc = add_step(acc, c.template dot<X16>(x, s + st, lane));
        } else {
            acc1 = add_step(acc1, b.template dot<X16>(x, s, lane));
        }
    }
    return acc + acc1;
}

template <bool X16, unsigned LPR, class W>
__device__ __forceinline__ float row_any(u32 ty, const u8* wr, const u8* x, unsigned nsb,
                                         unsigned lane, W wait) {
    return ty == FAST_Q6_K ? row_steps<Q6Step, X16, LPR>(wr, x, nsb, lane, wait)
                           : row_steps<Q4Step, X16, LPR>(wr, x, nsb, lane, wait);
}
// A row's partial sum for activation blocks of xbs bytes (304: the decode layout, else 292).
template <unsigned LPR = 32, class W>
__device__ __forceinline__ float row_part(u32 ty, const u8* wr, const u8* x, unsigned nsb,
                                          unsigned lane, u32 xbs, W wait) {
    return xbs == 304u ? row_any<true, LPR>(ty, wr, x, nsb, lane, wait)
                       : row_any<false, LPR>(ty, wr, x, nsb, lane, wait);
}

// The sum of a row's lanes (all 32 lanes call it): warp_sum's order; with 16 lanes a row, its
// xor steps after the first (row_steps' acc + acc1 is the first: lane l plus lane l + 16).
template <unsigned LPR>
__device__ __forceinline__ float row_sum(float v) {
    if (LPR == 32) return warp_sum(v);
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

}  // namespace fastmv

#define FAST_WARPS 8

// Row RPB b + i of the concatenated segments of a product launch (block b of RPB rows, row i
// of the block): its weights, output, type, segment (3: past the end) and row in the segment.
struct FastRow {
    const u8* w;
    float* y;
    u32 seg, row, ty;
};
template <unsigned RPB>
__device__ __forceinline__ FastRow fast_row(unsigned i, u32 nsb, const u8* w0, float* y0,
                                            u32 rows0, const u8* w1, float* y1, u32 rows1,
                                            const u8* w2, float* y2, u32 rows2, u32 flags) {
    unsigned row = blockIdx.x * RPB + i;
    FastRow r{w0, y0, 3u, row, 0u};
    if (row < rows0) {
        r.seg = 0;
    } else if (row < rows0 + rows1) {
        r.row = row - rows0, r.w = w1, r.y = y1, r.seg = 1;
    } else if (row < rows0 + rows1 + rows2) {
        r.row = row - rows0 - rows1, r.w = w2, r.y = y2, r.seg = 2;
    }
    r.ty = (flags >> (2 * (r.seg % 3))) & 3u;
    r.w += (size_t)r.row * nsb * fastmv::block_bytes(r.ty);
    return r;
}

// Rotary embedding and KV-cache store in the epilogue of the Q, K, V products (segments 0, 1,
// 2; kc null: none): ops_rope_kv's arithmetic in normal mode, whose pairs are adjacent rows
// (rows0 and rows1 whole heads of hd, an even number; rope = hd | n_rot << 16). Before the
// wait (pos and the factors are no earlier kernel's output), thread t < RPB / 2 takes the
// angle of the block's pair t.
struct FastRope {
    u16* kc;
    u16* vc;
    u32 pos, rope;
    float theta_scale, freq_scale;
    const float* factors;
};
__device__ __forceinline__ bool fast_rotated(const FastRow& r, const FastRope& rp) {
    const u32 hd = rp.rope & 0xFFFFu, half = rp.rope >> 17;
    return r.seg < 2 && (r.row % hd) / 2 < half;
}
template <unsigned RPB>
__device__ __forceinline__ void fast_rope_angles(const FastRope& rp, const FastRow& r, float* cs,
                                                 float* sn) {
    if (rp.kc == nullptr || threadIdx.x >= RPB / 2 || !fast_rotated(r, rp)) return;
    op_rope_angle(rp.pos, (int)((r.row % (rp.rope & 0xFFFFu)) / 2), rp.theta_scale,
                  rp.freq_scale, rp.factors, cs[threadIdx.x], sn[threadIdx.x]);
}
// The block's results: y[row] (+)= acc (bit 8 + segment of flags: add), or with the epilogue
// above, the rotated values (and the f16 cache rows of K and V at pos, widths rows1, rows2).
// `r` is the row of this thread's lanes (block row i: lanes i % R * LPR ... of warp i / R),
// `own` that of block row t (thread t < RPB).
template <unsigned R>
__device__ __forceinline__ void fast_store(float acc, const FastRow& r, const FastRow& own,
                                           u32 flags, const FastRope& rp, u32 rows1, u32 rows2,
                                           float* part, const float* cs, const float* sn) {
    constexpr unsigned LPR = 32 / R, RPB = FAST_WARPS * R;
    const unsigned lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    if (rp.kc == nullptr) {
        if (r.seg < 3 && lane % LPR == 0)
            r.y[r.row] = (flags >> (8 + r.seg)) & 1u ? __fadd_rn(r.y[r.row], acc) : acc;
        return;
    }
    if (lane % LPR == 0) part[wid * R + lane / LPR] = acc;
    __syncthreads();  // the block's sums (and the angles) are visible to its first warp
    const unsigned t = threadIdx.x;
    if (t >= RPB || own.seg >= 3) return;
    float o = part[t];
    if (fast_rotated(own, rp)) {
        const float a = part[t & ~1u], b = part[t | 1u], c = cs[t / 2], s = sn[t / 2];
        o = (t & 1u) ? __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c))
                     : __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    }
    own.y[own.row] = o;
    if (own.seg == 1) rp.kc[(u64)rp.pos * rows1 + own.row] = f2h(o);
    if (own.seg == 2) rp.vc[(u64)rp.pos * rows2 + own.row] = f2h(o);
}

// Up to three products with the same Q8_K activation row x (nsb blocks of xbs bytes): segment
// i has weights w_i (type (flags >> 2i) & 3), rows_i rows, output y_i; bit 8 + i of flags: add
// the product to y_i instead of storing it (the residual stream). R rows a warp (fast_mv: one,
// 32 lanes a row; fast_mv2: two, 16 lanes each, the same bits: row_steps), FAST_WARPS * R rows a
// block; the epilogue of fast_store.
template <unsigned R>
__device__ __forceinline__ void fast_mv_rows(const u8* __restrict__ x, u32 nsb, const u8* w0,
                                             float* y0, u32 rows0, const u8* w1, float* y1,
                                             u32 rows1, const u8* w2, float* y2, u32 rows2,
                                             u32 flags, u32 xbs, const FastRope& rp) {
    constexpr unsigned LPR = 32 / R, RPB = FAST_WARPS * R;
    __shared__ float part[RPB], cs[RPB / 2], sn[RPB / 2];
    const unsigned lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const FastRow r = fast_row<RPB>(wid * R + lane / LPR, nsb, w0, y0, rows0, w1, y1, rows1, w2,
                                    y2, rows2, flags);
    const FastRow pair = fast_row<RPB>(2 * (threadIdx.x % (RPB / 2)), nsb, w0, y0, rows0, w1,
                                       y1, rows1, w2, y2, rows2, flags);
    fast_rope_angles<RPB>(rp, pair, cs, sn);
    // the weights are no earlier kernel's output: row_part loads the first step's before
    // waiting for x (no L2 prefetch of the rest: docs/gpu-inference.md)
    float acc = 0.f;
    if (R == 1) {
        if (r.seg < 3)
            acc = warp_sum(fastmv::row_part(r.ty, r.w, x, nsb, lane, xbs, fastmv::PdlWait{}));
        else
            fastmv::PdlWait{}();  // pdl_wait(), pdl_launch()
    } else {
        // both halves of the warp reduce (a row past the end has no steps)
        acc = fastmv::row_sum<LPR>(fastmv::row_part<LPR>(r.ty, r.w, x, r.seg < 3 ? nsb : 0u,
                                                         lane, xbs, fastmv::PdlWait{}));
    }
    const FastRow own = fast_row<RPB>(threadIdx.x % RPB, nsb, w0, y0, rows0, w1, y1, rows1, w2,
                                      y2, rows2, flags);
    fast_store<R>(acc, r, own, flags, rp, rows1, rows2, part, cs, sn);
}

extern "C" __global__ void __launch_bounds__(FAST_WARPS * 32)
    fast_mv(const u8* __restrict__ x, u32 nsb, const u8* w0, float* y0, u32 rows0, const u8* w1,
            float* y1, u32 rows1, const u8* w2, float* y2, u32 rows2, u32 flags, u32 xbs,
            u16* kc, u16* vc, u32 pos, u32 rope, float theta_scale, float freq_scale,
            const float* factors) {
    const FastRope rp{kc, vc, pos, rope, theta_scale, freq_scale, factors};
    fast_mv_rows<1>(x, nsb, w0, y0, rows0, w1, y1, rows1, w2, y2, rows2, flags, xbs, rp);
}
// fast_mv with two rows a warp: half the warps for products whose rows outnumber what one wave
// of fast_mv's blocks holds (Q, K and V of the 8B shape: 1.45 waves).
extern "C" __global__ void __launch_bounds__(FAST_WARPS * 32)
    fast_mv2(const u8* __restrict__ x, u32 nsb, const u8* w0, float* y0, u32 rows0, const u8* w1,
             float* y1, u32 rows1, const u8* w2, float* y2, u32 rows2, u32 flags, u32 xbs,
             u16* kc, u16* vc, u32 pos, u32 rope, float theta_scale, float freq_scale,
             const float* factors) {
    const FastRope rp{kc, vc, pos, rope, theta_scale, freq_scale, factors};
    fast_mv_rows<2>(x, nsb, w0, y0, rows0, w1, y1, rows1, w2, y2, rows2, flags, xbs, rp);
}

// SwiGLU of two products with the same Q8_K activation row: out[r] = silu(G x)[r] * (U x)[r]
// (the arithmetic of ops_swiglu). Warps 0..3 of a block take gate rows, 4..7 the same up rows.
extern "C" __global__ void __launch_bounds__(FAST_WARPS * 32)
    fast_gate_up(const u8* __restrict__ x, u32 nsb, const u8* wg, const u8* wu, u32 rows,
                 u32 flags, float* out, u32 xbs) {
    __shared__ float part[FAST_WARPS];
    const unsigned lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const unsigned half = FAST_WARPS / 2;
    const unsigned row = blockIdx.x * half + (wid % half);
    const bool up = wid >= half;
    const u32 ty = (flags >> (up ? 2 : 0)) & 3u;
    const u64 bs = fastmv::block_bytes(ty);
    const u8* wr = (up ? wu : wg) + (u64)row * nsb * bs;
    if (row < rows) {
        const float acc = warp_sum(fastmv::row_part(ty, wr, x, nsb, lane, xbs, fastmv::PdlWait{}));
        if (lane == 0) part[wid] = acc;
    } else {
        fastmv::PdlWait{}();  // pdl_wait(), pdl_launch()
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

// Q8_K quantization of activations into the decode layout's 304-byte blocks (16-byte aligned
// quants; quant_act_q8k_rows in quant.cu, the values of quant_act_q8_k).
extern "C" __global__ void __launch_bounds__(256)
    quant_act_q8_k16(const float* x, u8* out, unsigned long long nblk) {
    pdl_wait();  // programmatic dependent launch (common.cuh)
    pdl_launch();
    quant_act_q8k_rows(x, out, nblk, 16u);
}
