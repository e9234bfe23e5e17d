//! Text generation on the GPU: tokenizer + [`GpuEngine`], with sampling on the device (only
//! token ids come back) and per-token accounting for `--json`.

use super::engine::{GpuConfig, GpuEngine, TokenStats};
use super::ops::GpuSampleParams;
use crate::engine::{generate_with, Generation, Stepper};
use crate::error::{InferError, Result};
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{Tokenizer, TokenizerSpec};
use std::path::Path;

/// A model on the GPU with its tokenizer.
#[derive(Debug)]
pub struct GpuSession {
    /// The engine.
    pub engine: GpuEngine,
    /// The tokenizer from the GGUF metadata.
    pub tokenizer: Tokenizer,
    /// The chat template, when the model has one.
    pub chat_template: Option<String>,
}

/// What a GPU generation measured besides the [`Generation`] itself.
#[derive(Debug, Clone, Default)]
pub struct GpuGenStats {
    /// Decode steps (forward calls of one token).
    pub decode: TokenStats,
    /// CPU time (user + system) of this process per decoded token, in ms.
    pub cpu_ms_per_token: f64,
}

/// User + system CPU seconds of this process so far (0 if the OS will not say).
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        (u.user_time().num_microseconds() + u.system_time().num_microseconds()) as f64 * 1e-6
    })
}

impl GpuSession {
    /// Load `path` onto the GPU.
    pub fn load(path: &Path, cfg: GpuConfig) -> Result<Self> {
        let engine = GpuEngine::load(path, cfg)?;
        let spec = TokenizerSpec::from_gguf(engine.gguf())
            .map_err(|e| InferError::Tokenizer(e.to_string()))?;
        let chat_template = spec.chat_template.clone();
        let tokenizer = Tokenizer::new(spec).map_err(|e| InferError::Tokenizer(e.to_string()))?;
        Ok(GpuSession {
            engine,
            tokenizer,
            chat_template,
        })
    }

    /// Run `prompt` after what the engine holds and generate up to `max_new` tokens with
    /// `sampler`'s settings: greedy on the GPU, or sampled there with `sampler`'s next uniform
    /// number (the same sequence the CPU sampler would draw).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_new: usize,
        sampler: &mut Sampler,
        history: &mut Vec<u32>,
        on_text: impl FnMut(&str),
    ) -> Result<(Generation, GpuGenStats)> {
        let sc = sampler.config().clone();
        let mut step = GpuStep {
            engine: &mut self.engine,
            sampler,
            params: GpuSampleParams {
                temp: sc.temperature,
                top_k: sc.top_k,
                top_p: sc.top_p,
                min_p: sc.min_p,
            },
            sc,
            decode_cpu: 0.0,
            decode_feeds: 0,
        };
        let g = generate_with(
            &mut step,
            &self.tokenizer,
            prompt,
            max_new,
            history,
            on_text,
        );
        // a call enqueued for a token the loop did not feed (it ended the generation)
        step.engine.cancel_ahead();
        let g = g?;
        let cpu = cpu_seconds() - step.decode_cpu;
        let stats = GpuGenStats {
            decode: step.engine.take_stats(),
            cpu_ms_per_token: cpu * 1e3 / (step.decode_feeds.max(1) as f64),
        };
        Ok((g, stats))
    }
}

/// The GPU side of the shared generation loop.
struct GpuStep<'a> {
    engine: &'a mut GpuEngine,
    sampler: &'a mut Sampler,
    sc: SamplerConfig,
    params: GpuSampleParams,
    /// CPU seconds when decoding started.
    decode_cpu: f64,
    /// Forward calls since decoding started.
    decode_feeds: u64,
}

impl Stepper for GpuStep<'_> {
    fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        self.decode_feeds += 1;
        self.engine.forward(tokens)
    }

    fn pick(&mut self, history: &[u32], fed_next: bool) -> Result<u32> {
        let sc = &self.sc;
        if sc.repeat_penalty != 1.0 && sc.repeat_last_n > 0 {
            let n = history.len().min(sc.repeat_last_n);
            self.engine
                .repeat_penalty(&history[history.len() - n..], sc.repeat_penalty)?;
        }
        let sample = if self.sampler.is_greedy() {
            None
        } else {
            Some((&self.params, self.sampler.draw_uniform()))
        };
        if fed_next {
            self.engine.next_token_ahead(sample)
        } else {
            self.engine.next_token(sample)
        }
    }

    fn has_room(&self) -> bool {
        self.engine.pos() < self.engine.n_ctx()
    }

    fn decode_starts(&mut self) {
        self.engine.take_stats();
        self.decode_cpu = cpu_seconds();
        self.decode_feeds = 0;
    }
}
