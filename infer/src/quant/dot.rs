//! Fused dot products of one weight row with one quantized activation row.
//!
//! A kernel takes the raw bytes of a weight row of type `T` and of the activation row already
//! quantized to `T`'s `vec_dot_type` (see [`super::vec_dot_type`]) and returns
//! `sum_i w[i] * x[i]` computed as llama.cpp's CPU backend computes it: block by block with
//! exact integer sums, scaled by the block scales in `f32`.
//!
//! # Numerics
//! llama.cpp (x86-64, AVX2 + FMA build: the reference) accumulates the scaled block sums in
//! eight `f32` lanes with fused multiply-adds, lane `k` taking elements `4k..4k+4` of every
//! 32-element group, and reduces the lanes at the end in a fixed tree. The scalar kernels here
//! reproduce that lane structure, the FMAs (`f32::mul_add`) and the reduction tree, so the
//! scalar and AVX2 paths are bit-identical to each other and to ggml's `ggml_vec_dot_*`
//! (checked against `libggml-cpu` in the fixtures). They are the reference implementation;
//! speed comes from the run-time selected SIMD kernels ([`Backend::Avx2`], [`Backend::Avx512`]).
//!
//! llama.cpp does not always call `ggml_vec_dot` for a matmul; [`Path`] names the other
//! kernels it uses, whose integer sums are the same but whose `f32` summation differs:
//! repacked `Q4_0`/`Q4_K` weights (`gemv`/`gemm_*_8x8`, default whenever the row count is a
//! multiple of 8) and llamafile's `tinyBLAS` for float weights in batches. Each has a kernel
//! here ([`kernel_for`]), bit-identical to ggml's; [`super::matvec`] and [`super::matmul`]
//! pick the one llama.cpp would pick ([`llama_cpp_repacks`], [`llama_cpp_tinyblas`]).
//!
//! Rows are processed in whole blocks: a kernel reads `min(w blocks, x blocks)` blocks, so it
//! never reads out of bounds; callers check lengths ([`vec_dot`] does).

use llmstream::gguf::GgmlType;

use super::blocks::{
    bf16_at, f16_at, f32_at, i16_at, i8of, k4_scales_mins, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k,
    q6_k, q8_0, q8_1, q8_k, QK, QK_K,
};
use super::dequant::q6_unsigned;
use super::q8::int_to_f32;
use super::{layout, simd, vec_dot_type, QuantError};

/// A dot-product kernel: weight row bytes, quantized activation bytes -> dot product.
pub type DotFn = fn(&[u8], &[u8]) -> f32;

/// A multi-row kernel: `out[r]` = the dot product of the weight row at bytes
/// `r * row_bytes..(r + 1) * row_bytes` of the weights with the quantized activations, for
/// `r < out.len()` (rows the weights do not hold are left alone); bit-identical to the
/// [`DotFn`] of the same type, backend and path, row by row.
pub(crate) type RowsFn = fn(&[u8], usize, &[u8], &mut [f32]);

/// Which implementation of the kernels to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Portable Rust, the reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C (falls back to scalar for types without an AVX2 kernel, and
    /// entirely when the CPU lacks those features).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/VNNI for the quantized types, the AVX2 kernels for the others
    /// (falls back to [`Backend::Avx2`] when the CPU lacks those features). Same bits as AVX2.
    Avx512,
}

impl Backend {
    /// The fastest backend this CPU supports (detected once at run time).
    pub fn detect() -> Backend {
        if simd::avx512_available() {
            Backend::Avx512
        } else if simd::avx2_available() {
            Backend::Avx2
        } else {
            Backend::Scalar
        }
    }

    /// Whether this CPU runs this backend's own kernels (instead of falling back).
    pub fn is_available(self) -> bool {
        match self {
            Backend::Scalar => true,
            Backend::Avx2 => simd::avx2_available(),
            Backend::Avx512 => simd::avx512_available(),
        }
    }

    /// Short lowercase name (`scalar`, `avx2`, `avx512`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
        }
    }
}

/// The kernel for weights of type `ty` on `backend`.
pub fn kernel(ty: GgmlType, backend: Backend) -> Result<DotFn, QuantError> {
    kernel_for(ty, backend, Path::VecDot)
}

/// The multi-row kernel for weights of type `ty` on `backend` following `path`, where one
/// exists (AVX-512, 32-element types); otherwise callers loop over [`kernel_for`].
pub(crate) fn rows_kernel_for(ty: GgmlType, backend: Backend, path: Path) -> Option<RowsFn> {
    if backend == Backend::Avx512 {
        return simd::avx512_rows_kernel(ty, path);
    }
    None
}

/// Which of llama.cpp's CPU matmul kernels a product reproduces (same integers, different
/// `f32` summation order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// `ggml_vec_dot_*`: what llama.cpp uses for every weight matrix it does not repack.
    VecDot,
    /// `ggml_gemv_*_8x8` on repacked `Q4_0`/`Q4_K` weights: activation rows one at a time.
    RepackGemv,
    /// `ggml_gemm_*_8x8` on repacked `Q4_0`/`Q4_K` weights: groups of four activation rows.
    RepackGemm,
    /// llamafile's `tinyBLAS` (`llamafile_sgemm`), which llama.cpp uses for `F32`/`F16`/`BF16`
    /// weights when a batch has at least two activation rows: one 8-lane FMA accumulator per
    /// output.
    Tinyblas,
}

/// Whether llama.cpp (x86-64 with AVX2, default settings) repacks a matmul weight of type `ty`
/// with `rows` rows into its CPU_REPACK buffer, and so multiplies it with the `Repack*`
/// kernels: `Q4_0` and `Q4_K` with a row count divisible by 8.
pub fn llama_cpp_repacks(ty: GgmlType, rows: usize) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_K) && rows % 8 == 0
}

/// Whether llama.cpp (x86-64 AVX2 build with llamafile, the default) multiplies a `rows x cols`
/// weight of type `ty` by a batch of `n` activation rows with llamafile's `tinyBLAS`:
/// float weights, `n >= 2`, `rows % 4 == 0`, `cols % 8 == 0`. (Its quantized `tinyBLAS`
/// kernels for `Q8_0`/`Q4_0`/`Q5_0` sum exactly like `ggml_vec_dot`.)
pub fn llama_cpp_tinyblas(ty: GgmlType, rows: usize, cols: usize, n: usize) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
        && n >= 2
        && rows % 4 == 0
        && cols % 8 == 0
}

/// The kernel for weights of type `ty` on `backend` following `path`; the `Repack*` paths
/// exist for `Q4_0` and `Q4_K`, [`Path::Tinyblas`] for `F32`, `F16` and `BF16`.
pub fn kernel_for(ty: GgmlType, backend: Backend, path: Path) -> Result<DotFn, QuantError> {
    if backend == Backend::Avx512 {
        if let Some(k) = simd::avx512_kernel(ty, path) {
            return Ok(k);
        }
    }
    if matches!(backend, Backend::Avx2 | Backend::Avx512) {
        let k = if path == Path::VecDot {
            simd::kernel(ty)
        } else {
            simd::repack_kernel(ty, path)
        };
        if let Some(k) = k {
            return Ok(k);
        }
    }
    if path == Path::VecDot {
        return scalar_kernel(ty).ok_or(QuantError::Unsupported { ty, op: "vec_dot" });
    }
    Ok(match (ty, path) {
        (GgmlType::F32, Path::Tinyblas) => dot_f32_tinyblas,
        (GgmlType::F16, Path::Tinyblas) => dot_f16_tinyblas,
        (GgmlType::BF16, Path::Tinyblas) => dot_bf16_tinyblas,
        (GgmlType::Q4_0, Path::RepackGemv | Path::RepackGemm) => dot_q4_0_repack,
        (GgmlType::Q4_K, Path::RepackGemv) => dot_q4_k_gemv,
        (GgmlType::Q4_K, Path::RepackGemm) => dot_q4_k_gemm,
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                op: "repacked dot product",
            })
        }
    })
}

/// `sum_i w[i] * x[i]` for one weight row `w` of type `ty` holding `n` elements and the
/// activations `xq` quantized to `vec_dot_type(ty)`; lengths are checked.
pub fn vec_dot(
    ty: GgmlType,
    backend: Backend,
    n: usize,
    w: &[u8],
    xq: &[u8],
) -> Result<f32, QuantError> {
    let vty = vec_dot_type(ty)?;
    let (block, size) = layout(ty, "vec_dot")?;
    if n % block != 0 {
        return Err(QuantError::NotWholeBlocks {
            what: "vec_dot row",
            ty,
            n,
            block,
        });
    }
    let w_len = (n / block)
        .checked_mul(size)
        .ok_or(QuantError::Overflow { what: "vec_dot" })?;
    if w.len() != w_len {
        return Err(QuantError::bytes("vec_dot weights", w_len, w.len()));
    }
    let x_len = super::q8::activation_bytes(vty, n)?;
    if xq.len() != x_len {
        return Err(QuantError::bytes("vec_dot activations", x_len, xq.len()));
    }
    Ok(kernel(ty, backend)?(w, xq))
}

/// The scalar (reference) kernel for weights of type `ty`.
pub fn scalar_kernel(ty: GgmlType) -> Option<DotFn> {
    Some(match ty {
        GgmlType::F32 => dot_f32,
        GgmlType::F16 => dot_f16,
        GgmlType::BF16 => dot_bf16,
        GgmlType::Q4_0 => dot_q4_0,
        GgmlType::Q4_1 => dot_q4_1,
        GgmlType::Q5_0 => dot_q5_0,
        GgmlType::Q5_1 => dot_q5_1,
        GgmlType::Q8_0 => dot_q8_0,
        GgmlType::Q4_K => dot_q4_k,
        GgmlType::Q5_K => dot_q5_k,
        GgmlType::Q6_K => dot_q6_k,
        _ => return None,
    })
}

// ------------------------------------------------------------------------------------ helpers

/// Eight `f32` lanes, as one `__m256`.
type Lanes = [f32; 8];

/// ggml's `hsum_float_8`: (hi + lo) pairwise, then `movehl` and `movehdup` adds.
#[inline(always)]
pub(crate) fn hsum_movehl(a: Lanes) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// ggml's `GGML_F32x8_REDUCE` tail: (lo + hi) pairwise, then two `hadd`s.
#[inline(always)]
pub(crate) fn hsum_hadd(a: Lanes) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[1]) + (r[2] + r[3])
}

/// `acc[k] = fma(d, lanes[k], acc[k])` for the eight lanes.
#[inline(always)]
fn fma_lanes(acc: &mut Lanes, d: f32, lanes: &[i32; 8]) {
    for (a, &l) in acc.iter_mut().zip(lanes) {
        *a = d.mul_add(int_to_f32(l), *a);
    }
}

/// Integer lane sums of a 32-element group: lane `k` = sum of `w[i] * x[i]` for `i` in
/// `4k..4k+4`.
#[inline(always)]
fn lane_sums_32(w: &[i32; 32], x: &[u8]) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for (i, (&wv, &xv)) in w.iter().zip(x).enumerate() {
        lanes[i / 4] += wv * i32::from(i8of(xv));
    }
    lanes
}

/// The 32 nibbles of a 16-byte `qs`, low nibbles first.
#[inline(always)]
fn nibbles(qs: &[u8]) -> [i32; 32] {
    let mut v = [0i32; 32];
    for (j, &q) in qs[..16].iter().enumerate() {
        v[j] = i32::from(q & 0x0F);
        v[j + 16] = i32::from(q >> 4);
    }
    v
}

/// `nibbles` with the fifth bits of a `Q5_0`/`Q5_1` `qh` word.
#[inline(always)]
fn q5_values(qh: &[u8], qs: &[u8]) -> [i32; 32] {
    let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut v = nibbles(qs);
    for (i, x) in v.iter_mut().enumerate() {
        if bits >> i & 1 == 1 {
            *x |= 16;
        }
    }
    v
}

// ------------------------------------------------------------------------ 32-element blocks

pub(crate) fn dot_q4_0(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (wb, xb) in w.chunks_exact(q4_0::SIZE).zip(x.chunks_exact(q8_0::SIZE)) {
        let d = f16_at(wb, q4_0::D) * f16_at(xb, q8_0::D);
        let mut q = nibbles(&wb[q4_0::QS..]);
        q.iter_mut().for_each(|v| *v -= 8);
        fma_lanes(&mut acc, d, &lane_sums_32(&q, &xb[q8_0::QS..]));
    }
    hsum_movehl(acc)
}

pub(crate) fn dot_q4_1(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (wb, xb) in w.chunks_exact(q4_1::SIZE).zip(x.chunks_exact(q8_1::SIZE)) {
        let d = f16_at(wb, q4_1::D) * f16_at(xb, q8_1::D);
        summs = f16_at(wb, q4_1::M).mul_add(f16_at(xb, q8_1::S), summs);
        let q = nibbles(&wb[q4_1::QS..]);
        fma_lanes(&mut acc, d, &lane_sums_32(&q, &xb[q8_1::QS..]));
    }
    hsum_movehl(acc) + summs
}

pub(crate) fn dot_q5_0(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (wb, xb) in w.chunks_exact(q5_0::SIZE).zip(x.chunks_exact(q8_0::SIZE)) {
        let d = f16_at(wb, q5_0::D) * f16_at(xb, q8_0::D);
        let mut q = q5_values(&wb[q5_0::QH..], &wb[q5_0::QS..]);
        q.iter_mut().for_each(|v| *v -= 16);
        fma_lanes(&mut acc, d, &lane_sums_32(&q, &xb[q8_0::QS..]));
    }
    hsum_movehl(acc)
}

pub(crate) fn dot_q5_1(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (wb, xb) in w.chunks_exact(q5_1::SIZE).zip(x.chunks_exact(q8_1::SIZE)) {
        let d = f16_at(wb, q5_1::D) * f16_at(xb, q8_1::D);
        summs = f16_at(wb, q5_1::M).mul_add(f16_at(xb, q8_1::S), summs);
        let q = q5_values(&wb[q5_1::QH..], &wb[q5_1::QS..]);
        fma_lanes(&mut acc, d, &lane_sums_32(&q, &xb[q8_1::QS..]));
    }
    hsum_movehl(acc) + summs
}

pub(crate) fn dot_q8_0(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (wb, xb) in w.chunks_exact(q8_0::SIZE).zip(x.chunks_exact(q8_0::SIZE)) {
        let d = f16_at(wb, q8_0::D) * f16_at(xb, q8_0::D);
        let mut q = [0i32; 32];
        for (v, &b) in q.iter_mut().zip(&wb[q8_0::QS..q8_0::QS + QK]) {
            *v = i32::from(i8of(b));
        }
        fma_lanes(&mut acc, d, &lane_sums_32(&q, &xb[q8_0::QS..]));
    }
    hsum_movehl(acc)
}

// ---------------------------------------------------------------------------------- K types

/// Integer lanes of a K super-block: lane `k` = sum over the block of
/// `scale(e) * w(e) * x(e)` for the elements `e` with `e % 32` in `4k..4k+4`.
#[inline(always)]
fn k_lanes(x: &[u8], value_and_scale: impl Fn(usize) -> (i32, i32)) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    let qs = &x[q8_k::QS..q8_k::QS + QK_K];
    for (e, &xv) in qs.iter().enumerate() {
        let (v, sc) = value_and_scale(e);
        lanes[(e % 32) / 4] += sc * v * i32::from(i8of(xv));
    }
    lanes
}

/// `sum_s mins[s] * (bsums[2s] + bsums[2s+1])` as the four `madd` lanes ggml forms.
#[inline(always)]
fn k_min_lanes(x: &[u8], mins: &[u8; 8]) -> [i32; 4] {
    let bs = |g: usize| i32::from(i16_at(x, q8_k::BSUMS + 2 * g));
    let mut out = [0i32; 4];
    for (i, o) in out.iter_mut().enumerate() {
        let s0 = bs(4 * i) + bs(4 * i + 1);
        let s1 = bs(4 * i + 2) + bs(4 * i + 3);
        *o = i32::from(mins[2 * i]) * s0 + i32::from(mins[2 * i + 1]) * s1;
    }
    out
}

pub(crate) fn dot_q4_k(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut acc_m = [0.0f32; 4];
    for (wb, xb) in w.chunks_exact(q4_k::SIZE).zip(x.chunks_exact(q8_k::SIZE)) {
        let yd = f32_at(xb, q8_k::D);
        let d = yd * f16_at(wb, q4_k::D);
        let dmin = -yd * f16_at(wb, q4_k::DMIN);
        let (sc, mn) = k4_scales_mins(&wb[q4_k::SCALES..q4_k::SCALES + 12]);
        for (a, p) in acc_m.iter_mut().zip(k_min_lanes(xb, &mn)) {
            *a = dmin.mul_add(int_to_f32(p), *a);
        }
        let qs = &wb[q4_k::QS..q4_k::QS + QK_K / 2];
        let lanes = k_lanes(xb, |e| {
            let (sub, l) = (e / 32, e % 32);
            let q = qs[32 * (sub / 2) + l];
            let v = if sub % 2 == 0 { q & 0x0F } else { q >> 4 };
            (i32::from(v), i32::from(sc[sub]))
        });
        fma_lanes(&mut acc, d, &lanes);
    }
    let m = (acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]);
    hsum_movehl(acc) + m
}

pub(crate) fn dot_q5_k(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (wb, xb) in w.chunks_exact(q5_k::SIZE).zip(x.chunks_exact(q8_k::SIZE)) {
        let yd = f32_at(xb, q8_k::D);
        let d = yd * f16_at(wb, q5_k::D);
        let dmin = -yd * f16_at(wb, q5_k::DMIN);
        let (sc, mn) = k4_scales_mins(&wb[q5_k::SCALES..q5_k::SCALES + 12]);
        let msum: i32 = k_min_lanes(xb, &mn).iter().sum();
        summs = dmin.mul_add(int_to_f32(msum), summs);
        let qs = &wb[q5_k::QS..q5_k::QS + QK_K / 2];
        let qh = &wb[q5_k::QH..q5_k::QH + 32];
        let lanes = k_lanes(xb, |e| {
            let (sub, l) = (e / 32, e % 32);
            let q = qs[32 * (sub / 2) + l];
            let lo = if sub % 2 == 0 { q & 0x0F } else { q >> 4 };
            let hi = (qh[l] >> sub) & 1;
            (i32::from(lo | (hi << 4)), i32::from(sc[sub]))
        });
        fma_lanes(&mut acc, d, &lanes);
    }
    hsum_movehl(acc) + summs
}

/// The -32 offset of `Q6_K` is applied through the `bsums`, as ggml does: lane `k` gets
/// `sum sc * q * x` over the unsigned six-bit `q`, minus
/// `32 * (bsums[2k] * sc[2k] + bsums[2k+1] * sc[2k+1])`.
pub(crate) fn dot_q6_k(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (wb, xb) in w.chunks_exact(q6_k::SIZE).zip(x.chunks_exact(q8_k::SIZE)) {
        let d = f32_at(xb, q8_k::D) * f16_at(wb, q6_k::D);
        let sc = |g: usize| i32::from(i8of(wb[q6_k::SCALES + g]));
        let mut lanes = k_lanes(xb, |e| (i32::from(q6_unsigned(wb, e)), sc(e / 16)));
        for (k, lane) in lanes.iter_mut().enumerate() {
            let bs = |g: usize| i32::from(i16_at(xb, q8_k::BSUMS + 2 * g));
            *lane -= 32 * (bs(2 * k) * sc(2 * k) + bs(2 * k + 1) * sc(2 * k + 1));
        }
        fma_lanes(&mut acc, d, &lanes);
    }
    hsum_movehl(acc)
}

// ------------------------------------------------------------------ repacked Q4_0 and Q4_K
//
// llama.cpp's `gemv`/`gemm` kernels on repacked weights compute one output per lane: the
// exact integer sum of a block (or of a pair of Q4_K sub-blocks for `gemm`) goes through one
// `f32` FMA with `d_w * d_x`; Q4_K's minimum terms go into a second accumulator, subtracted
// at the end.

/// An `i32` to `f32` rounded to nearest even, as `cvtdq2ps` (super-block sums can exceed
/// 2^24).
#[inline(always)]
fn i32_to_f32(v: i32) -> f32 {
    // Round-to-nearest conversion is the intent.
    #[allow(clippy::cast_precision_loss)]
    let f = v as f32;
    f
}

pub(crate) fn dot_q4_0_repack(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(q4_0::SIZE).zip(x.chunks_exact(q8_0::SIZE)) {
        let d = f16_at(wb, q4_0::D) * f16_at(xb, q8_0::D);
        let q = nibbles(&wb[q4_0::QS..]);
        let isum: i32 = q
            .iter()
            .zip(&xb[q8_0::QS..q8_0::QS + QK])
            .map(|(&v, &y)| (v - 8) * i32::from(i8of(y)))
            .sum();
        acc = i32_to_f32(isum).mul_add(d, acc);
    }
    acc
}

/// Per sub-block integer sums of a Q4_K x Q8_K super-block: `sc[s] * sum q * y` and
/// `mins[s] * (bsums[2s] + bsums[2s+1])`, and the two float scales `d_w * d_x`,
/// `dmin_w * d_x`.
#[inline(always)]
fn q4_k_subblocks(wb: &[u8], xb: &[u8]) -> ([i32; 8], [i32; 8], f32, f32) {
    let yd = f32_at(xb, q8_k::D);
    let d = f16_at(wb, q4_k::D) * yd;
    let dmin = f16_at(wb, q4_k::DMIN) * yd;
    let (sc, mn) = k4_scales_mins(&wb[q4_k::SCALES..q4_k::SCALES + 12]);
    let qs = &wb[q4_k::QS..q4_k::QS + QK_K / 2];
    let ys = &xb[q8_k::QS..q8_k::QS + QK_K];
    let mut sums = [0i32; 8];
    let mut mins = [0i32; 8];
    for s in 0..8 {
        let q32 = &qs[32 * (s / 2)..32 * (s / 2) + 32];
        let dot: i32 = q32
            .iter()
            .zip(&ys[32 * s..32 * s + 32])
            .map(|(&q, &y)| {
                let v = if s % 2 == 0 { q & 0x0F } else { q >> 4 };
                i32::from(v) * i32::from(i8of(y))
            })
            .sum();
        sums[s] = i32::from(sc[s]) * dot;
        let bs = |g: usize| i32::from(i16_at(xb, q8_k::BSUMS + 2 * g));
        mins[s] = i32::from(mn[s]) * (bs(2 * s) + bs(2 * s + 1));
    }
    (sums, mins, d, dmin)
}

pub(crate) fn dot_q4_k_gemv(w: &[u8], x: &[u8]) -> f32 {
    let (mut acc, mut acc_m) = (0.0f32, 0.0f32);
    for (wb, xb) in w.chunks_exact(q4_k::SIZE).zip(x.chunks_exact(q8_k::SIZE)) {
        let (sums, mins, d, dmin) = q4_k_subblocks(wb, xb);
        acc = i32_to_f32(sums.iter().sum()).mul_add(d, acc);
        acc_m = i32_to_f32(mins.iter().sum()).mul_add(dmin, acc_m);
    }
    acc - acc_m
}

pub(crate) fn dot_q4_k_gemm(w: &[u8], x: &[u8]) -> f32 {
    let (mut acc, mut acc_m) = (0.0f32, 0.0f32);
    for (wb, xb) in w.chunks_exact(q4_k::SIZE).zip(x.chunks_exact(q8_k::SIZE)) {
        let (sums, mins, d, dmin) = q4_k_subblocks(wb, xb);
        for p in 0..4 {
            acc = i32_to_f32(sums[2 * p] + sums[2 * p + 1]).mul_add(d, acc);
            acc_m = i32_to_f32(mins[2 * p] + mins[2 * p + 1]).mul_add(dmin, acc_m);
        }
    }
    acc - acc_m
}

// ------------------------------------------------------------------------------ float types

/// ggml's `ggml_vec_dot_f32`/`_f16` shape: four 8-lane FMA accumulators over steps of 32,
/// reduced as `((s0 + s2) + (s1 + s3))` then [`hsum_hadd`]. Returns the reduced sum and the
/// number of elements consumed (a multiple of 32).
#[inline(always)]
fn float_dot_main(n: usize, load: impl Fn(usize) -> (f32, f32)) -> (f32, usize) {
    let np = n & !31;
    let mut sum = [[0.0f32; 8]; 4];
    for i in (0..np).step_by(32) {
        for (j, s) in sum.iter_mut().enumerate() {
            for (l, a) in s.iter_mut().enumerate() {
                let (wv, xv) = load(i + 8 * j + l);
                *a = wv.mul_add(xv, *a);
            }
        }
    }
    let mut r = [0.0f32; 8];
    for (l, o) in r.iter_mut().enumerate() {
        let a = sum[0][l] + sum[2][l];
        let b = sum[1][l] + sum[3][l];
        *o = a + b;
    }
    (hsum_hadd(r), np)
}

pub(crate) fn dot_f32(w: &[u8], x: &[u8]) -> f32 {
    let n = (w.len() / 4).min(x.len() / 4);
    let load = |i: usize| (f32_at(w, 4 * i), f32_at(x, 4 * i));
    let (mut sum, np) = float_dot_main(n, load);
    for i in np..n {
        let (wv, xv) = load(i);
        sum = wv.mul_add(xv, sum);
    }
    sum
}

pub(crate) fn dot_f16(w: &[u8], x: &[u8]) -> f32 {
    let n = (w.len() / 2).min(x.len() / 2);
    let load = |i: usize| (f16_at(w, 2 * i), f16_at(x, 2 * i));
    let (main, np) = float_dot_main(n, load);
    let mut sum = f64::from(main);
    for i in np..n {
        let (wv, xv) = load(i);
        sum += f64::from(wv * xv);
    }
    // ggml accumulates in double and stores the float.
    #[allow(clippy::cast_possible_truncation)]
    let s = sum as f32;
    s
}

pub(crate) fn dot_bf16(w: &[u8], x: &[u8]) -> f32 {
    let n = (w.len() / 2).min(x.len() / 2);
    let load = |i: usize| (bf16_at(w, 2 * i), bf16_at(x, 2 * i));
    let np = n & !31;
    let mut c = [[0.0f32; 8]; 4];
    for i in (0..np).step_by(32) {
        for (j, s) in c.iter_mut().enumerate() {
            for (l, a) in s.iter_mut().enumerate() {
                let (wv, xv) = load(i + 8 * j + l);
                *a = wv.mul_add(xv, *a);
            }
        }
    }
    let mut r = [0.0f32; 8];
    for (l, o) in r.iter_mut().enumerate() {
        *o = (c[0][l] + c[2][l]) + (c[1][l] + c[3][l]);
    }
    let mut sum = f64::from(hsum_movehl(r));
    for i in np..n {
        let (wv, xv) = load(i);
        sum += f64::from(wv * xv);
    }
    #[allow(clippy::cast_possible_truncation)]
    let s = sum as f32;
    s
}

/// llamafile's `tinyBLAS` per output: one 8-lane FMA accumulator over steps of 8 (a trailing
/// partial step is not summed: llama.cpp only uses it for `cols % 8 == 0`), then
/// [`hsum_movehl`].
#[inline(always)]
fn tinyblas(n: usize, load: impl Fn(usize) -> (f32, f32)) -> f32 {
    let mut acc = [0.0f32; 8];
    for l in (0..n - n % 8).step_by(8) {
        for (i, a) in acc.iter_mut().enumerate() {
            let (wv, xv) = load(l + i);
            *a = wv.mul_add(xv, *a);
        }
    }
    hsum_movehl(acc)
}

pub(crate) fn dot_f32_tinyblas(w: &[u8], x: &[u8]) -> f32 {
    let n = (w.len() / 4).min(x.len() / 4);
    tinyblas(n, |i| (f32_at(w, 4 * i), f32_at(x, 4 * i)))
}

pub(crate) fn dot_f16_tinyblas(w: &[u8], x: &[u8]) -> f32 {
    let n = (w.len() / 2).min(x.len() / 2);
    tinyblas(n, |i| (f16_at(w, 2 * i), f16_at(x, 2 * i)))
}

pub(crate) fn dot_bf16_tinyblas(w: &[u8], x: &[u8]) -> f32 {
    let n = (w.len() / 2).min(x.len() / 2);
    tinyblas(n, |i| (bf16_at(w, 2 * i), bf16_at(x, 2 * i)))
}
