//! Dequantization of ggml blocks to `f32`.
//!
//! Each formula is evaluated in the same order, with the same `f32` roundings, as ggml's
//! `dequantize_row_*` and the `gguf` Python package's `dequantize` (for example `Q4_K` computes
//! `(d * sc) * q - (dmin * m)`), so results are bit-identical to both.

use llmstream::gguf::GgmlType;

use super::blocks::{
    bf16_at, f16_at, f32_at, i8of, k4_scales_mins, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0,
    q8_1, q8_k, QK, QK_K,
};
use super::{layout, QuantError};

/// Dequantizes `out.len()` elements of type `ty` from `bytes` into `out`.
///
/// Works on one row or a whole tensor alike: `out.len()` must be a whole number of blocks and
/// `bytes` exactly the bytes of that many elements.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let (block, size) = layout(ty, "dequantize")?;
    let n = out.len();
    if n % block != 0 {
        return Err(QuantError::NotWholeBlocks {
            what: "dequantize output",
            ty,
            n,
            block,
        });
    }
    let expected = (n / block)
        .checked_mul(size)
        .ok_or(QuantError::Overflow { what: "dequantize" })?;
    if bytes.len() != expected {
        return Err(QuantError::bytes("dequantize input", expected, bytes.len()));
    }
    let blocks = bytes.chunks_exact(size).zip(out.chunks_exact_mut(block));
    match ty {
        GgmlType::F32 => blocks.for_each(|(b, y)| y[0] = f32_at(b, 0)),
        GgmlType::F16 => blocks.for_each(|(b, y)| y[0] = f16_at(b, 0)),
        GgmlType::BF16 => blocks.for_each(|(b, y)| y[0] = bf16_at(b, 0)),
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| block_q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| block_q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| block_q5_0(b, y)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| block_q5_1(b, y)),
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| block_q8_0(b, y)),
        GgmlType::Q8_1 => blocks.for_each(|(b, y)| block_q8_1(b, y)),
        GgmlType::Q4_K => blocks.for_each(|(b, y)| block_q4_k(b, y)),
        GgmlType::Q5_K => blocks.for_each(|(b, y)| block_q5_k(b, y)),
        GgmlType::Q6_K => blocks.for_each(|(b, y)| block_q6_k(b, y)),
        GgmlType::Q8_K => blocks.for_each(|(b, y)| block_q8_k(b, y)),
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                op: "dequantize",
            })
        }
    }
    Ok(())
}

fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, q4_0::D);
    let qs = &b[q4_0::QS..q4_0::QS + QK / 2];
    let (lo, hi) = y.split_at_mut(QK / 2);
    for ((&q, l), h) in qs.iter().zip(lo).zip(hi) {
        *l = d * f32::from(i16::from(q & 0x0F) - 8);
        *h = d * f32::from(i16::from(q >> 4) - 8);
    }
}

fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, q4_1::D);
    let m = f16_at(b, q4_1::M);
    let qs = &b[q4_1::QS..q4_1::QS + QK / 2];
    let (lo, hi) = y.split_at_mut(QK / 2);
    for ((&q, l), h) in qs.iter().zip(lo).zip(hi) {
        *l = d * f32::from(q & 0x0F) + m;
        *h = d * f32::from(q >> 4) + m;
    }
}

/// The 32 five-bit values of a `Q5_0`/`Q5_1` block, unsigned (0..32).
fn q5_values(qh: &[u8], qs: &[u8]) -> [u8; QK] {
    let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut v = [0u8; QK];
    for (j, &q) in qs[..QK / 2].iter().enumerate() {
        let h0 = u8::from(bits >> j & 1 == 1) << 4;
        let h1 = u8::from(bits >> (j + QK / 2) & 1 == 1) << 4;
        v[j] = (q & 0x0F) | h0;
        v[j + QK / 2] = (q >> 4) | h1;
    }
    v
}

fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, q5_0::D);
    let v = q5_values(&b[q5_0::QH..], &b[q5_0::QS..]);
    for (o, &q) in y.iter_mut().zip(&v) {
        *o = d * f32::from(i16::from(q) - 16);
    }
}

fn block_q5_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, q5_1::D);
    let m = f16_at(b, q5_1::M);
    let v = q5_values(&b[q5_1::QH..], &b[q5_1::QS..]);
    for (o, &q) in y.iter_mut().zip(&v) {
        *o = d * f32::from(q) + m;
    }
}

fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, q8_0::D);
    for (o, &q) in y.iter_mut().zip(&b[q8_0::QS..q8_0::QS + QK]) {
        *o = d * f32::from(i8of(q));
    }
}

fn block_q8_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, q8_1::D);
    for (o, &q) in y.iter_mut().zip(&b[q8_1::QS..q8_1::QS + QK]) {
        *o = d * f32::from(i8of(q));
    }
}

fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, q4_k::D);
    let dmin = f16_at(b, q4_k::DMIN);
    let (sc, mn) = k4_scales_mins(&b[q4_k::SCALES..q4_k::SCALES + 12]);
    let qs = &b[q4_k::QS..q4_k::QS + QK_K / 2];
    for (j, (q32, y64)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (d1, m1) = (d * f32::from(sc[2 * j]), dmin * f32::from(mn[2 * j]));
        let (d2, m2) = (
            d * f32::from(sc[2 * j + 1]),
            dmin * f32::from(mn[2 * j + 1]),
        );
        let (lo, hi) = y64.split_at_mut(32);
        for ((&q, l), h) in q32.iter().zip(lo).zip(hi) {
            *l = d1 * f32::from(q & 0x0F) - m1;
            *h = d2 * f32::from(q >> 4) - m2;
        }
    }
}

fn block_q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, q5_k::D);
    let dmin = f16_at(b, q5_k::DMIN);
    let (sc, mn) = k4_scales_mins(&b[q5_k::SCALES..q5_k::SCALES + 12]);
    let qh = &b[q5_k::QH..q5_k::QH + 32];
    let qs = &b[q5_k::QS..q5_k::QS + QK_K / 2];
    for (j, (q32, y64)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (d1, m1) = (d * f32::from(sc[2 * j]), dmin * f32::from(mn[2 * j]));
        let (d2, m2) = (
            d * f32::from(sc[2 * j + 1]),
            dmin * f32::from(mn[2 * j + 1]),
        );
        let (lo, hi) = y64.split_at_mut(32);
        for ((&q, &h), (yl, yh)) in q32.iter().zip(qh).zip(lo.iter_mut().zip(hi)) {
            let b_lo = ((h >> (2 * j)) & 1) << 4;
            let b_hi = ((h >> (2 * j + 1)) & 1) << 4;
            *yl = d1 * f32::from((q & 0x0F) | b_lo) - m1;
            *yh = d2 * f32::from((q >> 4) | b_hi) - m2;
        }
    }
}

fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, q6_k::D);
    for (e, o) in y.iter_mut().enumerate().take(QK_K) {
        let sc = i8of(b[q6_k::SCALES + e / 16]);
        *o = d * f32::from(sc) * f32::from(q6_value(b, e));
    }
}

/// Element `e` (0..256) of a `Q6_K` block, in -32..32.
#[inline(always)]
fn q6_value(b: &[u8], e: usize) -> i8 {
    i8of(q6_unsigned(b, e)) - 32
}

/// The stored six bits of element `e` (0..256) of a `Q6_K` block, in 0..64.
#[inline(always)]
pub(crate) fn q6_unsigned(b: &[u8], e: usize) -> u8 {
    let (h, m, l) = (e / 128, (e % 128) / 32, e % 32);
    let ql = b[q6_k::QL + 64 * h + 32 * (m & 1) + l];
    let low = if m < 2 { ql & 0x0F } else { ql >> 4 };
    let high = (b[q6_k::QH + 32 * h + l] >> (2 * m)) & 3;
    low | (high << 4)
}

fn block_q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32_at(b, q8_k::D);
    for (o, &q) in y.iter_mut().zip(&b[q8_k::QS..q8_k::QS + QK_K]) {
        *o = d * f32::from(i8of(q));
    }
}
