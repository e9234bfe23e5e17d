//! Quantization of activation vectors to a weight type's `vec_dot_type`, as llama.cpp does
//! before every quantized matmul.
//!
//! The results are byte-identical to ggml's CPU backend built for x86-64 with AVX2, which is
//! what the reference llama.cpp runs (checked against `from_float` of `libggml-cpu` itself in
//! the fixtures):
//! - `Q8_0` / `Q8_1` (ggml's AVX path of `quantize_row_q8_0`/`_q8_1`): `amax = max |x|`,
//!   `d = amax / 127`, **`id = 127 / amax`** (not `1 / d`), `q = round_half_even(x * id)`
//!   (`_mm256_round_ps` to nearest), stored `d` rounded to `f16`; for `Q8_1`,
//!   `s = f16(d * sum(q))`. ggml's portable C reference instead uses `1 / d` and `roundf`
//!   (ties away from zero), which differs on a few elements per million.
//! - `Q8_K` (`quantize_row_q8_K_ref`, used by every x86 build): `max` is the first element of
//!   largest magnitude (sign kept), `iscale = -127 / max`,
//!   `q = min(127, round_half_even(iscale * x))` with the product rounded to `f32` first,
//!   `bsums` the sums of 16, `d = 1 / iscale` stored as `f32`.
//! - `F16` / `BF16`: round to nearest even (`BF16` NaNs made quiet), `F32`: copied.
//!
//! This is one scalar implementation shared by the scalar and AVX2 dot-product paths, so both
//! paths see the same integers. It costs O(cols) per activation row, negligible next to the
//! O(rows * cols) dot products.

use half::f16;
use llmstream::gguf::GgmlType;

use super::blocks::{q8_0, q8_1, q8_k, QK, QK_K};
use super::{layout, QuantError};

/// Bytes taken by `n` activations quantized to `ty`.
pub fn activation_bytes(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    check_activation_type(ty)?;
    let (block, size) = layout(ty, "quantize_activations")?;
    if n % block != 0 {
        return Err(QuantError::NotWholeBlocks {
            what: "activations",
            ty,
            n,
            block,
        });
    }
    (n / block).checked_mul(size).ok_or(QuantError::Overflow {
        what: "activation bytes",
    })
}

fn check_activation_type(ty: GgmlType) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32
        | GgmlType::F16
        | GgmlType::BF16
        | GgmlType::Q8_0
        | GgmlType::Q8_1
        | GgmlType::Q8_K => Ok(()),
        _ => Err(QuantError::Unsupported {
            ty,
            op: "activation quantization",
        }),
    }
}

/// Quantizes the activations `x` to `ty` (one of `F32`, `F16`, `BF16`, `Q8_0`, `Q8_1`,
/// `Q8_K`) into `out`, which must be exactly [`activation_bytes`]`(ty, x.len())` long.
pub fn quantize_activations(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    let expected = activation_bytes(ty, x.len())?;
    if out.len() != expected {
        return Err(QuantError::bytes(
            "quantize_activations output",
            expected,
            out.len(),
        ));
    }
    match ty {
        GgmlType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => {
            for (o, xb) in out.chunks_exact_mut(q8_0::SIZE).zip(x.chunks_exact(QK)) {
                let (d, _sum) = quantize_block_q8(xb, &mut o[q8_0::QS..q8_0::QS + QK]);
                o[q8_0::D..q8_0::D + 2].copy_from_slice(&f16_bytes(d));
            }
        }
        GgmlType::Q8_1 => {
            for (o, xb) in out.chunks_exact_mut(q8_1::SIZE).zip(x.chunks_exact(QK)) {
                let (d, sum) = quantize_block_q8(xb, &mut o[q8_1::QS..q8_1::QS + QK]);
                o[q8_1::D..q8_1::D + 2].copy_from_slice(&f16_bytes(d));
                o[q8_1::S..q8_1::S + 2].copy_from_slice(&f16_bytes(d * int_to_f32(sum)));
            }
        }
        GgmlType::Q8_K => {
            for (o, xb) in out.chunks_exact_mut(q8_k::SIZE).zip(x.chunks_exact(QK_K)) {
                quantize_block_q8_k(xb, o);
            }
        }
        _ => unreachable_type(ty)?,
    }
    Ok(())
}

fn unreachable_type(ty: GgmlType) -> Result<(), QuantError> {
    Err(QuantError::Unsupported {
        ty,
        op: "activation quantization",
    })
}

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_bits().to_le_bytes()
}

/// `f32` to `bf16` bits as ggml's `GGML_FP32_TO_BF16`: NaN made quiet, else round to nearest
/// even.
pub(crate) fn f32_to_bf16_bits(v: f32) -> u16 {
    let u = v.to_bits();
    let r = if u & 0x7fff_ffff > 0x7f80_0000 {
        (u >> 16) | 64
    } else {
        (u + (0x7fff + ((u >> 16) & 1))) >> 16
    };
    // The shift leaves at most 16 significant bits (and `u >> 16 | 64` too).
    #[allow(clippy::cast_possible_truncation)]
    let bits = r as u16;
    bits
}

/// An `i32` of magnitude below 2^24 as `f32` (exact).
#[inline(always)]
pub(crate) fn int_to_f32(v: i32) -> f32 {
    // Callers pass sums of at most a few thousand terms of magnitude <= 2^15, far below 2^24,
    // so the conversion is exact, like the `cvtdq2ps` it stands for.
    #[allow(clippy::cast_precision_loss)]
    let f = v as f32;
    f
}

/// `_mm256_cvtps_epi32` then the saturating packs to `i8` that ggml applies: a value outside
/// the `i32` range or NaN becomes `i32::MIN`, then saturates to -128.
#[inline(always)]
fn cvt_sat_i8(v: f32) -> (i8, i32) {
    // `v` is already integral (rounded); the range check mirrors the hardware conversion.
    let i = if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        // In range and integral: exact.
        #[allow(clippy::cast_possible_truncation)]
        let i = v as i32;
        i
    };
    let clamped = i.clamp(i32::from(i8::MIN), i32::from(i8::MAX));
    // Clamped to the i8 range just above.
    #[allow(clippy::cast_possible_truncation)]
    let q = clamped as i8;
    (q, i)
}

/// One `Q8_0`/`Q8_1` block: writes the 32 quants and returns `(d, sum of the quants)`.
fn quantize_block_q8(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |m, v| {
        let a = v.abs();
        // `_mm256_max_ps(m, a)` keeps `a` unless `m > a`.
        if m > a {
            m
        } else {
            a
        }
    });
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let (qi, wide) = cvt_sat_i8((v * id).round_ties_even());
        *q = qi.to_ne_bytes()[0];
        sum = sum.wrapping_add(wide);
    }
    (d, sum)
}

/// `round_half_even(v)` for `|v| < 2^22`, computed like ggml's `nearest_int` (add 1.5 * 2^23
/// and read the mantissa), so that out-of-range inputs wrap the same way.
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    let t = (v + 12_582_912.0).to_bits();
    let m = i32::from_ne_bytes((t & 0x007f_ffff).to_ne_bytes());
    m - 0x0040_0000
}

/// One `Q8_K` block (`x.len() == 256`, `o.len() == 292`).
fn quantize_block_q8_k(x: &[f32], o: &mut [u8]) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let a = v.abs();
        if a > amax {
            amax = a;
            max = v;
        }
    }
    if amax == 0.0 {
        o.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    let qs = &mut o[q8_k::QS..q8_k::QS + QK_K];
    for (q, &v) in qs.iter_mut().zip(x) {
        let n = nearest_int(iscale * v).min(127);
        // ggml stores `MIN(127, v)` into an `int8_t`: the conversion keeps the low byte.
        *q = n.to_le_bytes()[0];
    }
    let mut bsums = [0i16; QK_K / 16];
    for (s, g) in bsums
        .iter_mut()
        .zip(o[q8_k::QS..q8_k::QS + QK_K].chunks_exact(16))
    {
        let total: i32 = g.iter().map(|&b| i32::from(super::blocks::i8of(b))).sum();
        // 16 values in -128..=127: |total| <= 2048.
        #[allow(clippy::cast_possible_truncation)]
        let t = total as i16;
        *s = t;
    }
    for (dst, s) in o[q8_k::BSUMS..q8_k::BSUMS + 32]
        .chunks_exact_mut(2)
        .zip(bsums)
    {
        dst.copy_from_slice(&s.to_le_bytes());
    }
    let d = 1.0 / iscale;
    o[q8_k::D..q8_k::D + 4].copy_from_slice(&d.to_le_bytes());
}
