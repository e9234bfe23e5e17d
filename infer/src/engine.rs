//! A loaded model with its tokenizer, and a generation loop with timings: what the CLI and
//! applications call.

use crate::config::HParams;
use crate::error::{InferError, Result};
use crate::forward::{State, Transformer};
use crate::kv::KvType;
use crate::sampler::Sampler;
use crate::tokenizer::{Tokenizer, TokenizerSpec};
use crate::weights::Weights;
use llmstream::{BackendChoice, Config, Context};
use std::path::Path;
use std::time::Instant;

/// Model + tokenizer, loaded through libllmstream (host backend).
#[derive(Debug)]
pub struct Engine {
    /// The transformer.
    pub model: Transformer,
    /// The tokenizer from the GGUF metadata.
    pub tokenizer: Tokenizer,
    /// The chat template (`tokenizer.chat_template`), when the model has one.
    pub chat_template: Option<String>,
    /// Seconds spent loading.
    pub load_secs: f64,
    /// The streaming statistics of the load.
    pub load_stats: llmstream::Stats,
}

/// Timings and ids of one generation.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    /// Prompt ids.
    pub prompt_tokens: Vec<u32>,
    /// Generated ids (including a final end-of-generation token, if one was produced).
    pub generated_tokens: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// Seconds spent on the prompt.
    pub prompt_secs: f64,
    /// Seconds spent generating after the prompt.
    pub decode_secs: f64,
    /// True when generation stopped at an end-of-generation token.
    pub stopped_at_eog: bool,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prompt_tok_per_s(&self) -> f64 {
        self.prompt_tokens.len() as f64 / self.prompt_secs.max(1e-9)
    }

    /// Generated tokens per second (each decoded token after the first comes from one forward
    /// pass; the first is sampled from the prompt's logits).
    pub fn decode_tok_per_s(&self) -> f64 {
        let steps = self.generated_tokens.len().saturating_sub(1);
        steps as f64 / self.decode_secs.max(1e-9)
    }
}

impl Engine {
    /// Load a GGUF model and its tokenizer with `threads` CPU threads.
    pub fn load(path: &Path, threads: usize) -> Result<Self> {
        crate::quant::set_threads(threads.max(1)).map_err(|e| InferError::Quant(e.to_string()))?;
        let t = Instant::now();
        let mut cfg = Config::from_env()?;
        cfg.backend = BackendChoice::Host;
        let ctx = Context::new(cfg)?;
        let m = ctx.open_model(path)?;
        let hp = HParams::from_gguf(m.gguf())?;
        let spec =
            TokenizerSpec::from_gguf(m.gguf()).map_err(|e| InferError::Tokenizer(e.to_string()))?;
        let chat_template = spec.chat_template.clone();
        let tokenizer = Tokenizer::new(spec).map_err(|e| InferError::Tokenizer(e.to_string()))?;
        let w = Weights::load(&ctx, &m, &hp)?;
        Ok(Self {
            model: Transformer { hp, w },
            tokenizer,
            chat_template,
            load_secs: t.elapsed().as_secs_f64(),
            load_stats: ctx.stats(),
        })
    }

    /// A new sequence state of `n_ctx` positions.
    pub fn new_state(&self, n_ctx: usize, kv: KvType) -> State {
        self.model.new_state(n_ctx, kv)
    }

    /// Tokenize a plain prompt as llama.cpp does (BOS per metadata, no special-token parsing).
    pub fn tokenize_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode_prompt(text)
            .map_err(|e| InferError::Tokenizer(e.to_string()))
    }

    /// Run `prompt` (ids) after what `state` holds, then generate up to `max_new` tokens,
    /// calling `on_text` with each complete piece of text as it is produced. Stops at an
    /// end-of-generation token or when the context is full.
    pub fn generate(
        &self,
        state: &mut State,
        prompt: &[u32],
        max_new: usize,
        sampler: &mut Sampler,
        history: &mut Vec<u32>,
        on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let mut step = CpuStep {
            model: &self.model,
            state,
            sampler,
            logits: Vec::new(),
        };
        generate_with(
            &mut step,
            &self.tokenizer,
            prompt,
            max_new,
            history,
            on_text,
        )
    }
}

/// One backend's side of a generation loop.
pub(crate) trait Stepper {
    /// Run `tokens` at the next positions.
    fn feed(&mut self, tokens: &[u32]) -> Result<()>;
    /// The next token from the last `feed`'s logits; `history` is everything seen so far.
    /// `fed_next`: the loop feeds the token back unless it ends the generation (a backend may
    /// start on that call before the host has the token).
    fn pick(&mut self, history: &[u32], fed_next: bool) -> Result<u32>;
    /// Whether one more position fits in the context.
    fn has_room(&self) -> bool;
    /// Called when the prompt is done and decoding starts.
    fn decode_starts(&mut self) {}
}

struct CpuStep<'a> {
    model: &'a Transformer,
    state: &'a mut State,
    sampler: &'a mut Sampler,
    logits: Vec<f32>,
}

impl Stepper for CpuStep<'_> {
    fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        self.logits = self.model.forward(self.state, tokens)?;
        Ok(())
    }

    fn pick(&mut self, history: &[u32], _fed_next: bool) -> Result<u32> {
        Ok(self.sampler.sample(&self.logits, history))
    }

    fn has_room(&self) -> bool {
        self.state.pos() < self.state.n_ctx()
    }
}

/// The generation loop shared by the CPU and GPU engines: run the prompt, then pick, stream the
/// text and feed each token back until an end-of-generation token, `max_new` tokens or a full
/// context. Prompt time includes picking the first token (the GPU synchronises there).
pub(crate) fn generate_with(
    step: &mut impl Stepper,
    tokenizer: &crate::tokenizer::Tokenizer,
    prompt: &[u32],
    max_new: usize,
    history: &mut Vec<u32>,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    let mut g = Generation {
        prompt_tokens: prompt.to_vec(),
        ..Generation::default()
    };
    if prompt.is_empty() {
        return Err(InferError::Invalid("empty prompt".into()));
    }
    let t0 = Instant::now();
    step.feed(prompt)?;
    history.extend_from_slice(prompt);
    if max_new == 0 {
        g.prompt_secs = t0.elapsed().as_secs_f64();
        return Ok(g);
    }
    let mut tok = step.pick(history, max_new > 1)?;
    g.prompt_secs = t0.elapsed().as_secs_f64();
    step.decode_starts();
    let mut dec = crate::tokenizer::StreamDecoder::new(tokenizer);
    let t1 = Instant::now();
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
        if i + 1 == max_new || !step.has_room() {
            break;
        }
        step.feed(&[tok])?;
        tok = step.pick(history, i + 2 < max_new)?;
    }
    let rest = dec.finish();
    if !rest.is_empty() {
        on_text(&rest);
        g.text.push_str(&rest);
    }
    g.decode_secs = t1.elapsed().as_secs_f64();
    Ok(g)
}
