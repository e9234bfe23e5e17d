//! Block layouts of the ggml types handled here, as byte offsets inside one block.
//!
//! All fields are little-endian; `f16` fields are IEEE half floats. The layouts are those of
//! ggml's `ggml-common.h` (checked field by field against it and against the `gguf` Python
//! package's dequantizers through the fixtures in `tests/fixtures/quant/`).

use half::{bf16, f16};

/// Elements per block of the 32-element types (Q4_0 ... Q8_1).
pub const QK: usize = 32;
/// Elements per super-block of the K types.
pub const QK_K: usize = 256;

/// `Q4_0`: `d: f16, qs: [u8; 16]`; element `i < 16` is the low nibble of `qs[i]`, element
/// `i + 16` its high nibble; value `d * (q - 8)`.
pub mod q4_0 {
    pub const SIZE: usize = 18;
    pub const D: usize = 0;
    pub const QS: usize = 2;
}

/// `Q4_1`: `d: f16, m: f16, qs: [u8; 16]`; value `d * q + m`.
pub mod q4_1 {
    pub const SIZE: usize = 20;
    pub const D: usize = 0;
    pub const M: usize = 2;
    pub const QS: usize = 4;
}

/// `Q5_0`: `d: f16, qh: [u8; 4], qs: [u8; 16]`; bit `i` of the little-endian `qh` word is the
/// fifth bit of element `i`; value `d * (q - 16)`.
pub mod q5_0 {
    pub const SIZE: usize = 22;
    pub const D: usize = 0;
    pub const QH: usize = 2;
    pub const QS: usize = 6;
}

/// `Q5_1`: `d: f16, m: f16, qh: [u8; 4], qs: [u8; 16]`; value `d * q + m`.
pub mod q5_1 {
    pub const SIZE: usize = 24;
    pub const D: usize = 0;
    pub const M: usize = 2;
    pub const QH: usize = 4;
    pub const QS: usize = 8;
}

/// `Q8_0`: `d: f16, qs: [i8; 32]`; value `d * q`.
pub mod q8_0 {
    pub const SIZE: usize = 34;
    pub const D: usize = 0;
    pub const QS: usize = 2;
}

/// `Q8_1` (activations only): `d: f16, s: f16, qs: [i8; 32]` with `s = d * sum(qs)`.
pub mod q8_1 {
    pub const SIZE: usize = 36;
    pub const D: usize = 0;
    pub const S: usize = 2;
    pub const QS: usize = 4;
}

/// `Q4_K`: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`. Eight sub-blocks of 32 with
/// 6-bit scales and mins packed in `scales`; sub-block `2j` is the low nibbles of
/// `qs[32j..32j+32]`, sub-block `2j+1` their high nibbles; value `d*sc*q - dmin*m`.
pub mod q4_k {
    pub const SIZE: usize = 144;
    pub const D: usize = 0;
    pub const DMIN: usize = 2;
    pub const SCALES: usize = 4;
    pub const QS: usize = 16;
}

/// `Q5_K`: `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`; as `Q4_K`
/// plus a fifth bit: bit `s` of `qh[l]` for element `l` of sub-block `s`.
pub mod q5_k {
    pub const SIZE: usize = 176;
    pub const D: usize = 0;
    pub const DMIN: usize = 2;
    pub const SCALES: usize = 4;
    pub const QH: usize = 16;
    pub const QS: usize = 48;
}

/// `Q6_K`: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`. Two halves of 128; in
/// half `h`, quarter `m` (32 elements), element `l`: low four bits from
/// `ql[64h + 32(m&1) + l]` (low nibble for `m < 2`, else high), two high bits
/// `(qh[32h + l] >> 2m) & 3`; value `d * scales[e/16] * (q - 32)`.
pub mod q6_k {
    pub const SIZE: usize = 210;
    pub const QL: usize = 0;
    pub const QH: usize = 128;
    pub const SCALES: usize = 192;
    pub const D: usize = 208;
}

/// `Q8_K` (activations only): `d: f32, qs: [i8; 256], bsums: [i16; 16]` where `bsums[g]` is
/// the sum of `qs[16g..16g+16]`.
pub mod q8_k {
    pub const SIZE: usize = 292;
    pub const D: usize = 0;
    pub const QS: usize = 4;
    pub const BSUMS: usize = 260;
}

/// The `f16` at `off`, widened exactly to `f32`.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// The `bf16` at `off`, widened exactly to `f32`.
#[inline(always)]
pub(crate) fn bf16_at(b: &[u8], off: usize) -> f32 {
    bf16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// The `f32` at `off`.
#[inline(always)]
pub(crate) fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// A byte reinterpreted as `i8` (two's complement).
#[inline(always)]
pub(crate) fn i8of(b: u8) -> i8 {
    i8::from_ne_bytes([b])
}

/// The `i16` at `off`.
#[inline(always)]
pub(crate) fn i16_at(b: &[u8], off: usize) -> i16 {
    i16::from_le_bytes([b[off], b[off + 1]])
}

/// The eight 6-bit scales and eight 6-bit mins packed in the 12 `scales` bytes of a
/// `Q4_K`/`Q5_K` block: bytes 0..4 hold scales 0..3 (low 6 bits), bytes 4..8 mins 0..3;
/// scales and mins 4..7 take their low four bits from the nibbles of bytes 8..12 and their
/// top two bits from the top bits of bytes 0..4 (scales) and 4..8 (mins).
#[inline(always)]
pub(crate) fn k4_scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, mn)
}
