//! Layers computed by the CPU for the GPU engine (hybrid decode): their weights in host memory,
//! their f16 KV cache, and the CPU engine's layer code ([`crate::forward`]). The hidden state
//! comes in and goes out as `f32` rows.

use std::time::Instant;

use llmstream::{Context, Model};

use crate::config::HParams;
use crate::error::{InferError, Result};
use crate::forward::{layer_forward, Scratch, State};
use crate::kv::KvType;
use crate::weights::{load_rope_freqs, LayerWeights};

/// Timed runs of [`CpuLayers::rate`], after one warm-up run (one position each).
const PROBE_RUNS: usize = 3;

/// The CPU's layers of a model.
#[derive(Debug)]
pub struct CpuLayers {
    hp: HParams,
    rope_freqs: Option<Vec<f32>>,
    /// `(model layer, weights)`, the cache slot being the index here.
    layers: Vec<(usize, LayerWeights)>,
    state: State,
    scratch: Scratch,
}

impl CpuLayers {
    /// Load layers `which` (model indices) of `model` into host memory, with a cache of
    /// `n_ctx` positions.
    pub fn load(
        ctx: &Context,
        model: &Model,
        hp: &HParams,
        which: &[usize],
        n_ctx: usize,
    ) -> Result<Self> {
        let rope_freqs = load_rope_freqs(ctx, model, hp)?;
        let layers = which
            .iter()
            .map(|&i| Ok((i, LayerWeights::load(ctx, model, hp, i)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(CpuLayers {
            hp: hp.clone(),
            rope_freqs,
            state: State::for_layers(hp, layers.len(), n_ctx, KvType::F16),
            layers,
            scratch: Scratch::default(),
        })
    }

    /// Bytes of model layer `li`'s weights, when it is one of these.
    pub fn layer_bytes(&self, li: usize) -> Option<u64> {
        self.layers
            .iter()
            .find(|(i, _)| *i == li)
            .map(|(_, l)| l.bytes)
    }

    /// Run model layer `li` for `n` tokens at positions `pos..` on `x` (`[n][n_embd]`).
    pub fn run(&mut self, li: usize, x: &mut [f32], pos: usize, n: usize) -> Result<()> {
        let slot = self
            .layers
            .iter()
            .position(|(i, _)| *i == li)
            .ok_or_else(|| InferError::Invalid(format!("layer {li} is not a CPU layer")))?;
        if x.len() != n * self.hp.n_embd || pos + n > self.state.n_ctx() {
            return Err(InferError::Invalid(format!(
                "CPU layer {li}: {} floats for {n} tokens at position {pos}",
                x.len()
            )));
        }
        self.state.set_pos(pos);
        let lw = &self.layers[slot].1;
        layer_forward(
            &self.hp,
            lw,
            self.rope_freqs.as_deref(),
            slot,
            &mut self.state,
            &mut self.scratch,
            x,
            n,
        )
    }

    /// The CPU's rate over the weights of these layers (bytes per second): each run takes every
    /// layer in turn, whole (norms, products, attention at the first positions), on one token;
    /// the mean of three runs after a warm-up (the best run overstates what a pipeline of
    /// different layers sees). Several layers, so that the weights come from memory as in a
    /// token and not from a last-level cache that holds one small layer (300 MiB on the GPU
    /// machine, more than an 8B-shaped layer).
    pub fn rate(&mut self) -> Result<f64> {
        let bytes: u64 = self.layers.iter().map(|(_, l)| l.bytes).sum();
        let ids: Vec<usize> = self.layers.iter().map(|(i, _)| *i).collect();
        if ids.is_empty() {
            return Err(InferError::Invalid("no CPU layer to time".into()));
        }
        let mut x = vec![0.01f32; self.hp.n_embd];
        let mut total = 0.0;
        for pos in 0..=PROBE_RUNS {
            let t = Instant::now();
            for &li in &ids {
                self.run(li, &mut x, pos, 1)?;
                // keep the state finite whatever the weights do to it
                x.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0) * 0.01);
            }
            if pos > 0 {
                total += t.elapsed().as_secs_f64();
            }
        }
        #[allow(clippy::cast_precision_loss)]
        Ok((PROBE_RUNS as u64 * bytes) as f64 / total.max(1e-9))
    }

    /// Layers `which` (model indices, at least one), to measure the CPU's rate over them
    /// ([`Self::rate`]).
    pub fn probe(ctx: &Context, model: &Model, hp: &HParams, which: &[usize]) -> Result<Self> {
        CpuLayers::load(ctx, model, hp, which, PROBE_RUNS + 1)
    }
}
