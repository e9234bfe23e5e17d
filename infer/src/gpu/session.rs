//! Text generation on the GPU: tokenizer + [`GpuEngine`], with sampling on the device (only
//! token ids come back) and per-token accounting for `--json`.

use super::engine::{GpuConfig, GpuEngine, TokenStats};
use super::ops::GpuSampleParams;
use crate::engine::Generation;
use crate::error::{InferError, Result};
use crate::sampler::SamplerConfig;
use crate::tokenizer::{StreamDecoder, Tokenizer, TokenizerSpec};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

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

    /// Tokenize a plain prompt as llama.cpp does.
    pub fn tokenize_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text, true, false)
            .map_err(|e| InferError::Tokenizer(e.to_string()))
    }

    /// Run `prompt` after what the engine holds and generate up to `max_new` tokens.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_new: usize,
        sc: &SamplerConfig,
        rng_state: &mut rand::rngs::StdRng,
        history: &mut Vec<u32>,
        mut on_text: impl FnMut(&str),
    ) -> Result<(Generation, GpuGenStats)> {
        if prompt.is_empty() {
            return Err(InferError::Invalid("empty prompt".into()));
        }
        let mut g = Generation {
            prompt_tokens: prompt.to_vec(),
            ..Generation::default()
        };
        let params = GpuSampleParams {
            temp: sc.temperature,
            top_k: sc.top_k,
            top_p: sc.top_p,
            min_p: sc.min_p,
        };
        let GpuSession {
            engine, tokenizer, ..
        } = self;
        let t0 = Instant::now();
        engine.forward(prompt)?;
        history.extend_from_slice(prompt);
        let mut tok = pick(engine, &params, sc, rng_state, history)?;
        g.prompt_secs = t0.elapsed().as_secs_f64();
        engine.take_stats();
        let mut dec = StreamDecoder::new(tokenizer);
        let t1 = Instant::now();
        let c1 = cpu_seconds();
        let mut steps = 0u64;
        for i in 0..max_new {
            g.generated_tokens.push(tok);
            history.push(tok);
            if tokenizer.is_eog(tok) {
                g.stopped_at_eog = true;
                break;
            }
            let piece = dec.push(tok);
            if !piece.is_empty() {
                on_text(&piece);
                g.text.push_str(&piece);
            }
            if i + 1 == max_new || engine.pos() + 1 > engine.n_ctx() {
                break;
            }
            engine.forward(&[tok])?;
            tok = pick(engine, &params, sc, rng_state, history)?;
            steps += 1;
        }
        let rest = dec.finish();
        if !rest.is_empty() {
            on_text(&rest);
            g.text.push_str(&rest);
        }
        g.decode_secs = t1.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - c1;
        let stats = GpuGenStats {
            decode: engine.take_stats(),
            cpu_ms_per_token: cpu * 1e3 / (steps.max(1) as f64),
        };
        Ok((g, stats))
    }
}

fn pick(
    engine: &mut GpuEngine,
    params: &GpuSampleParams,
    sc: &SamplerConfig,
    rng: &mut rand::rngs::StdRng,
    history: &[u32],
) -> Result<u32> {
    if sc.repeat_penalty != 1.0 && sc.repeat_last_n > 0 {
        let n = history.len().min(sc.repeat_last_n);
        engine.repeat_penalty(&history[history.len() - n..], sc.repeat_penalty)?;
    }
    if sc.temperature <= 0.0 {
        engine.next_token(None)
    } else {
        let u: f32 = rng.random();
        engine.next_token(Some((params, u)))
    }
}

/// A seeded generator for [`GpuSession::generate`].
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}
