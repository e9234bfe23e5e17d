//! Token sampling: greedy, or llama.cpp's default chain (repeat penalty → top-k → top-p →
//! min-p → temperature → draw) with a seeded generator.
//!
//! The draw itself is [`sample_with`], a pure function of the logits, the settings and one
//! uniform number, so that the CUDA sampler (`gpu::ops::sample`) can be checked to pick the same
//! token for the same number. To make that possible on hardware that sums in another order, it
//! fixes what a float sort and float sums leave open:
//! - candidates are ordered by logit, then by index (NaN counts as -inf, -0 as +0);
//! - `exp` is [`fexp`], made of IEEE-exact steps only, so every machine computes the same bits;
//! - probabilities are summed as integers (weights in units of 2^-40 of the best one), so the
//!   order of the additions does not matter.
//!
//! The distribution is the float chain's to within float rounding (`fexp` is within 3 ulp of
//! `exp`; weights below 2^-41 of the best count as 0).

use rand::{Rng, SeedableRng};

/// Sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set with cumulative probability ≥ p (1 = all).
    pub top_p: f32,
    /// Drop tokens below `min_p × p(best)` (0 = none).
    pub min_p: f32,
    /// Penalty for tokens among the last `repeat_last_n` (1 = none).
    pub repeat_penalty: f32,
    /// Window of the penalty.
    pub repeat_last_n: usize,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

/// A sampler with its generator state.
#[derive(Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: rand::rngs::StdRng,
    cand: Vec<u64>,
}

/// Index of the largest logit (the first of equal ones, as llama.cpp's greedy sampler picks).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    u32::try_from(best).unwrap_or(0)
}

/// The settings of the probabilistic part of the chain (what follows the repeat penalty).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleParams {
    /// 0 (or less) means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set with cumulative probability ≥ p (1 = all).
    pub top_p: f32,
    /// Drop tokens below `min_p × p(best)` (0 = none).
    pub min_p: f32,
}

impl From<&SamplerConfig> for SampleParams {
    fn from(c: &SamplerConfig) -> Self {
        Self {
            temperature: c.temperature,
            top_k: c.top_k,
            top_p: c.top_p,
            min_p: c.min_p,
        }
    }
}

/// llama.cpp's repeat penalty: each distinct id of `window` once, a logit ≤ 0 multiplied by
/// `penalty`, a positive one divided by it; ids outside the vocabulary are ignored.
pub fn apply_repeat_penalty(logits: &mut [f32], window: &[u32], penalty: f32) {
    let mut seen = std::collections::HashSet::new();
    for &t in window {
        if seen.insert(t) {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l <= 0.0 {
                    *l * penalty
                } else {
                    *l / penalty
                };
            }
        }
    }
}

/// Whether a temperature samples (positive; 0, negative and NaN are greedy).
pub(crate) fn greedy_off(temperature: f32) -> bool {
    temperature > 0.0
}

/// One weight unit is 2^-40 of the best candidate's weight.
pub(crate) const WEIGHT_ONE: f64 = 1_099_511_627_776.0;

/// `e^x` for `x ≤ 0` from IEEE-exact operations only (no fused multiply-add, no library call),
/// so that the CUDA sampler computes the same bits; 0 below -87 (never a subnormal). Within
/// 2 ulp of `expf`.
pub(crate) fn fexp(x: f32) -> f32 {
    const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b);
    const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 16 significant bits: k·LN2_HI is exact
    const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
    const C: [f32; 6] = [
        f32::from_bits(0x3950_0d01), // 1/7!
        f32::from_bits(0x3ab6_0b61), // 1/6!
        f32::from_bits(0x3c08_8889), // 1/5!
        f32::from_bits(0x3d2a_aaab), // 1/4!
        f32::from_bits(0x3e2a_aaab), // 1/3!
        0.5,
    ];
    if x.is_nan() || x < -87.0 {
        return 0.0;
    }
    let kf = (x * LOG2E + 0.5).floor();
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    let mut p = C[0];
    for c in &C[1..] {
        p = p * r + c;
    }
    p = p * r + 1.0;
    p = p * r + 1.0;
    #[allow(clippy::cast_possible_truncation)] // kf is an integer in -126..=0
    let k = kf as i32;
    // 2^k for k in -126..=0 is a normal float: exponent field k + 127.
    p * f32::from_bits(((k + 127) as u32) << 23)
}

/// A weight in `[0, 1]` as an integer number of [`WEIGHT_ONE`] units (rounded to nearest).
pub(crate) fn weight_units(w: f32) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // w in [0, 1]: < 2^41
    let q = (f64::from(w) * WEIGHT_ONE + 0.5) as u64;
    q
}

/// A logit as an order key: larger logit, larger key; NaN counts as -inf and -0 as +0.
pub(crate) fn order_key(l: f32) -> u32 {
    let mut b = l.to_bits();
    if l.is_nan() {
        b = f32::NEG_INFINITY.to_bits();
    }
    if b == 0x8000_0000 {
        b = 0;
    }
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The logit an [`order_key`] stands for.
pub(crate) fn key_value(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 {
        k & 0x7fff_ffff
    } else {
        !k
    })
}

/// A candidate as one integer: order key above, inverted index below, so that sorting in
/// descending order sorts by logit, then by ascending index.
fn candidate(i: usize, l: f32) -> u64 {
    #[allow(clippy::cast_possible_truncation)] // vocabularies are far below 2^32 entries
    let idx = i as u32;
    (u64::from(order_key(l)) << 32) | u64::from(!idx)
}

fn candidate_index(c: u64) -> u32 {
    #[allow(clippy::cast_possible_truncation)] // the low half
    let low = c as u32;
    !low
}

fn candidate_value(c: u64) -> f32 {
    #[allow(clippy::cast_possible_truncation)] // the high half
    let key = (c >> 32) as u32;
    key_value(key)
}

/// Pick a token from `logits` (already penalised) for the uniform number `u` in `[0, 1)`: the
/// chain top-k → softmax → top-p → min-p → temperature → draw, as [`Sampler::sample`] runs it.
/// Greedy ([`argmax`]) when the temperature is not positive.
pub fn sample_with(logits: &[f32], params: &SampleParams, u: f32) -> u32 {
    sample_into(logits, params, u, &mut Vec::new())
}

fn sample_into(logits: &[f32], params: &SampleParams, u: f32, cand: &mut Vec<u64>) -> u32 {
    if logits.is_empty() || !greedy_off(params.temperature) {
        return argmax(logits);
    }
    let n = logits.len();
    cand.clear();
    cand.extend(logits.iter().enumerate().map(|(i, &l)| candidate(i, l)));
    let k1 = if params.top_k > 0 && params.top_k < n {
        params.top_k
    } else {
        n
    };
    // A total order, so the partition and the unstable sort are deterministic.
    if k1 < n {
        cand.select_nth_unstable_by(k1 - 1, |a, b| b.cmp(a));
        cand.truncate(k1);
    }
    cand.sort_unstable_by(|a, b| b.cmp(a));
    let m = candidate_value(cand[0]);
    if !m.is_finite() {
        // Nothing to weigh (all -inf, or an infinite logit): the first candidate.
        return candidate_index(cand[0]);
    }
    // Softmax over the top-k: e_i = exp(l_i - max), summed in weight units.
    let e: Vec<f32> = cand.iter().map(|&c| fexp(candidate_value(c) - m)).collect();
    let s: u128 = e.iter().map(|&x| u128::from(weight_units(x))).sum();
    let mut keep = k1;
    if params.top_p < 1.0 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in 0..=s
        let target = (f64::from(params.top_p.max(0.0)) * s as f64) as u128;
        let mut cum = 0u128;
        for (i, &x) in e.iter().enumerate() {
            cum += u128::from(weight_units(x));
            if cum >= target {
                keep = i + 1;
                break;
            }
        }
    }
    if params.min_p > 0.0 {
        // p_i ≥ min_p · p_0 with p_0 = e_0 / S = 1 / S.
        let count = e.iter().filter(|&&x| x >= params.min_p).count();
        keep = keep.min(count.max(1));
    }
    // Temperature over the survivors, then the draw.
    let w: Vec<u64> = cand[..keep]
        .iter()
        .map(|&c| weight_units(fexp((candidate_value(c) - m) / params.temperature)))
        .collect();
    let total: u128 = w.iter().map(|&x| u128::from(x)).sum();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // u in [0, 1)
    let r = (f64::from(u) * total as f64) as u128;
    let mut cum = 0u128;
    for (i, &x) in w.iter().enumerate() {
        cum += u128::from(x);
        if cum > r {
            return candidate_index(cand[i]);
        }
    }
    candidate_index(cand[keep - 1])
}

impl Sampler {
    /// A sampler.
    pub fn new(cfg: SamplerConfig) -> Self {
        let rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
        Self {
            cfg,
            rng,
            cand: Vec::new(),
        }
    }

    /// Settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Pick the next token from `logits`, given the tokens so far (`history`).
    /// Whether this sampler picks the most likely token (temperature 0, or not a positive
    /// number).
    pub fn is_greedy(&self) -> bool {
        !greedy_off(self.cfg.temperature)
    }

    /// The uniform number [`Sampler::sample`] would draw next, for a sampler that runs
    /// elsewhere (the GPU's) with the same seeded sequence.
    pub fn draw_uniform(&mut self) -> f32 {
        self.rng.random::<f32>()
    }

    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let c = &self.cfg;
        let penalised;
        let mut logits = logits;
        if c.repeat_penalty != 1.0 && c.repeat_last_n > 0 {
            let mut buf = logits.to_vec();
            let start = history.len().saturating_sub(c.repeat_last_n);
            apply_repeat_penalty(&mut buf, &history[start..], c.repeat_penalty);
            penalised = buf;
            logits = &penalised;
        }
        let params = SampleParams::from(c);
        if !greedy_off(params.temperature) {
            return argmax(logits);
        }
        let u = self.rng.random::<f32>();
        sample_into(logits, &params, u, &mut self.cand)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test vocabularies are tiny
mod tests {
    use super::*;

    #[test]
    fn greedy_and_seeded() {
        let logits = [0.1f32, 3.0, 2.9, -1.0];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits, &[]), 1);
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(cfg.clone());
            (0..20).map(|_| s.sample(&logits, &[])).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(cfg);
            (0..20).map(|_| s.sample(&logits, &[])).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|&t| t < 4));
        assert!(a.contains(&1) && a.contains(&2));
    }

    #[test]
    fn top_k_one_is_greedy_and_penalty_changes_choice() {
        let logits = [0.1f32, 3.0, 2.9, -1.0];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits, &[]), 1);
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            repeat_penalty: 2.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits, &[1]), 2);
    }
    #[test]
    fn fexp_is_close_to_exp() {
        assert_eq!(fexp(0.0), 1.0);
        assert_eq!(fexp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fexp(f32::NAN), 0.0);
        assert_eq!(fexp(-87.5), 0.0);
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = f64::from(x).exp();
            let got = f64::from(fexp(x));
            worst = worst.max((got - want).abs() / want);
            x += 0.000_731;
        }
        assert!(
            worst < 3.0 * f64::from(f32::EPSILON),
            "relative error {worst}"
        );
    }

    #[test]
    fn order_keys_sort_like_the_logits() {
        let vals = [
            f32::NEG_INFINITY,
            -1e30,
            -2.5,
            -1e-40,
            0.0,
            1e-40,
            1.0,
            3.5,
            1e30,
            f32::INFINITY,
        ];
        for w in vals.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{w:?}");
        }
        for &v in &vals {
            assert_eq!(key_value(order_key(v)).to_bits(), v.to_bits());
        }
        assert_eq!(order_key(-0.0), order_key(0.0));
        assert_eq!(order_key(f32::NAN), order_key(f32::NEG_INFINITY));
    }

    /// The chain as the float code ran it (sorted by logit, softmax, top-p, min-p, temperature,
    /// draw), in f64: `sample_with` must agree except within a hair of a boundary.
    fn float_chain(logits: &[f32], p: &SampleParams, u: f32) -> u32 {
        let mut cand: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, f64::from(l)))
            .collect();
        cand.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.truncate(p.top_k);
        }
        let max = cand[0].1;
        let probs: Vec<f64> = cand.iter().map(|x| (x.1 - max).exp()).collect();
        let sum: f64 = probs.iter().sum();
        let probs: Vec<f64> = probs.iter().map(|x| x / sum).collect();
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, q) in probs.iter().enumerate() {
                cum += q;
                if cum >= f64::from(p.top_p) {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * f64::from(p.min_p);
            keep = keep.min(probs.iter().take_while(|&&q| q >= floor).count().max(1));
        }
        let w: Vec<f64> = cand[..keep]
            .iter()
            .map(|x| ((x.1 - max) / f64::from(p.temperature)).exp())
            .collect();
        let mut r = f64::from(u) * w.iter().sum::<f64>();
        for (i, x) in w.iter().enumerate() {
            if r < *x {
                return cand[i].0;
            }
            r -= x;
        }
        cand[keep - 1].0
    }

    #[test]
    fn sample_with_is_the_float_chain() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (mut total, mut differ) = (0, 0);
        for case in 0..200 {
            let n = 1 + case % 97;
            let logits: Vec<f32> = (0..n).map(|_| rng.random_range(-6.0f32..6.0)).collect();
            let p = SampleParams {
                temperature: [0.8f32, 1.0, 1.7][case % 3],
                top_k: [0usize, 40, 3][case % 3],
                top_p: [0.95f32, 1.0, 0.6, 0.9][case % 4],
                min_p: [0.05f32, 0.0][case % 2],
            };
            for _ in 0..50 {
                let u = rng.random::<f32>();
                total += 1;
                if sample_with(&logits, &p, u) != float_chain(&logits, &p, u) {
                    differ += 1;
                }
            }
        }
        assert!(differ * 2000 <= total, "{differ} of {total} draws differ");
    }

    #[test]
    fn draws_follow_the_softmax_and_ties_go_to_the_lower_index() {
        let logits = [0.5f32, 2.0, 1.0, 2.0];
        let p = SampleParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        };
        let mut counts = [0usize; 4];
        let steps = 100_000;
        for i in 0..steps {
            #[allow(clippy::cast_precision_loss)]
            let u = (i as f32 + 0.5) / steps as f32;
            counts[sample_with(&logits, &p, u) as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let freq = c as f64 / f64::from(steps);
            assert!(
                (freq - f64::from(logits[i]).exp() / z).abs() < 1e-3,
                "{counts:?}"
            );
        }
        // The two equal logits: index 1 comes first in the order.
        let top1 = SampleParams { top_k: 1, ..p };
        assert_eq!(sample_with(&logits, &top1, 0.99), 1);
        let top2 = SampleParams { top_k: 2, ..p };
        assert_eq!(sample_with(&logits, &top2, 0.0), 1);
        assert_eq!(sample_with(&logits, &top2, 0.99), 3);
        // min-p above 1 keeps only the best; NaN and -inf are never drawn.
        let only = SampleParams { min_p: 2.0, ..p };
        assert_eq!(sample_with(&logits, &only, 0.99), 1);
        let odd = [f32::NAN, 0.0, f32::NEG_INFINITY, -0.0];
        for i in 0..100 {
            let t = sample_with(&odd, &p, i as f32 / 100.0);
            assert!(t == 1 || t == 3, "{t}");
        }
        assert_eq!(sample_with(&[f32::NAN, f32::NAN], &p, 0.5), 0);
        assert_eq!(
            sample_with(&[1.0, f32::INFINITY, f32::INFINITY], &p, 0.5),
            1
        );
    }
}
