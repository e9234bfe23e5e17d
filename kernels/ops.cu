// Element-wise ops, normalisation, RoPE, KV cache, attention, sampling.
//
// One translation unit with common.cuh and quant.cu: every helper here is prefixed op_ / Op and
// every kernel ops_. Launch wrappers: infer/src/gpu/ops/*.rs (they check every size first).
// Numerics follow the CPU engine (infer/src/ops.rs, forward.rs, sampler.rs); where a result
// must be bit-identical to the CPU, the operations are spelled with __f*_rn intrinsics so that
// the compiler cannot fuse a multiply and an add.

#define OP_FULL 0xffffffffu

// ------------------------------------------------------------------------------ reductions
// Block-wide helpers: every thread of the block must call them (blockDim.x a multiple of 32).

struct OpAdd {
    template <typename T> __device__ static T f(T a, T b) { return a + b; }
};
struct OpMax {
    template <typename T> __device__ static T f(T a, T b) { return a > b ? a : b; }
};
struct OpMin {
    template <typename T> __device__ static T f(T a, T b) { return a < b ? a : b; }
};
struct OpMaxF {
    __device__ static float f(float a, float b) { return fmaxf(a, b); }
};

template <typename R, typename T> __device__ __forceinline__ T op_warp_reduce(T v) {
    for (int o = 16; o > 0; o >>= 1) v = R::f(v, __shfl_xor_sync(OP_FULL, v, o));
    return v;
}

// The reduction of v over the block; `ident` is the operation's identity.
template <typename R, typename T> __device__ T op_block_reduce(T v, T ident) {
    __shared__ T sh[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = op_warp_reduce<R>(v);
    __syncthreads();  // sh may still be read from a previous call
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        T t = lane < nw ? sh[lane] : ident;
        t = op_warp_reduce<R>(t);
        if (lane == 0) sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}

template <typename T> __device__ __forceinline__ T op_warp_incl_scan(T v) {
    const int lane = threadIdx.x & 31;
    for (int o = 1; o < 32; o <<= 1) {
        const T t = __shfl_up_sync(OP_FULL, v, o);
        if (lane >= o) v += t;
    }
    return v;
}

// Exclusive prefix sum of v over the block in thread order; *total gets the whole sum.
template <typename T> __device__ T op_block_excl_scan(T v, T* total) {
    __shared__ T sh[32];
    __shared__ T tot;
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const T incl = op_warp_incl_scan(v);
    __syncthreads();
    if (lane == 31) sh[wid] = incl;
    __syncthreads();
    if (wid == 0) {
        const T w = lane < nw ? sh[lane] : T(0);
        const T wi = op_warp_incl_scan(w);
        if (lane < nw) sh[lane] = wi - w;
        if (lane == nw - 1) tot = wi;
    }
    __syncthreads();
    *total = tot;
    return sh[wid] + incl - v;
}

// ------------------------------------------------------------------------------ rms_norm
// Blocks of OP_RMS_THREADS threads. Sum of squares in double (as ggml): thread t adds the
// squares (rounded to float, as the CPU) of elements t, t + 256, ... in order, 16 loads in
// flight, then the block reduces; mean narrowed to float, 1 / sqrt(mean + eps).
#define OP_RMS_THREADS 256

// This thread's sum of squares (before the block's reduction).
__device__ __forceinline__ double op_rms_sum(const float* xr, int n) {
    double s = 0.0;
    for (int base = 0; base < n; base += 16 * OP_RMS_THREADS) {
        float v[16];
#pragma unroll
        for (int k = 0; k < 16; k++) {
            const int i = base + k * OP_RMS_THREADS + (int)threadIdx.x;
            v[k] = i < n ? xr[i] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < 16; k++)
            if (base + k * OP_RMS_THREADS + (int)threadIdx.x < n) s += (double)__fmul_rn(v[k], v[k]);
    }
    return s;
}
// The scale from the block's sum of squares.
__device__ __forceinline__ float op_rms_finish(double s, int n, float eps) {
    const float mean = (float)(s / (double)n);
    return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
}
__device__ __forceinline__ float op_rms_scale(const float* xr, int n, float eps) {
    return op_rms_finish(op_block_reduce<OpAdd>(op_rms_sum(xr, n), 0.0), n, eps);
}

// One block per row: out = (x * scale) * w.
extern "C" __global__ void __launch_bounds__(OP_RMS_THREADS)
    ops_rms_norm(const float* x, const float* w, float* out, int n, float eps) {
    const float* xr = x + (u64)blockIdx.x * n;
    float* orow = out + (u64)blockIdx.x * n;
    const float scale = op_rms_scale(xr, n, eps);
#pragma unroll 4
    for (int i = threadIdx.x; i < n; i += OP_RMS_THREADS)
        orow[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
}

// RMSNorm (the same bits as ops_rms_norm) fused with the Q8_K quantization of the result (as
// quant_act_q8_k): block (b, r) computes the scale of row r, normalises elements
// 256b .. 256b + 256 and quantizes them into block b of row r of xq (n / 256 blocks of xbs
// bytes per row: 292, the CPU's layout, or 304, the decode kernels' (lsq::q8k_block)); n a
// multiple of 256.
extern "C" __global__ void __launch_bounds__(OP_RMS_THREADS)
    ops_rms_norm_q8k(const float* x, const float* w, float* out, u8* xq, int n, float eps,
                     u32 xbs) {
    __shared__ __align__(16) float nv[256];
    __shared__ double ws[OP_RMS_THREADS / 32];
    const int i = (int)blockIdx.x * 256 + (int)threadIdx.x;
    const float wi = w[i];  // the norm's weights are no earlier kernel's output
    pdl_wait();             // programmatic dependent launch (common.cuh)
    pdl_launch();
    const float* xr = x + (u64)blockIdx.y * n;
    float* orow = out + (u64)blockIdx.y * n;
    // op_rms_scale's bits with one barrier: every thread adds the eight warps' sums in the
    // order of op_block_reduce's second step (its lanes 8 and up hold zeros)
    static_assert(OP_RMS_THREADS == 256, "the sum below adds eight warps");
    const double s = op_warp_reduce<OpAdd>(op_rms_sum(xr, n));
    if ((threadIdx.x & 31) == 0) ws[threadIdx.x >> 5] = s;
    __syncthreads();  // the warps' sums are in shared memory
    const double tot = ((ws[0] + ws[4]) + (ws[2] + ws[6])) + ((ws[1] + ws[5]) + (ws[3] + ws[7]));
    const float scale = op_rms_finish(tot, n, eps);
    const float o = __fmul_rn(__fmul_rn(xr[i], scale), wi);
    orow[i] = o;
    nv[threadIdx.x] = o;
    __syncthreads();  // the block's normalised values are visible to its first warp
    if (threadIdx.x < 32) {
        u8* qrow = xq + (u64)blockIdx.y * (u64)(n / 256) * xbs;
        lsq::q8k_block(nv, qrow + xbs * blockIdx.x, threadIdx.x, xbs - 288u);
    }
}

// ------------------------------------------------------------------------------ rope
// cos and sin of rotation pair i at `pos`: theta as ggml's rope cache (position, times
// theta_scale once per pair, in float), divided by the llama3 factor, times freq_scale; cos/sin
// in double, rounded to float. op_rope_cache: those of the `half` pairs, shared by the block.
__device__ __forceinline__ void op_rope_angle(u32 pos, int i, float theta_scale, float freq_scale,
                                              const float* factors, float& c, float& s) {
    float theta = (float)pos;
    for (int j = 0; j < i; ++j) theta = __fmul_rn(theta, theta_scale);
    const float ff = factors ? factors[i] : 1.0f;
    const float t = __fmul_rn(freq_scale, __fdiv_rn(theta, ff));
    double sd, cd;
    sincos((double)t, &sd, &cd);
    c = (float)cd;
    s = (float)sd;
}
__device__ __forceinline__ void op_rope_cache(u32 pos, int half, float theta_scale,
                                              float freq_scale, const float* factors, float* cs,
                                              float* sn) {
    for (int i = threadIdx.x; i < half; i += blockDim.x)
        op_rope_angle(pos, i, theta_scale, freq_scale, factors, cs[i], sn[i]);
}

// One block per token, in place on x[n_tok][n_heads * head_dim]. theta as ggml's rope cache:
// position, times theta_scale once per pair, in float (theta_scale computed on the host exactly
// as the CPU computes it). cos/sin in double, rounded to float.
extern "C" __global__ void ops_rope(float* x, int n_heads, int head_dim, int n_rot, u32 pos0,
                                    float theta_scale, float freq_scale, const float* factors,
                                    int neox) {
    __shared__ float cs[128], sn[128];
    const int half = n_rot / 2;
    const u32 pos = pos0 + blockIdx.x;
    op_rope_cache(pos, half, theta_scale, freq_scale, factors, cs, sn);
    __syncthreads();
    float* row = x + (u64)blockIdx.x * (u64)n_heads * (u64)head_dim;
#pragma unroll 2
    for (int e = threadIdx.x; e < n_heads * half; e += blockDim.x) {
        const int h = e / half, i = e % half;
        float* hx = row + (u64)h * head_dim;
        const int i0 = neox ? i : 2 * i;
        const int i1 = neox ? i + half : 2 * i + 1;
        const float a = hx[i0], b = hx[i1], c = cs[i], s = sn[i];
        hx[i0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        hx[i1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    }
}

// RoPE of the query and key heads (as ops_rope) fused with the f16 KV-cache store (as
// ops_kv_store): block (h, t) takes query head h (h < n_head) or key head h - n_head of token
// t, rotates it in place and, for a key head, stores it and the same head of v in cache row
// pos0 + t ([n_ctx][n_head_kv * head_dim] halves).
extern "C" __global__ void ops_rope_kv(float* q, float* k, const float* v, u16* kc, u16* vc,
                                       int n_head, int n_head_kv, int head_dim, int n_rot,
                                       u32 pos0, float theta_scale, float freq_scale,
                                       const float* factors, int neox) {
    pdl_wait();  // programmatic dependent launch (common.cuh)
    pdl_launch();
    __shared__ float cs[128], sn[128];
    const int half = n_rot / 2;
    const u32 pos = pos0 + blockIdx.y;
    op_rope_cache(pos, half, theta_scale, freq_scale, factors, cs, sn);
    __syncthreads();
    const bool is_k = (int)blockIdx.x >= n_head;
    const int h = is_k ? (int)blockIdx.x - n_head : (int)blockIdx.x;
    const u64 width = (u64)(is_k ? n_head_kv : n_head) * (u64)head_dim;
    float* hx = (is_k ? k : q) + (u64)blockIdx.y * width + (u64)h * head_dim;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const int i0 = neox ? i : 2 * i;
        const int i1 = neox ? i + half : 2 * i + 1;
        const float a = hx[i0], b = hx[i1], c = cs[i], s = sn[i];
        hx[i0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        hx[i1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    }
    if (!is_k) return;
    __syncthreads();  // the rotated key is visible to the whole block
    const float* hv = v + (u64)blockIdx.y * width + (u64)h * head_dim;
    const u64 dst = (u64)pos * width + (u64)h * head_dim;
    for (int e = threadIdx.x; e < head_dim; e += blockDim.x) {
        kc[dst + e] = f2h(hx[e]);
        vc[dst + e] = f2h(hv[e]);
    }
}

// ------------------------------------------------------------------------------ kv_store
// Rows pos0.. of the f16 caches [n_ctx][width] from f32 k, v [n_tok][width] (total elements),
// rounded to nearest even.
extern "C" __global__ void ops_kv_store(const float* k, const float* v, u16* kc, u16* vc,
                                        u64 dst0, u64 total) {
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (u64)gridDim.x * blockDim.x) {
        kc[dst0 + e] = f2h(k[e]);
        vc[dst0 + e] = f2h(v[e]);
    }
}

// ------------------------------------------------------------------------------ element-wise
extern "C" __global__ void ops_swiglu(float* g, const float* u, u64 n) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        const float x = g[i];
        g[i] = __fmul_rn(__fdiv_rn(x, __fadd_rn(1.0f, expf(-x))), u[i]);
    }
}

// Word copy by the SMs. The hidden state's hop to and from CPU layers uses it with one side in
// page-locked host memory mapped into the device's address space: the GPU reads or writes it
// over PCIe directly, so the hop never queues behind a layer copy on the copy engines.
extern "C" __global__ void ops_copy(u32* dst, const u32* src, u64 n) {
    pdl_wait();  // programmatic dependent launch (common.cuh)
    pdl_launch();
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

extern "C" __global__ void ops_add(float* x, const float* y, u64 n) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x)
        x[i] = __fadd_rn(x[i], y[i]);
}

extern "C" __global__ void ops_add_bias(float* x, const float* b, u64 n, u64 total) {
    pdl_wait();  // programmatic dependent launch (common.cuh)
    pdl_launch();
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x)
        x[i] = __fadd_rn(x[i], b[i % n]);
}

// ------------------------------------------------------------------------------ attention
// Flash-decoding in two kernels. ops_attn_partial: one block per (chunk of OP_ATT_CHUNK
// positions, kv head and batch of up to OP_ATT_GMAX of its query heads, token) computes for each
// head the max m of its scaled scores, l = sum exp(s - m) and acc = sum f16(exp(s - m)) * v.
// ops_attn_combine: one block per (head, token) merges the chunks.
// Q is rounded to f16 before the dot with the f16 K (as llama.cpp), the dot accumulates in
// float (exact products, 8-term partial sums), weights are rounded to f16 before multiplying V.

#define OP_ATT_CHUNK 256
#define OP_ATT_THREADS 128
#define OP_ATT_GMAX 8
#define OP_ATT_HDMAX 256

__device__ __forceinline__ void op_unpack8(const uint4 r, float* f) {
    f[0] = h2f((u16)(r.x & 0xffffu));
    f[1] = h2f((u16)(r.x >> 16));
    f[2] = h2f((u16)(r.y & 0xffffu));
    f[3] = h2f((u16)(r.y >> 16));
    f[4] = h2f((u16)(r.z & 0xffffu));
    f[5] = h2f((u16)(r.z >> 16));
    f[6] = h2f((u16)(r.w & 0xffffu));
    f[7] = h2f((u16)(r.w >> 16));
}

// The dot of 8 query values (f16-rounded floats in shared memory, 16-byte aligned) with 8 keys,
// left to right in float.
__device__ __forceinline__ float op_dot8(const float* qp, const float (&kf)[8]) {
    const float4 qa = *(const float4*)qp;
    const float4 qb = *(const float4*)(qp + 4);
    float p = qa.x * kf[0];
    p = fmaf(qa.y, kf[1], p);
    p = fmaf(qa.z, kf[2], p);
    p = fmaf(qa.w, kf[3], p);
    p = fmaf(qb.x, kf[4], p);
    p = fmaf(qb.y, kf[5], p);
    p = fmaf(qb.z, kf[6], p);
    return fmaf(qb.w, kf[7], p);
}

// One warp's softmax weights over the n scores at s, in place: m = their max, the weights
// exp(s - m) rounded to f16, l = the sum of the unrounded weights (lane order, then the warp).
__device__ __forceinline__ void op_warp_weights(float* s, int n, float& m, float& l) {
    const int lane = threadIdx.x & 31;
    m = __int_as_float(0xff800000u);
    for (int t = lane; t < n; t += 32) m = fmaxf(m, s[t]);
    m = warp_max(m);
    l = 0.0f;
    for (int t = lane; t < n; t += 32) {
        const float w = expf(s[t] - m);
        l += w;
        s[t] = h2f(f2h(w));
    }
    l = warp_sum(l);
}

// part_acc: [n_tok][n_head][n_chunks][hd]; part_ml: [n_tok][n_head][n_chunks][2] (m, l).
// head_blocks: blocks per kv head along y (ceil(group / OP_ATT_GMAX)).
extern "C" __global__ void __launch_bounds__(OP_ATT_THREADS)
    ops_attn_partial(const float* q, const u16* kc, const u16* vc, float* part_acc,
                     float* part_ml, u32 pos0, int n_head, int n_head_kv, int hd, float scale,
                     int n_chunks, int head_blocks, int chunk) {
    pdl_wait();  // programmatic dependent launch (common.cuh)
    pdl_launch();
    __shared__ __align__(16) float qs[OP_ATT_GMAX][OP_ATT_HDMAX];
    __shared__ float sc[OP_ATT_GMAX][OP_ATT_CHUNK];
    __shared__ float red[OP_ATT_GMAX * OP_ATT_THREADS];
    __shared__ float sm[OP_ATT_GMAX], sl[OP_ATT_GMAX];

    const int c = blockIdx.x, tok = blockIdx.z;
    const int kh = blockIdx.y / head_blocks, hb = blockIdx.y % head_blocks;
    const int group = n_head / n_head_kv;
    const int h0 = kh * group + hb * OP_ATT_GMAX;
    const int ng = min(OP_ATT_GMAX, group - hb * OP_ATT_GMAX);
    const u32 visible = pos0 + (u32)tok + 1;
    const u32 t0 = (u32)c * (u32)chunk;
    if (t0 >= visible) return;  // the whole block: nothing of this chunk is visible
    const int nt = (int)min((u32)chunk, visible - t0);
    const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
    const u64 kvw = (u64)n_head_kv * hd;
    const u16* kbase = kc + (u64)t0 * kvw + (u64)kh * hd;
    const u16* vbase = vc + (u64)t0 * kvw + (u64)kh * hd;

    const float* qrow = q + ((u64)tok * n_head + h0) * hd;
    for (int e = tid; e < ng * hd; e += OP_ATT_THREADS)
        qs[e / hd][e % hd] = h2f(f2h(qrow[e]));
    __syncthreads();

    // Scores: 8 lanes per position (each a run of 8-wide slices of the head), all heads of
    // the batch, partial dots added across the 8 lanes; 16 positions per pass.
    const int l8 = tid & 7, slot = tid >> 3;
    for (int base = 0; base < nt; base += OP_ATT_THREADS / 8) {
        const int tt = base + slot;
        const bool live = tt < nt;
        const uint4* kr = (const uint4*)(kbase + (u64)(live ? tt : 0) * kvw);
        float acc[OP_ATT_GMAX];
#pragma unroll
        for (int j = 0; j < OP_ATT_GMAX; ++j) acc[j] = 0.0f;
        // the lane's (at most OP_ATT_HDMAX / 64) slices are all asked for before any is used
        uint4 kw[OP_ATT_HDMAX / 64];
#pragma unroll
        for (int u = 0; u < OP_ATT_HDMAX / 64; ++u) {
            const int d8 = l8 + 8 * u;
            if (live && d8 < hd / 8) kw[u] = __ldg(kr + d8);
        }
#pragma unroll
        for (int u = 0; u < OP_ATT_HDMAX / 64; ++u) {
            const int d8 = l8 + 8 * u;
            if (!live || d8 >= hd / 8) break;
            float kf[8];
            op_unpack8(kw[u], kf);
#pragma unroll
            for (int j = 0; j < OP_ATT_GMAX; ++j) {
                if (j < ng) acc[j] += op_dot8(&qs[j][d8 * 8], kf);
            }
        }
#pragma unroll
        for (int j = 0; j < OP_ATT_GMAX; ++j) {
            float v = acc[j];
            v += __shfl_xor_sync(0xffffffffu, v, 4);
            v += __shfl_xor_sync(0xffffffffu, v, 2);
            v += __shfl_xor_sync(0xffffffffu, v, 1);
            if (live && l8 == 0 && j < ng) sc[j][tt] = v * scale;
        }
    }
    __syncthreads();

    // Per head: max, sum of exp, weights rounded to f16 (a warp per head).
    for (int j = wid; j < ng; j += OP_ATT_THREADS / 32) {
        float m, l;
        op_warp_weights(sc[j], nt, m, l);
        if (lane == 0) {
            sm[j] = m;
            sl[j] = l;
        }
    }
    __syncthreads();

    // Weighted V: item (d, position group); position groups split the chunk when hd < threads.
    const int pgs = hd >= OP_ATT_THREADS ? 1 : OP_ATT_THREADS / hd;
    const u64 row0 = ((u64)tok * n_head + h0) * n_chunks + c;  // (token, head h0, chunk c)
    for (int e = tid; e < hd * pgs; e += OP_ATT_THREADS) {
        const int d = e % hd, pg = e / hd;
        float acc[OP_ATT_GMAX];
#pragma unroll
        for (int j = 0; j < OP_ATT_GMAX; ++j) acc[j] = 0.0f;
        // positions in groups of 8: the group's V loads are all in flight before its products
        // (which still go in position order)
        for (int t0 = pg; t0 < nt; t0 += 8 * pgs) {
            float vv[8];
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const int tt = t0 + u * pgs;
                vv[u] = tt < nt ? h2f(__ldg(vbase + (u64)tt * kvw + d)) : 0.0f;
            }
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const int tt = t0 + u * pgs;
                if (tt >= nt) break;
#pragma unroll
                for (int j = 0; j < OP_ATT_GMAX; ++j)
                    if (j < ng) acc[j] = fmaf(sc[j][tt], vv[u], acc[j]);
            }
        }
        if (pgs == 1) {
#pragma unroll
            for (int j = 0; j < OP_ATT_GMAX; ++j)
                if (j < ng) part_acc[(row0 + (u64)j * n_chunks) * hd + d] = acc[j];
        } else {
#pragma unroll
            for (int j = 0; j < OP_ATT_GMAX; ++j)
                if (j < ng) red[(pg * OP_ATT_GMAX + j) * hd + d] = acc[j];
        }
    }
    if (pgs > 1) {
        __syncthreads();
        for (int e = tid; e < ng * hd; e += OP_ATT_THREADS) {
            const int j = e / hd, d = e % hd;
            float s = 0.0f;
            for (int pg = 0; pg < pgs; ++pg) s += red[(pg * OP_ATT_GMAX + j) * hd + d];
            part_acc[(row0 + (u64)j * n_chunks) * hd + d] = s;
        }
    }
    if (tid < ng) {
        part_ml[(row0 + (u64)tid * n_chunks) * 2] = sm[tid];
        part_ml[(row0 + (u64)tid * n_chunks) * 2 + 1] = sl[tid];
    }
}

// Output d of head h, token tok: the chunks' partial sums merged. Every thread of a head
// computes the head's max and sum of exponentials itself, in chunk order (the same bits in
// ops_attn_combine and ops_attn_combine_q8k).
__device__ __forceinline__ float op_attn_merge(const float* part_acc, const float* part_ml,
                                               u32 pos0, int tok, int h, int d, int n_head,
                                               int hd, int n_chunks, int chunk) {
    const u32 visible = pos0 + (u32)tok + 1;
    const int nc = (int)((visible + (u32)chunk - 1) / (u32)chunk);
    const u64 row0 = ((u64)tok * n_head + h) * n_chunks;
    const float* ml = part_ml + row0 * 2;
    float m = __int_as_float(0xff800000u);
    for (int c = 0; c < nc; ++c) m = fmaxf(m, ml[2 * c]);
    float l = 0.0f;
    for (int c = 0; c < nc; ++c) l += ml[2 * c + 1] * expf(ml[2 * c] - m);
    const float inv = 1.0f / l;
    const float* acc = part_acc + row0 * hd;
    float s = 0.0f;
#pragma unroll 4
    for (int c = 0; c < nc; ++c) s += acc[(u64)c * hd + d] * expf(ml[2 * c] - m);
    return s * inv;
}

extern "C" __global__ void __launch_bounds__(OP_ATT_THREADS)
    ops_attn_combine(const float* part_acc, const float* part_ml, float* out, u32 pos0,
                     int n_head, int hd, int n_chunks, int chunk) {
    pdl_wait();  // programmatic dependent launch (common.cuh)
    pdl_launch();
    const int h = blockIdx.x, tok = blockIdx.y;
    float* orow = out + ((u64)tok * n_head + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        orow[d] = op_attn_merge(part_acc, part_ml, pos0, tok, h, d, n_head, hd, n_chunks, chunk);
}

// One token's merge (as ops_attn_combine) fused with the Q8_K quantization of its output into
// xq (the decode layout, as quant_act_q8_k16): block b takes outputs 256b .. 256b + 256 (whole
// heads: hd divides 256), thread t output 256b + t, and its first warp quantizes them.
extern "C" __global__ void __launch_bounds__(256)
    ops_attn_combine_q8k(const float* part_acc, const float* part_ml, float* out, u8* xq,
                         u32 pos0, int n_head, int hd, int n_chunks, int chunk) {
    pdl_wait();  // programmatic dependent launch (common.cuh)
    pdl_launch();
    __shared__ __align__(16) float vals[256];
    const int e = (int)blockIdx.x * 256 + (int)threadIdx.x;
    const float o = op_attn_merge(part_acc, part_ml, pos0, 0, e / hd, e % hd, n_head, hd,
                                  n_chunks, chunk);
    out[e] = o;
    vals[threadIdx.x] = o;
    __syncthreads();
    if (threadIdx.x < 32) lsq::q8k_block(vals, xq + (u64)blockIdx.x * 304u, threadIdx.x, 16u);
}

// One token's attention in one launch, for short contexts (n_kv ≤ OP_ATT1_MAX positions) where
// heads come in runs of 256 outputs (hd in 64, 128, 256): block b takes query heads G b ..
// G b + G (G = 256 / hd), 1024 threads. Every load the block needs is asked for at once: q,
// four lanes per position for the scores (each a quarter of the head, positions t/4 + 256i;
// one K row for heads that share their kv head), and for the weighted sum of V a column of 8
// outputs and positions g, g + 32, ... per thread (the first OP_ATT1_VB of them in registers
// before the softmax); the K and V rows of the positions before pos0 (the first 256 positions'
// K where the block's heads share one kv head) before the PDL wait, q and row pos0 after it.
// Arithmetic as ops_attn_partial with one chunk (Q rounded to f16, dots in float, weights
// exp(s - max) rounded to f16) and ops_attn_combine (times 1 / the sum of the unrounded
// weights). With xq, the block's 256 outputs are also quantized (Q8_K, the decode layout, as
// ops_attn_combine_q8k).
#define OP_ATT1_MAX 512
#define OP_ATT1_VB 4

extern "C" __global__ void __launch_bounds__(1024)
    ops_attn_one(const float* q, const u16* kc, const u16* vc, float* out, u8* xq, u32 pos0,
                 int n_head, int n_head_kv, int hd, float scale) {
    __shared__ __align__(16) float qs[256];
    __shared__ float sc[4][OP_ATT1_MAX];
    __shared__ float red[32][257];
    __shared__ float sl[4];
    const int t = threadIdx.x, lane = t & 31, wid = t >> 5;
    const int G = 256 / hd, group = n_head / n_head_kv;
    const int h0 = (int)blockIdx.x * G;
    const int nkv = (int)pos0 + 1;
    const u64 kvw = (u64)n_head_kv * hd;
    // Before the wait (programmatic dependent launch, common.cuh): the K and V rows of the
    // positions before pos0 are no kernel in flight's output (the launch before this one
    // writes row pos0), so their first loads are asked for while it ends; row pos0 after.
    // V: column c (outputs 8c .. 8c + 8: head j, dims d0 ..), positions g + 32i
    const int c = t & 31, g = t >> 5;
    const int j = (8 * c) / hd, d0 = (8 * c) % hd;
    const u16* vbase = vc + (u64)((h0 + j) / group) * hd;
    uint4 vw[OP_ATT1_VB];
#pragma unroll
    for (int i = 0; i < OP_ATT1_VB; ++i) {
        const int p = g + 32 * i;
        if (p < nkv - 1) vw[i] = __ldg((const uint4*)(vbase + (u64)p * kvw + d0));
    }
    // K of the first 256 positions (four lanes each, slices r, r + 4, ...) where one K row
    // serves every head of the block and a lane's slices fit kw
    const int r = t & 3, ns = hd / 32;  // slices per lane (2, 4 or 8)
    const bool kone = ns <= 4 && h0 / group == (h0 + G - 1) / group;
    const uint4* kr0 = (const uint4*)(kc + (u64)(t >> 2) * kvw + (u64)(h0 / group) * hd) + r;
    uint4 kw[4];
    if (kone && (t >> 2) < nkv - 1) {
#pragma unroll
        for (int u = 0; u < 4; ++u)
            if (u < ns) kw[u] = __ldg(kr0 + 4 * u);
    }
    pdl_wait();
    pdl_launch();
#pragma unroll
    for (int i = 0; i < OP_ATT1_VB; ++i) {
        const int p = g + 32 * i;
        if (p == nkv - 1) vw[i] = __ldg((const uint4*)(vbase + (u64)p * kvw + d0));
    }
    if (kone && (t >> 2) == nkv - 1) {
#pragma unroll
        for (int u = 0; u < 4; ++u)
            if (u < ns) kw[u] = __ldg(kr0 + 4 * u);
    }
    if (t < 256) qs[t] = h2f(f2h(q[(u64)h0 * hd + t]));
    __syncthreads();  // q is in shared memory

    // Scores: four lanes per position, lane quarter r takes 8-wide slices r, r + 4, ...
    for (int p0 = 0; p0 < nkv; p0 += 256) {
        const int p = p0 + (t >> 2);
        const bool live = p < nkv;
        const u16* krow = kc + (u64)(live ? p : 0) * kvw;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int u0 = 0; u0 < ns; u0 += 4) {  // four slices in flight (kw: loaded above)
            int kh = -1;
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
                if (jj >= G) break;
                if ((h0 + jj) / group != kh) {  // the next kv head's row
                    kh = (h0 + jj) / group;
                    const uint4* kr = (const uint4*)(krow + (u64)kh * hd);
#pragma unroll
                    for (int u = 0; u < 4; ++u)
                        if (live && u0 + u < ns && !(kone && p0 == 0))
                            kw[u] = __ldg(kr + r + 4 * (u0 + u));
                }
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    if (!live || u0 + u >= ns) break;
                    float kf[8];
                    op_unpack8(kw[u], kf);
                    acc[jj] += op_dot8(&qs[jj * hd + 8 * (r + 4 * (u0 + u))], kf);
                }
            }
        }
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
            float v = acc[jj];
            v += __shfl_xor_sync(0xffffffffu, v, 2);
            v += __shfl_xor_sync(0xffffffffu, v, 1);
            if (live && r == 0 && jj < G) sc[jj][p] = v * scale;
        }
    }
    __syncthreads();  // every score is in shared memory

    // Per head: max, sum of exponentials, weights rounded to f16 (warp jj).
    if (wid < G) {
        float m, l;
        op_warp_weights(sc[wid], nkv, m, l);
        if (lane == 0) sl[wid] = l;
    }
    __syncthreads();  // the weights are in shared memory

    // Weighted V: the thread's positions in order, the first OP_ATT1_VB from registers.
    float a[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    int p = g;
#pragma unroll
    for (int i = 0; i < OP_ATT1_VB; ++i, p += 32) {
        if (p >= nkv) break;
        float vf[8];
        op_unpack8(vw[i], vf);
        const float w = sc[j][p];
#pragma unroll
        for (int e = 0; e < 8; ++e) a[e] = fmaf(w, vf[e], a[e]);
    }
    for (; p < nkv; p += 32 * OP_ATT1_VB) {
#pragma unroll
        for (int i = 0; i < OP_ATT1_VB; ++i) {
            const int pp = p + 32 * i;
            if (pp < nkv) vw[i] = __ldg((const uint4*)(vbase + (u64)pp * kvw + d0));
        }
#pragma unroll
        for (int i = 0; i < OP_ATT1_VB; ++i) {
            const int pp = p + 32 * i;
            if (pp >= nkv) break;
            float vf[8];
            op_unpack8(vw[i], vf);
            const float w = sc[j][pp];
#pragma unroll
            for (int e = 0; e < 8; ++e) a[e] = fmaf(w, vf[e], a[e]);
        }
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) red[g][8 * c + e] = a[e];
    __syncthreads();  // every position group's sums are in shared memory
    if (t < 256) {
        float s = 0.0f;
        for (int gg = 0; gg < 32; ++gg) s += red[gg][t];
        const float o = s * (1.0f / sl[t / hd]);
        out[(u64)h0 * hd + t] = o;
        qs[t] = o;
    }
    if (xq == nullptr) return;
    __syncthreads();  // the block's outputs are in shared memory
    if (t < 32) lsq::q8k_block(qs, xq + (u64)blockIdx.x * 304u, t, 16u);
}

// ------------------------------------------------------------------------------ sampling
// Order keys: a larger logit has a larger key; NaN counts as -inf, -0 as +0 (sampler.rs
// order_key). Candidates are (key << 32 | ~index): descending order = by logit, then index.

__device__ __forceinline__ u32 op_key(float f) {
    u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) b = 0xff800000u;
    if (b == 0x80000000u) b = 0u;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float op_key_value(u32 k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// sampler.rs fexp, operation for operation: e^x for x <= 0, 0 below -87.
__device__ __forceinline__ float op_fexp(float x) {
    if (!(x >= -87.0f)) return 0.0f;
    const float kf = floorf(__fadd_rn(__fmul_rn(x, __uint_as_float(0x3fb8aa3bu)), 0.5f));
    float r = __fsub_rn(x, __fmul_rn(kf, __uint_as_float(0x3f317200u)));
    r = __fsub_rn(r, __fmul_rn(kf, __uint_as_float(0x35bfbe8eu)));
    float p = __uint_as_float(0x39500d01u);
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3ab60b61u));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3c088889u));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3d2aaaabu));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3e2aaaabu));
    p = __fadd_rn(__fmul_rn(p, r), 0.5f);
    p = __fadd_rn(__fmul_rn(p, r), 1.0f);
    p = __fadd_rn(__fmul_rn(p, r), 1.0f);
    const int k = (int)kf;
    return __fmul_rn(p, __uint_as_float((u32)(k + 127) << 23));
}

// A weight in [0, 1] in units of 2^-40 (sampler.rs weight_units).
__device__ __forceinline__ u64 op_units(float w) {
    return (u64)__dadd_rn(__dmul_rn((double)w, 1099511627776.0), 0.5);
}

#define OP_SMP_THREADS 1024
#define OP_SMP_CAP 2048

struct OpSmp {
    const float* x;
    u32 n;
    float m;      // the largest logit
    float temp;
    float min_p;
};

struct OpSmpShared {
    u32 cnt[256];
    u64 mass[256];
    u32 dec[4];    // chosen bucket, its count, a found index
    u64 dec64[2];  // count and mass above the chosen bucket
    u32 n_cand;
    u64 cand[OP_SMP_CAP];
};

// The K-th element: its key, and which of the elements with that key (1-based, index order).
struct OpSel {
    u32 key;
    u32 ties;
};

struct OpMassSel {
    bool found;
    u32 key;
    u32 ties;
    u32 rank;
};

__device__ __forceinline__ float op_smp_e(const OpSmp& s, u32 k) {
    return op_fexp(__fsub_rn(op_key_value(k), s.m));
}
__device__ __forceinline__ u64 op_smp_w(const OpSmp& s, u32 k) {
    return op_units(op_fexp(__fdiv_rn(__fsub_rn(op_key_value(k), s.m), s.temp)));
}

// Warp 0 only: the largest bucket b with a non-zero count whose running total from the top
// bucket down (masses, or counts) reaches rem. dec[0] = b (256: none), dec[1] = its count,
// dec64[0] = count above it, dec64[1] = mass above it.
__device__ void op_choose_bucket(OpSmpShared* sh, u64 rem, bool use_mass) {
    const int lane = threadIdx.x & 31;
    u32 c[8];
    u64 w[8];
    u32 cs = 0;
    u64 ws = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const u32 b = 255u - (8u * lane + j);
        c[j] = sh->cnt[b];
        w[j] = use_mass ? sh->mass[b] : (u64)c[j];
        cs += c[j];
        ws += w[j];
    }
    const u32 ci = op_warp_incl_scan(cs);
    const u64 wi = op_warp_incl_scan(ws);
    u32 run_c = ci - cs;
    u64 run_w = wi - ws;
    int found = -1;
    u32 above_c = 0;
    u64 above_w = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const u64 after = run_w + w[j];
        if (found < 0 && c[j] > 0 && after >= rem) {
            found = j;
            above_c = run_c;
            above_w = run_w;
        }
        run_c += c[j];
        run_w = after;
    }
    const u32 ball = __ballot_sync(OP_FULL, found >= 0);
    if (ball == 0) {
        if (lane == 0) sh->dec[0] = 256;
        return;
    }
    const int src = __ffs(ball) - 1;
    const int fj = __shfl_sync(OP_FULL, found, src);
    const u32 ac = __shfl_sync(OP_FULL, above_c, src);
    const u64 aw = __shfl_sync(OP_FULL, above_w, src);
    if (lane == 0) {
        const u32 b = 255u - (8u * (u32)src + (u32)fj);
        sh->dec[0] = b;
        sh->dec[1] = sh->cnt[b];
        sh->dec64[0] = ac;
        sh->dec64[1] = aw;
    }
}

// Histogram pass of one radix digit over the keys matching `prefix` above the digit; with
// `mass` (1: e weights, 2: w weights) also the weights per bucket.
__device__ void op_histogram(const OpSmp& s, OpSmpShared* sh, u32 prefix, int shift, int mass) {
    const u32 tid = threadIdx.x, lane = tid & 31;
    const u32 hm = shift == 24 ? 0u : (0xffffffffu << (shift + 8));
    for (u32 b = tid; b < 256; b += blockDim.x) {
        sh->cnt[b] = 0;
        sh->mass[b] = 0;
    }
    __syncthreads();
    for (u32 base = 0; base < s.n; base += blockDim.x) {  // same trip count in every thread
        const u32 i = base + tid;
        u32 b = 256;
        u64 wv = 0;
        if (i < s.n) {
            const u32 k = op_key(s.x[i]);
            if ((k & hm) == prefix) {
                b = (k >> shift) & 255u;
                if (mass == 1) wv = op_units(op_smp_e(s, k));
                if (mass == 2) wv = op_smp_w(s, k);
            }
        }
        const u32 peers = __match_any_sync(OP_FULL, b);
        if (b < 256) {
            if (lane == (u32)(__ffs(peers) - 1)) atomicAdd(&sh->cnt[b], (u32)__popc(peers));
            if (wv) atomicAdd((unsigned long long*)&sh->mass[b], (unsigned long long)wv);
        }
    }
    __syncthreads();
}

// The K-th largest key (1 <= K <= n), four 8-bit digits.
__device__ OpSel op_count_select(const OpSmp& s, OpSmpShared* sh, u32 K) {
    u32 prefix = 0, rem = K;
    for (int shift = 24; shift >= 0; shift -= 8) {
        op_histogram(s, sh, prefix, shift, 0);
        if (threadIdx.x < 32) op_choose_bucket(sh, rem, false);
        __syncthreads();
        prefix |= sh->dec[0] << shift;
        rem -= (u32)sh->dec64[0];
    }
    OpSel r;
    r.key = prefix;
    r.ties = rem;
    return r;
}

// The first element (in order) whose running weight reaches target (mass 1: e, 2: w).
__device__ OpMassSel op_mass_select(const OpSmp& s, OpSmpShared* sh, u64 target, int mass) {
    OpMassSel r;
    r.found = false;
    r.key = 0;
    r.ties = 0;
    r.rank = 0;
    u32 prefix = 0, count_gt = 0, n_t = 0;
    u64 rem = target;
    for (int shift = 24; shift >= 0; shift -= 8) {
        op_histogram(s, sh, prefix, shift, mass);
        if (threadIdx.x < 32) op_choose_bucket(sh, rem, true);
        __syncthreads();
        const u32 b = sh->dec[0];
        if (b == 256) return r;  // the same in every thread
        prefix |= b << shift;
        rem -= sh->dec64[1];
        count_gt += (u32)sh->dec64[0];
        n_t = sh->dec[1];
    }
    const u64 wt = mass == 1 ? op_units(op_smp_e(s, prefix)) : op_smp_w(s, prefix);
    u64 j = 1;
    if (rem > 0 && wt > 0) j = (rem + wt - 1) / wt;
    if (j < 1) j = 1;
    if (j > n_t) j = n_t;
    r.found = true;
    r.key = prefix;
    r.ties = (u32)j;
    r.rank = count_gt + (u32)j - 1;
    return r;
}

// Each thread's contiguous slice of the vocabulary, for passes that need index order.
__device__ __forceinline__ void op_slice(u32 n, u32* lo, u32* hi) {
    const u32 chunk = (n + blockDim.x - 1) / blockDim.x;
    *lo = min(n, threadIdx.x * chunk);
    *hi = min(n, *lo + chunk);
}

// Index of the j-th (1-based) element with key `key`, in index order.
__device__ u32 op_find_tie(const OpSmp& s, OpSmpShared* sh, u32 key, u32 j) {
    u32 lo, hi;
    op_slice(s.n, &lo, &hi);
    if (threadIdx.x == 0) sh->dec[2] = 0;
    u32 c = 0;
    for (u32 i = lo; i < hi; ++i) c += op_key(s.x[i]) == key;
    u32 total;
    u32 seen = op_block_excl_scan<u32>(c, &total);  // synchronises: dec[2] = 0 is visible
    if (j > seen && j <= seen + c) {
        for (u32 i = lo; i < hi; ++i) {
            if (op_key(s.x[i]) == key && ++seen == j) {
                sh->dec[2] = i;
                break;
            }
        }
    }
    __syncthreads();
    return sh->dec[2];
}

// The elements with key > sel.key and the first sel.ties with key == sel.key, into sh->cand
// (unordered). Returns how many.
__device__ u32 op_gather(const OpSmp& s, OpSmpShared* sh, OpSel sel) {
    u32 lo, hi;
    op_slice(s.n, &lo, &hi);
    if (threadIdx.x == 0) sh->n_cand = 0;
    u32 c = 0;
    for (u32 i = lo; i < hi; ++i) c += op_key(s.x[i]) == sel.key;
    u32 total;
    u32 t = op_block_excl_scan<u32>(c, &total);  // synchronises: n_cand = 0 is visible
    for (u32 i = lo; i < hi; ++i) {
        const u32 k = op_key(s.x[i]);
        bool take = k > sel.key;
        if (k == sel.key) take = t++ < sel.ties;
        if (take) {
            const u32 slot = atomicAdd(&sh->n_cand, 1u);
            if (slot < OP_SMP_CAP) sh->cand[slot] = ((u64)k << 32) | (u64)(~i);
        }
    }
    __syncthreads();
    return min(sh->n_cand, (u32)OP_SMP_CAP);
}

// Bitonic sort of a[0..c) in descending order (c <= OP_SMP_CAP), padded with zeros.
__device__ void op_sort_desc(u64* a, u32 c) {
    u32 np = 1;
    while (np < c) np <<= 1;
    for (u32 i = c + threadIdx.x; i < np; i += blockDim.x) a[i] = 0;
    __syncthreads();
    for (u32 k = 2; k <= np; k <<= 1) {
        for (u32 j = k >> 1; j > 0; j >>= 1) {
            for (u32 i = threadIdx.x; i < np; i += blockDim.x) {
                const u32 p = i ^ j;
                if (p > i) {
                    const u64 x = a[i], y = a[p];
                    const bool desc = (i & k) == 0;
                    if (desc ? (x < y) : (x > y)) {
                        a[i] = y;
                        a[p] = x;
                    }
                }
            }
            __syncthreads();
        }
    }
}

// The rest of the chain over the first C candidates of the order, sorted in sh->cand:
// top-p (against the top-k sum S), min-p (count over the top-k), temperature, draw.
// When have_sum is false, the candidates are the whole top-k and S, cnt come from them.
__device__ u32 op_finish(const OpSmp& s, OpSmpShared* sh, u32 C, bool have_sum, u64 S, u32 cnt,
                         float top_p, float u, u32* keep_out, u32* rank_out) {
    const u32 i0 = 2 * threadIdx.x, i1 = i0 + 1;  // 2 * OP_SMP_THREADS == OP_SMP_CAP
    u64 e0 = 0, e1 = 0;
    u32 p = 0;
    if (i0 < C) {
        const float e = op_smp_e(s, (u32)(sh->cand[i0] >> 32));
        e0 = op_units(e);
        p += e >= s.min_p;
    }
    if (i1 < C) {
        const float e = op_smp_e(s, (u32)(sh->cand[i1] >> 32));
        e1 = op_units(e);
        p += e >= s.min_p;
    }
    u64 tot;
    const u64 ex = op_block_excl_scan<u64>(e0 + e1, &tot);
    const u32 pc = op_block_reduce<OpAdd>(p, 0u);
    if (!have_sum) {
        S = tot;
        cnt = pc;
    }
    u32 keep = C;
    if (top_p < 1.0f) {
        const u64 target = (u64)__dmul_rn((double)fmaxf(top_p, 0.0f), __ull2double_rn(S));
        u32 first = 0xffffffffu;
        if (i0 < C && ex + e0 >= target)
            first = i0;
        else if (i1 < C && ex + e0 + e1 >= target)
            first = i1;
        first = op_block_reduce<OpMin>(first, 0xffffffffu);
        if (first != 0xffffffffu) keep = min(keep, first + 1);
    }
    if (s.min_p > 0.0f) keep = min(keep, max(cnt, 1u));
    const u64 w0 = i0 < keep ? op_smp_w(s, (u32)(sh->cand[i0] >> 32)) : 0;
    const u64 w1 = i1 < keep ? op_smp_w(s, (u32)(sh->cand[i1] >> 32)) : 0;
    u64 T;
    const u64 wx = op_block_excl_scan<u64>(w0 + w1, &T);
    const u64 r = (u64)__dmul_rn((double)u, __ull2double_rn(T));
    u32 pick = 0xffffffffu;
    if (i0 < keep && wx + w0 > r)
        pick = i0;
    else if (i1 < keep && wx + w0 + w1 > r)
        pick = i1;
    pick = op_block_reduce<OpMin>(pick, 0xffffffffu);
    if (pick == 0xffffffffu) pick = keep - 1;
    *keep_out = keep;
    *rank_out = pick;
    return ~(u32)(sh->cand[pick] & 0xffffffffu);
}

// Greedy: the first index of the largest logit; NaN never wins, except at index 0, which wins
// (as sampler::argmax).
// Each thread asks for 8 logits before comparing any (a vocabulary of 49152 took 22 us with
// one load in flight per thread); the largest key wins whatever the order of comparisons.
extern "C" __global__ void __launch_bounds__(1024) ops_argmax(const float* x, u32 n, i32* out) {
    u64 best = 0;
    for (u32 base = 0; base < n; base += 8u * blockDim.x) {
        float v[8];
#pragma unroll
        for (u32 k = 0; k < 8; ++k) {
            const u32 i = base + k * blockDim.x + threadIdx.x;
            v[k] = i < n ? x[i] : 0.0f;
        }
#pragma unroll
        for (u32 k = 0; k < 8; ++k) {
            const u32 i = base + k * blockDim.x + threadIdx.x;
            const u64 c = ((u64)op_key(v[k]) << 32) | (u64)(~i);
            if (i < n) best = c > best ? c : best;
        }
    }
    best = op_block_reduce<OpMax>(best, (u64)0);
    if (threadIdx.x == 0) {
        const float x0 = x[0];
        out[0] = x0 != x0 ? 0 : (i32)(~(u32)(best & 0xffffffffu));
    }
}

// llama.cpp's repeat penalty: each distinct id once (its first occurrence applies it), ids
// outside 0..n ignored. One thread per id; earlier ids are compared tile by tile.
extern "C" __global__ void __launch_bounds__(256)
    ops_repeat_penalty(float* logits, u32 n, const i32* ids, u32 n_ids, float penalty) {
    __shared__ i32 tile[256];
    const u32 j = blockIdx.x * blockDim.x + threadIdx.x;
    const i32 id = j < n_ids ? ids[j] : -1;
    bool first = true;
    const u32 end = min(n_ids, (blockIdx.x + 1) * blockDim.x);  // same in the whole block
    for (u32 base = 0; base < end; base += 256) {
        __syncthreads();
        tile[threadIdx.x] = base + threadIdx.x < n_ids ? ids[base + threadIdx.x] : -1;
        __syncthreads();
        for (u32 t = 0; t < 256 && base + t < j; ++t) first = first && tile[t] != id;
    }
    if (j < n_ids && first && id >= 0 && (u32)id < n) {
        const float l = logits[id];
        logits[id] = l <= 0.0f ? __fmul_rn(l, penalty) : __fdiv_rn(l, penalty);
    }
}

// The sampling chain of sampler::sample_with for the uniform number u, on one block.
// stats[0..5]: path (0 degenerate, 1 top-k gathered, 2 min-p gathered, 3 by mass), K1, the
// candidate bound, keep, rank of the pick.
extern "C" __global__ void __launch_bounds__(OP_SMP_THREADS)
    ops_sample(const float* x, u32 n, float temp, u32 top_k, float top_p, float min_p, float u,
               i32* out, u32* stats) {
    __shared__ OpSmpShared sh;
    u32 mk = 0;
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) mk = max(mk, op_key(x[i]));
    mk = op_block_reduce<OpMax>(mk, 0u);
    OpSmp s;
    s.x = x;
    s.n = n;
    s.m = op_key_value(mk);
    s.temp = temp;
    s.min_p = min_p;
    u32 path = 0, k1 = 0, bound = 0, keep = 0, rank = 0, id = 0;
    if (!(fabsf(s.m) <= 3.402823466e38f)) {
        // Nothing to weigh (all -inf, or an infinite logit): the first of the largest.
        id = op_find_tie(s, &sh, mk, 1);
    } else {
        k1 = (top_k > 0 && top_k < n) ? top_k : n;
        OpSel sel1;
        sel1.key = 0;  // with ties = 0: every element
        sel1.ties = 0;
        if (k1 < n) sel1 = op_count_select(s, &sh, k1);
        if (k1 <= OP_SMP_CAP) {
            path = 1;
            bound = op_gather(s, &sh, sel1);
            op_sort_desc(sh.cand, bound);
            id = op_finish(s, &sh, bound, false, 0, 0, top_p, u, &keep, &rank);
        } else {
            // The top-k sum and min-p count (ties of sel1 all weigh the same).
            u64 S = 0;
            u32 cnt = 0;
            for (u32 i = threadIdx.x; i < n; i += blockDim.x) {
                const u32 k = op_key(x[i]);
                if (k > sel1.key) {
                    const float e = op_smp_e(s, k);
                    S += op_units(e);
                    cnt += e >= min_p;
                }
            }
            S = op_block_reduce<OpAdd>(S, (u64)0);
            cnt = op_block_reduce<OpAdd>(cnt, 0u);
            {
                const float e = op_smp_e(s, sel1.key);
                S += (u64)sel1.ties * op_units(e);
                if (e >= min_p) cnt += sel1.ties;
            }
            bound = min_p > 0.0f ? min(k1, max(cnt, 1u)) : k1;
            if (bound <= OP_SMP_CAP) {
                path = 2;
                const OpSel selc = op_count_select(s, &sh, bound);
                op_gather(s, &sh, selc);
                op_sort_desc(sh.cand, bound);
                id = op_finish(s, &sh, bound, true, S, cnt, top_p, u, &keep, &rank);
            } else {
                path = 3;
                keep = bound;
                if (top_p < 1.0f) {
                    const u64 target =
                        (u64)__dmul_rn((double)fmaxf(top_p, 0.0f), __ull2double_rn(S));
                    const OpMassSel ms = op_mass_select(s, &sh, target, 1);
                    if (ms.found) keep = min(keep, ms.rank + 1);
                }
                const OpSel selk =
                    (keep == k1 && k1 < n) ? sel1 : op_count_select(s, &sh, keep);
                u64 T = 0;
                for (u32 i = threadIdx.x; i < n; i += blockDim.x) {
                    const u32 k = op_key(x[i]);
                    if (k > selk.key) T += op_smp_w(s, k);
                }
                T = op_block_reduce<OpAdd>(T, (u64)0);
                T += (u64)selk.ties * op_smp_w(s, selk.key);
                const u64 r = (u64)__dmul_rn((double)u, __ull2double_rn(T));
                const OpMassSel md = op_mass_select(s, &sh, r + 1, 2);
                OpSel pick = selk;
                rank = keep - 1;
                if (md.found && md.rank < keep) {
                    pick.key = md.key;
                    pick.ties = md.ties;
                    rank = md.rank;
                }
                id = op_find_tie(s, &sh, pick.key, pick.ties);
            }
        }
    }
    if (threadIdx.x == 0) {
        out[0] = (i32)id;
        stats[0] = path;
        stats[1] = k1;
        stats[2] = bound;
        stats[3] = keep;
        stats[4] = rank;
    }
}
