//! AVX-512 (F, BW, VL, VNNI) dot-product kernels (x86-64), bit-identical to the AVX2 ones.
//!
//! Only the integer work is widened: block sums come from `vpdpbusd`/`vpdpwssd` on 256- or
//! 512-bit vectors, and a 512-bit sum is folded into the eight lanes the AVX2 kernel forms
//! (lane `L` of a 64-byte product holds the same elements, modulo 32, as lane `L % 8` of a
//! 32-byte one; integer sums are exact in any order). The `f32` work is unchanged: the same
//! scales, the same eight-lane FMA per block in the same block order, the same final
//! reduction. Products of unsigned by signed bytes never saturate the 16-bit pairs of
//! `maddubs` for these types, so `vpdpbusd` gives the very lanes `maddubs` + `madd` give.
//!
//! Speed-ups over the AVX2 kernels besides width:
//! - 32-element types are latency-bound on their one FMA chain per row (4 cycles per block):
//!   the *rows* kernels ([`RowsFn`]) run four rows' independent chains at once.
//! - llama.cpp's repacked `Q4_0` gemv sums one `f32` per row: eight rows' block sums are
//!   transposed into one vector and go through one vector FMA (lane `r` = row `r`).
//!
//! Both backends prefetch the weight stream in software (`avx2::prefetch_ahead`; the
//! multi-row kernels here prefetch the next group of rows).
//!
//! Safety scheme as in [`super::avx2`]: `unsafe fn` kernels need the CPU features and
//! in-bounds pointers; the safe wrappers check the features (cached by `std`) on every call
//! and derive block and row counts from the slice lengths.
//!
//! Compiled only with Rust 1.89 or later (`cfg(llmstream_avx512)`, set by `build.rs`), where
//! these intrinsics are stable; the workspace's declared minimum stays lower.

#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use llmstream::gguf::GgmlType;

use super::avx2::{
    self, f16_at, f16_table, f32_at, hsum_i32, hsum_movehl, i32_to_f32, k4_scales_mins_packed,
    k_min_products, load128, load256, nibbles, prefetch_ahead, F16Table,
};
use crate::quant::blocks::{q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, q8_1, q8_k};
use crate::quant::dot::{self, DotFn, Path, RowsFn};

/// Whether this CPU has the features every kernel here needs (AVX2 + FMA + F16C as well).
pub(super) fn available() -> bool {
    avx2::available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// The per-row AVX-512 kernel for weights of type `ty` following `path`, where one is
/// faster than the AVX2 kernel (the K types).
pub(super) fn kernel(ty: GgmlType, path: Path) -> Option<DotFn> {
    Some(match (ty, path) {
        (GgmlType::Q4_K, Path::VecDot) => dot_q4_k,
        (GgmlType::Q4_K, Path::RepackGemv) => dot_q4_k_gemv,
        (GgmlType::Q4_K, Path::RepackGemm) => dot_q4_k_gemm,
        (GgmlType::Q5_K, Path::VecDot) => dot_q5_k,
        (GgmlType::Q6_K, Path::VecDot) => dot_q6_k,
        _ => return None,
    })
}

/// The multi-row AVX-512 kernel for weights of type `ty` following `path`, for the types
/// whose per-row kernel is bound by the latency of its accumulator chain.
pub(super) fn rows_kernel(ty: GgmlType, path: Path) -> Option<RowsFn> {
    Some(match (ty, path) {
        (GgmlType::Q4_0, Path::VecDot) => rows_q4_0,
        (GgmlType::Q4_0, Path::RepackGemv | Path::RepackGemm) => rows_q4_0_repack,
        (GgmlType::Q4_1, Path::VecDot) => rows_q4_1,
        (GgmlType::Q5_0, Path::VecDot) => rows_q5_0,
        (GgmlType::Q5_1, Path::VecDot) => rows_q5_1,
        (GgmlType::Q8_0, Path::VecDot) => rows_q8_0,
        _ => return None,
    })
}

/// A safe wrapper around an `unsafe` per-row kernel `inner(t, nb, w, x)` reading `nb` weight
/// blocks of `$wsize` bytes and `nb` activation blocks of `$xsize` bytes.
macro_rules! safe_kernel {
    ($name:ident, $inner:ident, $scalar:path, $wsize:expr, $xsize:expr) => {
        fn $name(w: &[u8], x: &[u8]) -> f32 {
            if !available() {
                return $scalar(w, x);
            }
            let nb = (w.len() / $wsize).min(x.len() / $xsize);
            // SAFETY: the CPU has every feature of the kernel (checked just above); `w` holds
            // at least `nb * $wsize` bytes and `x` at least `nb * $xsize` bytes, which is
            // all the kernel reads.
            unsafe { $inner(f16_table(), nb, w.as_ptr(), x.as_ptr()) }
        }
    };
}

safe_kernel!(
    dot_q4_k,
    q4_k_vec_dot,
    dot::dot_q4_k,
    q4_k::SIZE,
    q8_k::SIZE
);
safe_kernel!(
    dot_q4_k_gemv,
    q4_k_gemv,
    dot::dot_q4_k_gemv,
    q4_k::SIZE,
    q8_k::SIZE
);
safe_kernel!(
    dot_q4_k_gemm,
    q4_k_gemm,
    dot::dot_q4_k_gemm,
    q4_k::SIZE,
    q8_k::SIZE
);
safe_kernel!(dot_q5_k, q5_k_q8_k, dot::dot_q5_k, q5_k::SIZE, q8_k::SIZE);
safe_kernel!(dot_q6_k, q6_k_q8_k, dot::dot_q6_k, q6_k::SIZE, q8_k::SIZE);

/// A safe wrapper around the multi-row kernel of 32-element type `$t`: `out[r]` = the dot
/// product of row `r` (at byte `r * rb` of `w`) with `x`, for the rows `w` holds.
macro_rules! safe_rows {
    ($name:ident, $t:expr, $scalar:path) => {
        fn $name(w: &[u8], rb: usize, x: &[u8], out: &mut [f32]) {
            let rows = out.len().min(w.len().checked_div(rb).unwrap_or(0));
            if !available() {
                for (r, o) in out[..rows].iter_mut().enumerate() {
                    *o = $scalar(&w[r * rb..(r + 1) * rb], x);
                }
                return;
            }
            let nb = (rb / wsize($t)).min(x.len() / xsize($t));
            // SAFETY: the CPU has every feature of the kernel (checked above); row `r < rows`
            // starts at `r * rb` and the kernel reads `nb * wsize <= rb` bytes of it, so all
            // reads stay below `rows * rb <= w.len()`; it reads `nb * xsize <= x.len()` bytes
            // of `x` and writes `out[..rows]`.
            unsafe {
                rows32::<{ $t }>(
                    f16_table(),
                    nb,
                    rb,
                    rows,
                    w.as_ptr(),
                    x.as_ptr(),
                    out.as_mut_ptr(),
                )
            }
        }
    };
}

safe_rows!(rows_q4_0, T_Q4_0, dot::dot_q4_0);
safe_rows!(rows_q4_1, T_Q4_1, dot::dot_q4_1);
safe_rows!(rows_q5_0, T_Q5_0, dot::dot_q5_0);
safe_rows!(rows_q5_1, T_Q5_1, dot::dot_q5_1);
safe_rows!(rows_q8_0, T_Q8_0, dot::dot_q8_0);
safe_rows!(rows_q4_0_repack, T_Q4_0_REPACK, dot::dot_q4_0_repack);

// ------------------------------------------------------------------------ 32-element blocks

const T_Q4_0: u8 = 0;
const T_Q4_1: u8 = 1;
const T_Q5_0: u8 = 2;
const T_Q5_1: u8 = 3;
const T_Q8_0: u8 = 4;
const T_Q4_0_REPACK: u8 = 5;

/// Weight block bytes of type `t`.
const fn wsize(t: u8) -> usize {
    match t {
        T_Q4_1 => q4_1::SIZE,
        T_Q5_0 => q5_0::SIZE,
        T_Q5_1 => q5_1::SIZE,
        T_Q8_0 => q8_0::SIZE,
        _ => q4_0::SIZE,
    }
}

/// Activation block bytes of type `t` (`Q8_1` for the types with a minimum, else `Q8_0`).
const fn xsize(t: u8) -> usize {
    match t {
        T_Q4_1 | T_Q5_1 => q8_1::SIZE,
        _ => q8_0::SIZE,
    }
}

/// Rows `0..rows` of a 32-element type: groups of four (eight for the repacked `Q4_0`),
/// then one at a time.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; row `r < rows` at `w + r * rb` holds `nb` blocks of type
/// `T`, `x` holds `nb` activation blocks, `out..out+rows` writable.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows32<const T: u8>(
    t: &F16Table,
    nb: usize,
    rb: usize,
    rows: usize,
    w: *const u8,
    x: *const u8,
    out: *mut f32,
) {
    // SAFETY: each call gets rows `r..r + R <= rows` (same contract, shifted).
    unsafe {
        let mut r = 0;
        if T == T_Q4_0_REPACK {
            while r + 8 <= rows {
                q4_0_repack_8(t, nb, rb, w.add(r * rb), x, out.add(r));
                r += 8;
            }
        }
        while r + 4 <= rows {
            rows32_r::<T, 4>(t, nb, rb, w.add(r * rb), x, out.add(r));
            r += 4;
        }
        while r < rows {
            rows32_r::<T, 1>(t, nb, rb, w.add(r * rb), x, out.add(r));
            r += 1;
        }
    }
}

/// The eight integer lanes of block `wb` of type `T` times the activation block `qy` (whose
/// four-byte sums are `ysum`, needed by the types with an offset), as the AVX2 kernel forms
/// them.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `wb` points to one block of type `T`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn lanes32<const T: u8>(wb: *const u8, qy: __m256i, ysum: __m256i) -> __m256i {
    // SAFETY: every load stays inside the block (offsets of the block layouts).
    unsafe {
        let zero = _mm256_setzero_si256();
        match T {
            // (q - 8) y = q y - 8 y, summed over each lane's four bytes
            T_Q4_0 | T_Q4_0_REPACK => _mm256_sub_epi32(
                _mm256_dpbusd_epi32(zero, nibbles(wb.add(q4_0::QS)), qy),
                _mm256_slli_epi32::<3>(ysum),
            ),
            T_Q4_1 => _mm256_dpbusd_epi32(zero, nibbles(wb.add(q4_1::QS)), qy),
            T_Q5_0 => {
                let bits = u32::from_le_bytes(wb.add(q5_0::QH).cast::<[u8; 4]>().read());
                let q = nibbles(wb.add(q5_0::QS));
                let q = _mm256_mask_add_epi8(q, bits, q, _mm256_set1_epi8(16));
                _mm256_sub_epi32(
                    _mm256_dpbusd_epi32(zero, q, qy),
                    _mm256_slli_epi32::<4>(ysum),
                )
            }
            T_Q5_1 => {
                let bits = u32::from_le_bytes(wb.add(q5_1::QH).cast::<[u8; 4]>().read());
                let q = nibbles(wb.add(q5_1::QS));
                let q = _mm256_mask_add_epi8(q, bits, q, _mm256_set1_epi8(16));
                _mm256_dpbusd_epi32(zero, q, qy)
            }
            _ => {
                // |w| times y with w's sign, exactly as the AVX2 kernel (and ggml) forms it
                let qw = load256(wb.add(q8_0::QS));
                _mm256_dpbusd_epi32(zero, _mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qy, qw))
            }
        }
    }
}

/// `R` rows of a 32-element type, their `R` accumulator chains interleaved.
///
/// # Safety
/// As [`rows32`] with `R` rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows32_r<const T: u8, const R: usize>(
    t: &F16Table,
    nb: usize,
    rb: usize,
    w: *const u8,
    x: *const u8,
    out: *mut f32,
) {
    let min = T == T_Q4_1 || T == T_Q5_1;
    let offset = T == T_Q4_0 || T == T_Q4_0_REPACK || T == T_Q5_0;
    // SAFETY: block `i < nb` of row `k < R` is at `w + k * rb + i * wsize(T)`, inside the
    // row; activation block `i` at `x + i * xsize(T)`; `out + k` for `k < R` is writable.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut sacc = [0.0f32; R];
        for i in 0..nb {
            let xb = x.add(i * xsize(T));
            // Q8_0 and Q8_1 both have `d` first; their `qs` offsets differ
            let qy = load256(xb.add(if min { q8_1::QS } else { q8_0::QS }));
            let ysum = if offset {
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), qy)
            } else {
                _mm256_setzero_si256()
            };
            let dx = f16_at(t, xb.add(q8_0::D));
            let sx = if min { f16_at(t, xb.add(q8_1::S)) } else { 0.0 };
            for k in 0..R {
                let wb = w.add(k * rb + i * wsize(T));
                prefetch(wb.wrapping_add(R * rb));
                let d = f16_at(t, wb.add(q4_0::D)) * dx;
                let lanes = lanes32::<T>(wb, qy, ysum);
                if T == T_Q4_0_REPACK {
                    sacc[k] = i32_to_f32(hsum_i32(lanes)).mul_add(d, sacc[k]);
                } else {
                    acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc[k]);
                }
                if min {
                    sacc[k] = f16_at(t, wb.add(q4_1::M)).mul_add(sx, sacc[k]);
                }
            }
        }
        for k in 0..R {
            *out.add(k) = if T == T_Q4_0_REPACK {
                sacc[k]
            } else if min {
                hsum_movehl(acc[k]) + sacc[k]
            } else {
                hsum_movehl(acc[k])
            };
        }
    }
}

/// Eight rows of llama.cpp's repacked `Q4_0` gemv: lane `r` of one vector accumulator is row
/// `r`'s `acc = fma(block sum, d_w * d_x, acc)`.
///
/// # Safety
/// As [`rows32`] with eight rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_0_repack_8(
    t: &F16Table,
    nb: usize,
    rb: usize,
    w: *const u8,
    x: *const u8,
    out: *mut f32,
) {
    // SAFETY: as in `rows32_r` with R = 8; the store writes `out..out+8`.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for i in 0..nb {
            let xb = x.add(i * q8_0::SIZE);
            let qy = load256(xb.add(q8_0::QS));
            let ysum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), qy);
            let dx = f16_at(t, xb.add(q8_0::D));
            let mut l = [_mm256_setzero_si256(); 8];
            let mut d = [0.0f32; 8];
            for k in 0..8 {
                let wb = w.add(k * rb + i * q4_0::SIZE);
                prefetch(wb.wrapping_add(8 * rb));
                d[k] = f16_at(t, wb.add(q4_0::D)) * dx;
                l[k] = lanes32::<T_Q4_0_REPACK>(wb, qy, ysum);
            }
            // transpose-sum: per 128-bit half, [sum of row 0 .. row 3] then rows 4..8
            let a = _mm256_hadd_epi32(_mm256_hadd_epi32(l[0], l[1]), _mm256_hadd_epi32(l[2], l[3]));
            let b = _mm256_hadd_epi32(_mm256_hadd_epi32(l[4], l[5]), _mm256_hadd_epi32(l[6], l[7]));
            let sums = _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(a, b),
                _mm256_permute2x128_si256::<0x31>(a, b),
            );
            let dv = _mm256_loadu_ps(d.as_ptr());
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), dv, acc);
        }
        _mm256_storeu_ps(out, acc);
    }
}

/// Prefetches the cache line of `p` (the same block of the next group of rows, in the
/// multi-row kernels).
///
/// # Safety
/// The features of the kernels (SSE is enough).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(unused_unsafe)]
unsafe fn prefetch(p: *const u8) {
    // SAFETY: `prefetcht0` reads nothing architecturally and never faults; the address may
    // lie past the weights (it is only computed with `wrapping_add`, never dereferenced).
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) };
}

// ---------------------------------------------------------------------------------- K types

/// The eight integer lanes (as the AVX2 kernel forms them) of a 512-bit lane vector.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(unused_unsafe)]
unsafe fn fold(v: __m512i) -> __m256i {
    // SAFETY: register-only intrinsics; the caller guarantees the features.
    unsafe { _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v)) }
}

/// 64 bytes: 32 at `lo` then 32 at `hi`.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `lo..lo+32` and `hi..hi+32` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn load_pair(lo: *const u8, hi: *const u8) -> __m512i {
    // SAFETY: the caller guarantees both 32-byte ranges.
    unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(load256(lo)), load256(hi)) }
}

/// `vpermw` indices putting 16-bit element `a` in elements 0..16 and `b` in 16..32.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(unused_unsafe)]
unsafe fn pick2(a: i16, b: i16) -> __m512i {
    // SAFETY: register-only intrinsics.
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi16(a)),
            _mm256_set1_epi16(b),
        )
    }
}

/// `vpermw` indices putting 16-bit elements `a..a+4` in eight elements each.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(unused_unsafe)]
unsafe fn pick4(a: i16) -> __m512i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let lo = _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_set1_epi16(a)),
            _mm_set1_epi16(a + 1),
        );
        let hi = _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_set1_epi16(a + 2)),
            _mm_set1_epi16(a + 3),
        );
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }
}

/// Bytes `1 << a` (low 32 bytes) and `1 << b` (high 32 bytes), `a, b < 8`.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(unused_unsafe)]
unsafe fn bits2(a: usize, b: usize) -> __m512i {
    let byte = |s: usize| i8::from_le_bytes([1u8 << (s & 7)]);
    // SAFETY: register-only intrinsics.
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi8(byte(a))),
            _mm256_set1_epi8(byte(b)),
        )
    }
}

/// Scaled integer sums of a Q4_K (`QH = false`) or Q5_K super-block with its Q8_K block:
/// `[p0, p1]` where lanes 0..8 of `pj` hold sub-block pair `2j` (sub-blocks `4j`, `4j+1`) and
/// lanes 8..16 pair `2j+1`, each lane over the elements the AVX2 lane of that index takes,
/// times the sub-block scale. Also returns the widened scales and mins (AVX2's
/// `k4_scales_mins_16`).
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `wb` points to one Q4_K block (`QH = false`) or Q5_K
/// block, `xb` to one Q8_K block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn k4_pairs<const QH: bool>(wb: *const u8, xb: *const u8) -> ([__m512i; 2], __m256i) {
    // SAFETY: the loads below stay inside the blocks' `scales`, `qs`, `qh` fields.
    unsafe {
        let (scales_at, qs_at) = if QH {
            (q5_k::SCALES, q5_k::QS)
        } else {
            (q4_k::SCALES, q4_k::QS)
        };
        let packed = k4_scales_mins_packed(wb.add(scales_at).cast::<[u8; 12]>().read());
        let ms = _mm256_cvtepu8_epi16(load128(packed.as_ptr()));
        let ms512 = _mm512_castsi256_si512(ms);
        let m4 = _mm512_set1_epi8(0x0F);
        let qh = if QH {
            _mm512_broadcast_i64x4(load256(wb.add(q5_k::QH)))
        } else {
            _mm512_setzero_si512()
        };
        let y = xb.add(q8_k::QS);
        let mut out = [_mm512_setzero_si512(); 2];
        for (j, o) in out.iter_mut().enumerate() {
            // bytes 64j..64j+64: low nibbles are sub-blocks 4j, 4j+2; high ones 4j+1, 4j+3
            let q = _mm512_loadu_si512(wb.add(qs_at + 64 * j).cast());
            let mut lo = _mm512_and_si512(q, m4);
            let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
            if QH {
                // the fifth bit of sub-block s is bit s of the qh byte
                let sixteen = _mm512_set1_epi8(16);
                let k_lo = _mm512_test_epi8_mask(qh, bits2(4 * j, 4 * j + 2));
                let k_hi = _mm512_test_epi8_mask(qh, bits2(4 * j + 1, 4 * j + 3));
                lo = _mm512_mask_add_epi8(lo, k_lo, lo, sixteen);
                hi = _mm512_mask_add_epi8(hi, k_hi, hi, sixteen);
            }
            let y_lo = load_pair(y.add(128 * j), y.add(128 * j + 64));
            let y_hi = load_pair(y.add(128 * j + 32), y.add(128 * j + 96));
            // j < 2, so these indices are below 8
            #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
            let s = 4 * j as i16;
            let sc_lo = _mm512_permutexvar_epi16(pick2(s, s + 2), ms512);
            let sc_hi = _mm512_permutexvar_epi16(pick2(s + 1, s + 3), ms512);
            let acc = _mm512_dpwssd_epi32(
                _mm512_setzero_si512(),
                _mm512_maddubs_epi16(lo, y_lo),
                sc_lo,
            );
            *o = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(hi, y_hi), sc_hi);
        }
        (out, ms)
    }
}

/// `ggml_vec_dot_q4_K_q8_K`.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `w` points to `nb` Q4_K blocks, `x` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_k_vec_dot(t: &F16Table, nb: usize, w: *const u8, x: *const u8) -> f32 {
    // SAFETY: same contract.
    unsafe { q4_k_q8_k::<{ Q4K_VEC_DOT }>(t, nb, w, x) }
}

/// llama.cpp's repacked `ggml_gemv_q4_K_8x8_q8_K`.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `w` points to `nb` Q4_K blocks, `x` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_k_gemv(t: &F16Table, nb: usize, w: *const u8, x: *const u8) -> f32 {
    // SAFETY: same contract.
    unsafe { q4_k_q8_k::<{ Q4K_GEMV }>(t, nb, w, x) }
}

/// llama.cpp's repacked `ggml_gemm_q4_K_8x8_q8_K`.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `w` points to `nb` Q4_K blocks, `x` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_k_gemm(t: &F16Table, nb: usize, w: *const u8, x: *const u8) -> f32 {
    // SAFETY: same contract.
    unsafe { q4_k_q8_k::<{ Q4K_GEMM }>(t, nb, w, x) }
}

const Q4K_VEC_DOT: u8 = 0;
const Q4K_GEMV: u8 = 1;
const Q4K_GEMM: u8 = 2;

/// Q4_K x Q8_K with the float accumulation of `MODE`, as the AVX2 `q4_k_q8_k`.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `w` points to `nb` Q4_K blocks, `x` to `nb` Q8_K blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_k_q8_k<const MODE: u8>(t: &F16Table, nb: usize, w: *const u8, x: *const u8) -> f32 {
    // SAFETY: all reads inside block `i < nb` of `w` (144 bytes) or `x` (292 bytes).
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        let (mut acc_s, mut acc_ms) = (0.0f32, 0.0f32);
        for i in 0..nb {
            let wb = w.add(i * q4_k::SIZE);
            prefetch_ahead(wb, 3);
            let xb = x.add(i * q8_k::SIZE);
            let yd = f32_at(xb.add(q8_k::D));
            let d = yd * f16_at(t, wb.add(q4_k::D));
            let dmin_w = f16_at(t, wb.add(q4_k::DMIN));
            let ([p0, p1], ms) = k4_pairs::<false>(wb, xb);
            let prod = k_min_products(xb.add(q8_k::BSUMS), ms);
            match MODE {
                Q4K_VEC_DOT => {
                    let dmin = -yd * dmin_w;
                    acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
                    let sumi = fold(_mm512_add_epi32(p0, p1));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                }
                Q4K_GEMV => {
                    let mut mins = [0i32; 4];
                    _mm_storeu_si128(mins.as_mut_ptr().cast::<__m128i>(), prod);
                    let dm = f16_at(t, wb.add(q4_k::D)) * yd;
                    let isum = _mm512_reduce_add_epi32(_mm512_add_epi32(p0, p1));
                    acc_s = i32_to_f32(isum).mul_add(dm, acc_s);
                    let msum = mins[0] + mins[1] + mins[2] + mins[3];
                    acc_ms = i32_to_f32(msum).mul_add(dmin_w * yd, acc_ms);
                }
                _ => {
                    let mut mins = [0i32; 4];
                    _mm_storeu_si128(mins.as_mut_ptr().cast::<__m128i>(), prod);
                    let dm = f16_at(t, wb.add(q4_k::D)) * yd;
                    for (p, &min_p) in mins.iter().enumerate() {
                        let v = if p < 2 { p0 } else { p1 };
                        let half = if p % 2 == 0 {
                            _mm512_castsi512_si256(v)
                        } else {
                            _mm512_extracti64x4_epi64::<1>(v)
                        };
                        acc_s = i32_to_f32(hsum_i32(half)).mul_add(dm, acc_s);
                        acc_ms = i32_to_f32(min_p).mul_add(dmin_w * yd, acc_ms);
                    }
                }
            }
        }
        if MODE == Q4K_VEC_DOT {
            let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
            let m = _mm_add_ss(m, _mm_movehdup_ps(m));
            hsum_movehl(acc) + _mm_cvtss_f32(m)
        } else {
            acc_s - acc_ms
        }
    }
}

/// `ggml_vec_dot_q5_K_q8_K`.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `w` points to `nb` Q5_K blocks, `x` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_k_q8_k(t: &F16Table, nb: usize, w: *const u8, x: *const u8) -> f32 {
    // SAFETY: all reads inside block `i < nb` of `w` (176 bytes) or `x` (292 bytes).
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0.0f32;
        for i in 0..nb {
            let wb = w.add(i * q5_k::SIZE);
            prefetch_ahead(wb, 3);
            let xb = x.add(i * q8_k::SIZE);
            let yd = f32_at(xb.add(q8_k::D));
            let d = yd * f16_at(t, wb.add(q5_k::D));
            let dmin = -yd * f16_at(t, wb.add(q5_k::DMIN));
            let ([p0, p1], ms) = k4_pairs::<true>(wb, xb);
            let prod = k_min_products(xb.add(q8_k::BSUMS), ms);
            let mut p = [0i32; 4];
            _mm_storeu_si128(p.as_mut_ptr().cast::<__m128i>(), prod);
            let msum = p[0] + p[1] + p[2] + p[3];
            summs = dmin.mul_add(crate::quant::q8::int_to_f32(msum), summs);
            let sumi = fold(_mm512_add_epi32(p0, p1));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_movehl(acc) + summs
    }
}

/// `ggml_vec_dot_q6_K_q8_K`: per half super-block, 64 `ql` bytes and 32 `qh` bytes make the
/// 128 six-bit values as two 64-byte vectors matching contiguous activations.
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `w` points to `nb` Q6_K blocks, `x` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6_k_q8_k(t: &F16Table, nb: usize, w: *const u8, x: *const u8) -> f32 {
    // SAFETY: all reads inside block `i < nb` of `w` (210 bytes) or `x` (292 bytes).
    unsafe {
        let m4 = _mm512_set1_epi8(0x0F);
        let m3 = _mm512_set1_epi8(3);
        // scale indices of (half h, vector z): 16-element groups 8h + 4z .. 8h + 4z + 4
        let idx = [pick4(0), pick4(4), pick4(8), pick4(12)];
        let mut acc = _mm256_setzero_ps();
        for i in 0..nb {
            let wb = w.add(i * q6_k::SIZE);
            prefetch_ahead(wb, 4);
            let xb = x.add(i * q8_k::SIZE);
            let d = f32_at(xb.add(q8_k::D)) * f16_at(t, wb.add(q6_k::D));
            let scales = load128(wb.add(q6_k::SCALES));
            let sc16 = _mm256_cvtepi8_epi16(scales);
            let sc512 = _mm512_castsi256_si512(sc16);
            // the -32 offset: 32 * (bsums[2k] * sc[2k] + bsums[2k+1] * sc[2k+1]) per lane
            let offset =
                _mm256_slli_epi32::<5>(_mm256_madd_epi16(load256(xb.add(q8_k::BSUMS)), sc16));
            let mut sumi = _mm512_setzero_si512();
            for h in 0..2 {
                // [ql0 | ql1] and [qh | qh >> 2]: values of element groups (0 | 1), then
                // (2 | 3) with [qh >> 4 | qh >> 6]
                let ql = _mm512_loadu_si512(wb.add(q6_k::QL + 64 * h).cast());
                let qh = load256(wb.add(q6_k::QH + 32 * h));
                let qh =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
                let z0 = _mm512_or_si512(
                    _mm512_and_si512(ql, m4),
                    _mm512_slli_epi16::<4>(_mm512_and_si512(qh, m3)),
                );
                let z1 = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                    _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srli_epi16::<4>(qh), m3)),
                );
                let y0 = _mm512_loadu_si512(xb.add(q8_k::QS + 128 * h).cast());
                let y1 = _mm512_loadu_si512(xb.add(q8_k::QS + 128 * h + 64).cast());
                sumi = _mm512_dpwssd_epi32(
                    sumi,
                    _mm512_maddubs_epi16(z0, y0),
                    _mm512_permutexvar_epi16(idx[2 * h], sc512),
                );
                sumi = _mm512_dpwssd_epi32(
                    sumi,
                    _mm512_maddubs_epi16(z1, y1),
                    _mm512_permutexvar_epi16(idx[2 * h + 1], sc512),
                );
            }
            let sumi = _mm256_sub_epi32(fold(sumi), offset);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_movehl(acc)
    }
}
