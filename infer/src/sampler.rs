//! Token sampling: greedy, or llama.cpp's default chain (repeat penalty → top-k → top-p →
//! min-p → temperature → draw) with a seeded generator.

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
    cand: Vec<(u32, f32)>,
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
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let c = &self.cfg;
        let mut logits_buf;
        let mut logits = logits;
        if c.repeat_penalty != 1.0 && c.repeat_last_n > 0 {
            logits_buf = logits.to_vec();
            let start = history.len().saturating_sub(c.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &t in &history[start..] {
                if seen.insert(t) {
                    if let Some(l) = logits_buf.get_mut(t as usize) {
                        *l = if *l <= 0.0 {
                            *l * c.repeat_penalty
                        } else {
                            *l / c.repeat_penalty
                        };
                    }
                }
            }
            logits = &logits_buf;
        }
        if c.temperature <= 0.0 {
            return argmax(logits);
        }
        self.cand.clear();
        self.cand.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (u32::try_from(i).unwrap_or(0), l)),
        );
        self.cand
            .sort_unstable_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
        if c.top_k > 0 && c.top_k < self.cand.len() {
            self.cand.truncate(c.top_k);
        }
        // Softmax over the candidates (sorted, so the first is the max).
        let max = self.cand.first().map_or(0.0, |x| x.1);
        let mut probs: Vec<f32> = self.cand.iter().map(|x| (x.1 - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        for p in &mut probs {
            *p /= sum;
        }
        let mut keep = probs.len();
        if c.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= c.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if c.min_p > 0.0 {
            let floor = probs[0] * c.min_p;
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        self.cand.truncate(keep);
        // Temperature over the survivors, then draw.
        let max = self.cand[0].1;
        let weights: Vec<f32> = self
            .cand
            .iter()
            .map(|x| ((x.1 - max) / c.temperature).exp())
            .collect();
        let total: f32 = weights.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return self.cand[i].0;
            }
            r -= w;
        }
        self.cand[keep - 1].0
    }
}

#[cfg(test)]
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
}
