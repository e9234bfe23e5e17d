//! A CPU transcription of `ops_attn_partial` + `ops_attn_combine` (chunked softmax with `f16`
//! weights relative to the chunk's max, `f32` accumulation, the merge), checked against the CPU
//! engine's attention semantics, so that the split/merge math and the tolerance the GPU tests
//! assert are established on machines without a GPU.
// Test-only models over small vectors: indices fit u32, sums and casts stay in range.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

use crate::ops::softmax_scaled;
use half::f16;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub n_tok: usize,
    pub pos0: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub hd: usize,
}

fn r16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// The engine's attention (forward.rs, `f16` cache): Q·K in f64 over f16-rounded Q, softmax in
/// the engine's own op, weights rounded to f16, V accumulated in f64. Also returns, per output,
/// `Σ_t p_t·|v_t|` (the scale the f16 rounding of the weights errs by).
pub(crate) fn reference(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    s: Shape,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let (qd, kvd, group) = (s.n_head * s.hd, s.n_head_kv * s.hd, s.n_head / s.n_head_kv);
    let mut out = vec![0f32; s.n_tok * qd];
    let mut mag = vec![0f32; s.n_tok * qd];
    for i in 0..s.n_tok {
        let visible = s.pos0 + i + 1;
        for h in 0..s.n_head {
            let kvh = h / group;
            let qv: Vec<f64> = q[i * qd + h * s.hd..][..s.hd]
                .iter()
                .map(|&x| f64::from(r16(x)))
                .collect();
            let mut sc: Vec<f32> = (0..visible)
                .map(|t| {
                    let kr = &k[t * kvd + kvh * s.hd..][..s.hd];
                    let dot: f64 = kr
                        .iter()
                        .zip(&qv)
                        .map(|(a, b)| f64::from(a.to_f32()) * b)
                        .sum();
                    dot as f32
                })
                .collect();
            softmax_scaled(&mut sc, scale);
            for d in 0..s.hd {
                let (mut acc, mut m) = (0f64, 0f64);
                for (t, &p) in sc.iter().enumerate() {
                    let vv = f64::from(v[t * kvd + kvh * s.hd + d].to_f32());
                    acc += f64::from(r16(p)) * vv;
                    m += f64::from(p) * vv.abs();
                }
                out[i * qd + h * s.hd + d] = acc as f32;
                mag[i * qd + h * s.hd + d] = m as f32;
            }
        }
    }
    (out, mag)
}

/// The kernels' arithmetic, chunk by chunk.
pub(crate) fn chunked(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    s: Shape,
    scale: f32,
    chunk: usize,
) -> Vec<f32> {
    let (qd, kvd, group) = (s.n_head * s.hd, s.n_head_kv * s.hd, s.n_head / s.n_head_kv);
    let mut out = vec![0f32; s.n_tok * qd];
    for i in 0..s.n_tok {
        let visible = s.pos0 + i + 1;
        for h in 0..s.n_head {
            let kvh = h / group;
            let qs: Vec<f32> = q[i * qd + h * s.hd..][..s.hd]
                .iter()
                .map(|&x| r16(x))
                .collect();
            let mut parts = Vec::new(); // (m, l, acc)
            for t0 in (0..visible).step_by(chunk) {
                let t1 = (t0 + chunk).min(visible);
                let sc: Vec<f32> = (t0..t1)
                    .map(|t| {
                        let kr = &k[t * kvd + kvh * s.hd..][..s.hd];
                        let mut acc = 0f32;
                        for d8 in 0..s.hd / 8 {
                            let mut p = qs[d8 * 8] * kr[d8 * 8].to_f32();
                            for e in 1..8 {
                                p = qs[d8 * 8 + e].mul_add(kr[d8 * 8 + e].to_f32(), p);
                            }
                            acc += p;
                        }
                        acc * scale
                    })
                    .collect();
                let m = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let w: Vec<f32> = sc.iter().map(|&x| (x - m).exp()).collect();
                let l: f32 = w.iter().sum();
                let acc: Vec<f32> = (0..s.hd)
                    .map(|d| {
                        let mut a = 0f32;
                        for (j, t) in (t0..t1).enumerate() {
                            a = r16(w[j]).mul_add(v[t * kvd + kvh * s.hd + d].to_f32(), a);
                        }
                        a
                    })
                    .collect();
                parts.push((m, l, acc));
            }
            let mm = parts.iter().map(|p| p.0).fold(f32::NEG_INFINITY, f32::max);
            let l: f32 = parts.iter().map(|p| p.1 * (p.0 - mm).exp()).sum();
            let inv = 1.0 / l;
            for d in 0..s.hd {
                let sum: f32 = parts.iter().map(|p| p.2[d] * (p.0 - mm).exp()).sum();
                out[i * qd + h * s.hd + d] = sum * inv;
            }
        }
    }
    out
}

/// (max |a - b| / (mag + 1e-6·max mag), max |a - b| / max |b|).
pub(crate) fn errors(got: &[f32], want: &[f32], mag: &[f32]) -> (f32, f32) {
    let big = want.iter().fold(0f32, |a, &x| a.max(x.abs())).max(1e-30);
    let mbig = mag.iter().fold(0f32, |a, &x| a.max(x));
    let (mut norm, mut rel) = (0f32, 0f32);
    for ((&g, &w), &m) in got.iter().zip(want).zip(mag) {
        let e = (g - w).abs();
        norm = norm.max(e / (m + 1e-6 * mbig));
        rel = rel.max(e / big);
    }
    (norm, rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn chunked_math_matches_the_engine_within_the_f16_weight_rounding() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut worst = (0f32, 0f32);
        for (ctx, n_tok, n_head_kv, group, hd, qscale) in [
            (1usize, 1usize, 2usize, 1usize, 64usize, 1.0f32),
            (5, 1, 1, 3, 128, 1.0),
            (300, 7, 2, 3, 64, 1.0),
            (300, 7, 1, 8, 128, 6.0),
            (5000, 1, 1, 8, 64, 1.0),
            (5000, 1, 1, 1, 128, 6.0),
        ] {
            let s = Shape {
                n_tok,
                pos0: ctx - n_tok.min(ctx),
                n_head: n_head_kv * group,
                n_head_kv,
                hd,
            };
            let n_kv = s.pos0 + n_tok;
            let q: Vec<f32> = (0..n_tok * s.n_head * hd)
                .map(|_| rng.random_range(-1.0f32..1.0) * qscale)
                .collect();
            let k: Vec<f16> = (0..n_kv * n_head_kv * hd)
                .map(|_| f16::from_f32(rng.random_range(-1.0f32..1.0)))
                .collect();
            let v: Vec<f16> = (0..n_kv * n_head_kv * hd)
                .map(|_| f16::from_f32(rng.random_range(-1.0f32..1.0)))
                .collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let (want, mag) = reference(&q, &k, &v, s, scale);
            let got = chunked(&q, &k, &v, s, scale, 256);
            let (norm, rel) = errors(&got, &want, &mag);
            eprintln!("ctx {ctx} n_tok {n_tok} kv {n_head_kv} group {group} hd {hd} q×{qscale}: error/Σp|v| {norm:.2e}, error/max|out| {rel:.2e}");
            worst = (worst.0.max(norm), worst.1.max(rel));
            // One chunk holding everything is the same math.
            let one = chunked(&q, &k, &v, s, scale, usize::MAX);
            assert!(errors(&one, &want, &mag).0 < 1.5e-3);
        }
        // Each weight's f16 rounding differs by at most 2^-10 relative between the two orders.
        assert!(worst.0 < 1.5e-3, "{worst:?}");
    }
}
