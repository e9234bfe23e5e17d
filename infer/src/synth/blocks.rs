//! Random tensor data of every supported weight type, fast and reproducible.
//!
//! Quantized blocks are random bytes (xoshiro256++ through [`SmallRng`]) whose scale fields
//! are then set so that the dequantized values have mean about zero and the requested
//! standard deviation: each block's scale is the target divided by the standard deviation of
//! its uniformly random quants, times a jitter in [0.75, 1.25) so blocks differ as in real
//! files. The K types also draw their 6-bit sub-block scales (`Q4_K`/`Q5_K`: 32..64, with the
//! mins that centre each sub-block; `Q6_K`: ±64..128). All scales are finite `f16`, so every
//! value dequantizes to a finite float. Float types get uniform values of the requested mean
//! and standard deviation.
//!
//! A tensor is generated in chunks of [`chunk_blocks`] blocks (about 1 MiB), each with its own
//! generator seeded from the tensor's seed and the chunk's index: the bytes depend on the seed
//! alone, never on how chunks are spread over threads or written out.

use super::SynthError;
use crate::quant::blocks::{q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0};
use half::{bf16, f16};
use llmstream::gguf::GgmlType;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;

/// Bytes a generator chunk aims at.
const CHUNK_BYTES: u64 = 1 << 20;

/// The weight types the generator fills (those the inference crate computes with).
pub const TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// The distribution of a tensor's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dist {
    /// Mean (float types only; quantized data is centred on zero).
    pub mean: f32,
    /// Standard deviation.
    pub std: f32,
}

impl Dist {
    /// Weights of a matrix with rows of `cols` values: mean 0, standard deviation
    /// `gain / sqrt(cols)`, so a product with a unit-variance input has variance `gain²`.
    pub fn weights(cols: u64, gain: f32) -> Self {
        // Row lengths are far below 2^24, where u64 → f64 → f32 is exact.
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let std = gain / (cols.max(1) as f64).sqrt() as f32;
        Self { mean: 0.0, std }
    }
}

/// Blocks per generator chunk of type `ty`.
pub fn chunk_blocks(ty: GgmlType) -> u64 {
    (CHUNK_BYTES / ty.type_size()).max(1)
}

/// SplitMix64's output function: a well-mixed 64-bit value from any input.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of the tensor named `name` in a model generated with `seed`.
pub fn tensor_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, then mixed with the model seed.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    mix(mix(seed) ^ h)
}

/// A uniform float in [0, 1) from the top 23 bits of `r`.
#[inline(always)]
fn unit(r: u32) -> f32 {
    f32::from_bits(0x3f80_0000 | (r >> 9)) - 1.0
}

/// A uniform float in [-0.5, 0.5) from the top 23 bits of `r` (standard deviation 1/√12).
#[inline(always)]
fn centred(r: u32) -> f32 {
    f32::from_bits(0x3f80_0000 | (r >> 9)) - 1.5
}

/// √12: scales [`centred`] to unit standard deviation.
const SQRT_12: f32 = 3.464_101_6;

/// The top 32 bits of a `u64`.
#[inline(always)]
fn hi32(r: u64) -> u32 {
    // The shift leaves 32 bits: the conversion is exact.
    u32::try_from(r >> 32).unwrap_or(u32::MAX)
}

/// The low 32 bits of a `u64`.
#[inline(always)]
fn lo32(r: u64) -> u32 {
    u32::try_from(r & 0xffff_ffff).unwrap_or(u32::MAX)
}

/// An `f16` scale, kept finite and non-zero: tiny targets give the smallest subnormal rather
/// than zero, huge ones the largest finite half.
fn half(x: f32) -> f16 {
    let h = f16::from_f32(x.abs().clamp(f16::MIN_POSITIVE_SUBNORMAL.to_f32(), 65504.0));
    if x < 0.0 {
        -h
    } else {
        h
    }
}

fn put_f16(b: &mut [u8], off: usize, v: f16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// Standard deviation of a uniform integer on `n` consecutive values: √((n² − 1) / 12).
const SD_16: f32 = 4.609_772; // 4-bit quants
const SD_32: f32 = 9.233_093; // 5-bit quants
const SD_64: f32 = 18.472_953; // 6-bit quants (Q6_K)
const SD_255: f32 = 73.611_59; // Q8_0 quants, -127..=127
/// Root mean square of the 6-bit sub-block scales 32..64 (`Q4_K`, `Q5_K`).
const RMS_SC_K: f32 = 48.389_05;
/// Root mean square of the `Q6_K` scale magnitudes 64..128.
const RMS_SC_Q6: f32 = 97.270_23;

/// Fill `out` (a whole number of `ty` blocks) with chunk `chunk` of a tensor whose seed is
/// `seed`. `out` holds at most [`chunk_blocks`] blocks; the last chunk of a tensor may be
/// shorter.
pub fn fill_chunk(
    ty: GgmlType,
    dist: Dist,
    seed: u64,
    chunk: u64,
    out: &mut [u8],
) -> Result<(), SynthError> {
    let size = usize::try_from(ty.type_size()).map_err(|_| SynthError::Unsupported {
        ty,
        reason: ": block size",
    })?;
    if !TYPES.contains(&ty) {
        return Err(SynthError::Unsupported { ty, reason: "" });
    }
    if ty.block_size() > 1 && dist.mean != 0.0 {
        return Err(SynthError::Unsupported {
            ty,
            reason: " with a non-zero mean",
        });
    }
    if out.len() % size != 0 {
        return Err(SynthError::Unsupported {
            ty,
            reason: ": output is not whole blocks",
        });
    }
    let mut rng = SmallRng::seed_from_u64(mix(seed ^ mix(chunk)));
    let std = dist.std;
    match ty {
        GgmlType::F32 => floats(&mut rng, dist, out, 4, |v, b| {
            b.copy_from_slice(&v.to_le_bytes())
        }),
        GgmlType::F16 => floats(&mut rng, dist, out, 2, |v, b| {
            b.copy_from_slice(&f16::from_f32(v).to_le_bytes())
        }),
        GgmlType::BF16 => floats(&mut rng, dist, out, 2, |v, b| {
            b.copy_from_slice(&bf16::from_f32(v).to_le_bytes())
        }),
        _ => {
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(size) {
                let r = rng.next_u64();
                // Per-block jitter of the scale, in [0.75, 1.25).
                let j = 0.75 + 0.5 * unit(lo32(r));
                set_scales(ty, std * j, hi32(r), &mut rng, b);
            }
        }
    }
    Ok(())
}

/// Uniform floats of `dist`, `width` bytes each, stored by `put`.
fn floats(
    rng: &mut SmallRng,
    dist: Dist,
    out: &mut [u8],
    width: usize,
    put: impl Fn(f32, &mut [u8]),
) {
    let a = dist.std * SQRT_12;
    for pair in out.chunks_mut(2 * width) {
        let r = rng.next_u64();
        let (x, y) = pair.split_at_mut(width.min(pair.len()));
        put(dist.mean + a * centred(lo32(r)), x);
        if y.len() == width {
            put(dist.mean + a * centred(hi32(r)), y);
        }
    }
}

/// Set the scale fields of one block of random bytes so its values have standard deviation
/// about `std` and mean about zero; `r` and `rng` give the random choices.
fn set_scales(ty: GgmlType, std: f32, r: u32, rng: &mut SmallRng, b: &mut [u8]) {
    match ty {
        GgmlType::Q4_0 => put_f16(b, q4_0::D, half(std / SD_16)),
        GgmlType::Q4_1 => {
            let d = half(std / SD_16);
            put_f16(b, q4_1::D, d);
            put_f16(b, q4_1::M, half(-7.5 * d.to_f32()));
        }
        GgmlType::Q5_0 => put_f16(b, q5_0::D, half(std / SD_32)),
        GgmlType::Q5_1 => {
            let d = half(std / SD_32);
            put_f16(b, q5_1::D, d);
            put_f16(b, q5_1::M, half(-15.5 * d.to_f32()));
        }
        GgmlType::Q8_0 => {
            put_f16(b, q8_0::D, half(std / SD_255));
            // -128 never comes out of ggml's quantizer: keep quants in -127..=127.
            for q in &mut b[q8_0::QS..q8_0::QS + 32] {
                if *q == 0x80 {
                    *q = 0x81;
                }
            }
        }
        GgmlType::Q4_K => k_scales(b, q4_k::D, q4_k::DMIN, q4_k::SCALES, std, SD_16, 16, rng),
        GgmlType::Q5_K => k_scales(b, q5_k::D, q5_k::DMIN, q5_k::SCALES, std, SD_32, 32, rng),
        GgmlType::Q6_K => {
            let d = half(std / (SD_64 * RMS_SC_Q6));
            put_f16(b, q6_k::D, d);
            let mut bits = u64::from(r) << 32 | u64::from(rng.next_u32());
            for s in &mut b[q6_k::SCALES..q6_k::SCALES + 16] {
                // 6 bits of magnitude (64..128) and one of sign per scale.
                let mag = 64 + (bits & 63);
                let v = i8::try_from(mag).unwrap_or(i8::MAX);
                let v = if bits & 64 != 0 { -v } else { v };
                *s = v.to_le_bytes()[0];
                bits = bits.rotate_right(7);
            }
        }
        // Float types are filled by `floats`.
        _ => {}
    }
}

/// The super-block scale `d`, the min scale `dmin`, and the eight 6-bit scales and mins of a
/// `Q4_K`/`Q5_K` block whose quants take `levels` values: scales 32..64, and mins that bring
/// each sub-block's mean (`d·sc·(levels−1)/2`) back to about zero with `dmin = d·levels/2`.
#[allow(clippy::too_many_arguments)]
fn k_scales(
    b: &mut [u8],
    d_off: usize,
    dmin_off: usize,
    sc_off: usize,
    std: f32,
    sd_q: f32,
    levels: u8,
    rng: &mut SmallRng,
) {
    let d = half(std / (sd_q * RMS_SC_K));
    put_f16(b, d_off, d);
    put_f16(b, dmin_off, half(d.to_f32() * f32::from(levels / 2)));
    let r = rng.next_u64();
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for (j, (s, m)) in sc.iter_mut().zip(&mut mn).enumerate() {
        // 5 random bits per scale: 32..64.
        *s = 32 | ((r >> (5 * j)) & 31).to_le_bytes()[0];
        // The sub-block's mean is d·s·(levels−1)/2 and dmin·m = d·m·levels/2, so
        // m = round(s·(levels−1)/levels), which is at most 63.
        let (s16, l16) = (u16::from(*s), u16::from(levels));
        *m = u8::try_from((s16 * (l16 - 1) + l16 / 2) / l16).unwrap_or(63);
    }
    let p = &mut b[sc_off..sc_off + 12];
    for j in 0..4 {
        p[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        p[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        p[j + 8] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4);
    }
}

/// Fill a whole tensor's data (`out`, a whole number of `ty` blocks) in parallel: the same
/// bytes as its chunks filled one by one with [`fill_chunk`].
pub fn fill_tensor(ty: GgmlType, dist: Dist, seed: u64, out: &mut [u8]) -> Result<(), SynthError> {
    let chunk_len = usize::try_from(chunk_blocks(ty) * ty.type_size()).map_err(|_| {
        SynthError::Unsupported {
            ty,
            reason: ": chunk size",
        }
    })?;
    out.par_chunks_mut(chunk_len)
        .enumerate()
        .try_for_each(|(i, c)| fill_chunk(ty, dist, seed, i as u64, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize;

    fn stats(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    /// Generate `n` values of `ty` and dequantize them.
    fn values(ty: GgmlType, dist: Dist, seed: u64, n: usize) -> Vec<f32> {
        let bytes = ty.bytes_for(n as u64).unwrap();
        let mut buf = vec![0u8; usize::try_from(bytes).unwrap()];
        fill_tensor(ty, dist, seed, &mut buf).unwrap();
        let mut out = vec![0f32; n];
        dequantize(ty, &buf, &mut out).unwrap();
        out
    }

    #[test]
    fn every_type_dequantizes_finite_with_the_target_std() {
        // Measured: every type within 4% of the target std (the task asks for a factor 2).
        // Rows of 4096 and 14336 (Llama 3 8B), and a tiny std that needs subnormal scales.
        for cols in [4096u64, 14336, 1 << 22] {
            let dist = Dist::weights(cols, 1.0);
            for ty in TYPES {
                let v = values(ty, dist, 7, 1 << 16);
                assert!(v.iter().all(|x| x.is_finite()), "{ty}");
                let (mean, std) = stats(&v);
                let target = f64::from(dist.std);
                assert!(
                    std > target * 0.8 && std < target * 1.25,
                    "{ty} cols {cols}: std {std:e}, target {target:e}"
                );
                assert!(mean.abs() < target / 4.0, "{ty}: mean {mean:e}");
                // Values vary (not one constant per block).
                let distinct: std::collections::HashSet<u32> =
                    v[..256].iter().map(|x| x.to_bits()).collect();
                assert!(distinct.len() > 8, "{ty}");
            }
        }
    }

    #[test]
    fn float_types_take_a_mean() {
        let norm = Dist {
            mean: 1.0,
            std: 0.02,
        };
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let (mean, std) = stats(&values(ty, norm, 1, 4096));
            assert!((mean - 1.0).abs() < 0.005, "{ty}: {mean}");
            assert!(std > 0.01 && std < 0.04, "{ty}: {std}");
        }
        let mut buf = vec![0u8; 18];
        assert!(matches!(
            fill_chunk(GgmlType::Q4_0, norm, 0, 0, &mut buf),
            Err(SynthError::Unsupported { .. })
        ));
    }

    #[test]
    fn unsupported_types_and_partial_blocks_are_refused() {
        let d = Dist::weights(256, 1.0);
        let mut buf = vec![0u8; 110];
        assert!(fill_chunk(GgmlType::Q3_K, d, 0, 0, &mut buf).is_err());
        let mut buf = vec![0u8; 19];
        assert!(fill_chunk(GgmlType::Q4_0, d, 0, 0, &mut buf).is_err());
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let d = Dist::weights(4096, 1.0);
        for ty in TYPES {
            let n =
                usize::try_from(chunk_blocks(ty) * ty.type_size() * 3 + ty.type_size()).unwrap();
            let mut a = vec![0u8; n];
            let mut b = vec![0u8; n];
            let mut c = vec![0u8; n];
            fill_tensor(ty, d, 5, &mut a).unwrap();
            fill_tensor(ty, d, 5, &mut b).unwrap();
            fill_tensor(ty, d, 6, &mut c).unwrap();
            assert!(a == b, "{ty}");
            assert!(a != c, "{ty}");
            // Chunk by chunk gives the same bytes as the parallel fill.
            let chunk = usize::try_from(chunk_blocks(ty) * ty.type_size()).unwrap();
            let mut serial = vec![0u8; n];
            for (i, s) in serial.chunks_mut(chunk).enumerate() {
                fill_chunk(ty, d, 5, i as u64, s).unwrap();
            }
            assert!(a == serial, "{ty}");
        }
        assert_ne!(tensor_seed(0, "a"), tensor_seed(0, "b"));
        assert_ne!(tensor_seed(0, "a"), tensor_seed(1, "a"));
    }
}
