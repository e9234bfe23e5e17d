//! `llmstream run`, `chat` and `tokenize`: the reference CPU engine behind the CLI.

use anyhow::{Context as _, Result};
use llmstream_infer::chat::{ChatMessage, ChatTemplate};
use llmstream_infer::gpu::plan::Tier;
use llmstream_infer::gpu::{GpuConfig, GpuSession, Split};
use llmstream_infer::tokenizer::Tokenizer;
use llmstream_infer::{Engine, Generation, InferError, KvType, Sampler, SamplerConfig, State};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// Options shared by `run` and `chat`.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// GGUF model file.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Compute backend: `auto` (the GPU when one is usable, else the CPU), `cuda`, or `cpu`.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// VRAM llmstream may use on the GPU (e.g. 24G, 512M); default: free VRAM less 1 GiB.
    #[arg(long, value_parser = parse_bytes)]
    pub vram_budget: Option<u64>,
    /// Host memory for the pinned-RAM tier; default: 90% of MemAvailable less 4 GiB. Layers
    /// that fit neither budget are read from storage each token.
    #[arg(long, value_parser = parse_bytes)]
    pub ram_budget: Option<u64>,
    /// Streamed layers copied ahead of use on the GPU (VRAM slots: depth + 1). One keeps the
    /// link busy from pinned RAM (a copy takes longer than the layer's compute) and leaves
    /// VRAM to resident layers.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Layers outside VRAM: `auto` splits the pinned-RAM ones between the CPU and the link by
    /// rates measured at load (hybrid decode; nothing changes when every layer fits VRAM),
    /// `gpu` streams them all over the link, `cpu` computes them all on the CPU.
    #[arg(long, default_value = "auto")]
    pub split: String,
    /// Layers the CPU computes, whatever the plan (comma-separated indices; overrides --split).
    #[arg(long, value_delimiter = ',')]
    pub cpu_layers: Option<Vec<usize>>,
    /// CPU threads (default: the count `llmstream calibrate` chose on this CPU, else all
    /// logical CPUs).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Context length in tokens.
    #[arg(short = 'c', long, default_value_t = 2048)]
    pub ctx_size: usize,
    /// KV cache type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: String,
    /// Sampling temperature (0 = greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repeat penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Tokens the repeat penalty looks back over.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long, default_value_t = 128)]
    pub n_predict: usize,
    /// Print one JSON line at the end (ids, text, rates) instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Tokens per answer at most.
    #[arg(short = 'n', long, default_value_t = 512)]
    pub n_predict: usize,
}

#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    /// GGUF model file.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Parse special tokens written in the text (`<|im_start|>`), as llama.cpp's --special.
    #[arg(long)]
    pub special: bool,
    /// Do not add BOS/EOS even where the model's metadata asks for them.
    #[arg(long)]
    pub no_bos: bool,
    /// Print `{"tokens": [...]}`.
    #[arg(long)]
    pub json: bool,
    /// The text.
    pub text: String,
}

fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    llmstream::io::parse_size(s)
        .map(|v| v as u64)
        .ok_or_else(|| format!("{s:?} is not a size (examples: 24G, 512M, 1073741824)"))
}

/// A loaded model with its sequence state and sampler, on the CPU or the GPU: what `run` and
/// `chat` drive.
#[allow(clippy::large_enum_variant)] // one per process: the size difference costs nothing
enum Runner {
    Cpu {
        engine: Box<Engine>,
        state: State,
        sampler: Sampler,
    },
    Gpu {
        session: Box<GpuSession>,
        sampler: Sampler,
    },
}

impl Runner {
    fn tokenizer(&self) -> &Tokenizer {
        match self {
            Runner::Cpu { engine, .. } => &engine.tokenizer,
            Runner::Gpu { session, .. } => &session.tokenizer,
        }
    }

    fn pos(&self) -> usize {
        match self {
            Runner::Cpu { state, .. } => state.pos(),
            Runner::Gpu { session, .. } => session.engine.pos(),
        }
    }

    fn n_ctx(&self) -> usize {
        match self {
            Runner::Cpu { state, .. } => state.n_ctx(),
            Runner::Gpu { session, .. } => session.engine.n_ctx(),
        }
    }

    fn reset(&mut self) {
        match self {
            Runner::Cpu { state, .. } => state.reset(),
            Runner::Gpu { session, .. } => session.engine.reset(),
        }
    }

    /// Run `ids` after what the sequence holds and generate up to `n` tokens; returns the
    /// generation and the backend's own figures for `--json`. The repeat penalty looks back over
    /// this call's tokens.
    fn generate(
        &mut self,
        ids: &[u32],
        n: usize,
        on_text: impl FnMut(&str),
    ) -> Result<(Generation, serde_json::Value)> {
        let mut history = Vec::new();
        Ok(match self {
            Runner::Cpu {
                engine,
                state,
                sampler,
            } => {
                let g = engine.generate(state, ids, n, sampler, &mut history, on_text)?;
                let extra = serde_json::json!({
                    "backend": "cpu",
                    "load_secs": engine.load_secs,
                    "threads": llmstream_infer::quant::threads().unwrap_or(0),
                });
                (g, extra)
            }
            Runner::Gpu { session, sampler } => {
                let (g, st) = session.generate(ids, n, sampler, &mut history, on_text)?;
                let extra = serde_json::json!({
                    "backend": "cuda",
                    "load_secs": session.engine.load_secs,
                    "threads": llmstream_infer::quant::threads().unwrap_or(0),
                    "plan": session.engine.plan.to_json(),
                    "cpu_gbps_probe": session.engine.rates.cpu_bps / 1e9,
                    "cpu_gbps_calibrated": session.engine.cpu_calibrated_bps.map(|b| b / 1e9),
                    "rates_gbps": {
                        "cpu": session.engine.rates.cpu_bps / 1e9,
                        "h2d": session.engine.rates.h2d_bps / 1e9,
                        "storage": session.engine.rates.storage_bps / 1e9,
                        "gpu_layer": session.engine.rates.gpu_bps / 1e9,
                    },
                    "split_bound_ms_per_token": session.engine.split_bound_s() * 1e3,
                    "rates_from": if session.engine.calibration.is_some() {
                        "calibration"
                    } else {
                        "probe"
                    },
                    "per_token": st.decode.to_json(),
                    "cpu_ms_per_token": st.cpu_ms_per_token,
                });
                (g, extra)
            }
        })
    }

    /// Where it ran, for the human summary line.
    fn placement(&self) -> String {
        match self {
            Runner::Cpu { .. } => String::new(),
            Runner::Gpu { session, .. } => {
                let p = &session.engine.plan;
                format!(
                    " on the GPU; layers: {} vram, {} ram, {} storage, {} cpu",
                    p.count(Tier::Vram),
                    p.count(Tier::Ram),
                    p.count(Tier::Storage),
                    p.count(Tier::Cpu)
                )
            }
        }
    }
}

impl ModelArgs {
    /// Load on the GPU for `cuda`, on the CPU for `cpu`, and for `auto` on the GPU when one is
    /// usable (falling back to the CPU with a note).
    fn load_runner(&self) -> Result<Runner> {
        match self.backend.as_str() {
            "cpu" | "host" => return self.cpu_runner(),
            "cuda" | "auto" => {}
            other => anyhow::bail!("--backend {other}: use auto, cuda or cpu"),
        }
        let cfg = GpuConfig {
            vram_budget: self.vram_budget,
            ram_budget: self.ram_budget,
            depth: self.depth.max(1),
            n_ctx: self.ctx_size,
            split: self
                .split
                .parse::<Split>()
                .map_err(|e| anyhow::anyhow!(e))?,
            cpu_layers: self.cpu_layers.clone(),
            ..GpuConfig::default()
        };
        // the CPU layers of a hybrid split run on the quant pool
        llmstream_infer::quant::set_threads(self.threads())?;
        match GpuSession::load(&self.model, cfg) {
            Ok(s) => Ok(Runner::Gpu {
                session: Box::new(s),
                sampler: Sampler::new(self.sampler_config()),
            }),
            Err(
                e @ (InferError::NoGpu(_)
                | InferError::Stream(llmstream::Error::BackendUnavailable { .. })),
            ) if self.backend == "auto" => {
                eprintln!("note: running on the CPU ({e})");
                self.cpu_runner()
            }
            Err(e) => {
                Err(e).with_context(|| format!("loading {} on the GPU", self.model.display()))
            }
        }
    }

    fn cpu_runner(&self) -> Result<Runner> {
        let engine = Engine::load(&self.model, self.threads())
            .with_context(|| format!("loading {}", self.model.display()))?;
        let state = engine.new_state(self.ctx_size, self.kv()?);
        Ok(Runner::Cpu {
            engine: Box::new(engine),
            state,
            sampler: Sampler::new(self.sampler_config()),
        })
    }

    /// Threads of the quant pool: `-t`, else the count `llmstream calibrate` chose on this
    /// CPU (on a many-core machine, leaving a core or two free can stream weights faster:
    /// docs/gpu-inference.md), else every logical CPU.
    fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(llmstream_infer::quant::default_threads)
    }

    fn sampler_config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }

    fn kv(&self) -> Result<KvType> {
        match self.kv_type.as_str() {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            other => anyhow::bail!("--kv-type {other}: use f16 or f32"),
        }
    }
}

pub fn run(a: &RunArgs) -> Result<()> {
    let mut r = a.model.load_runner()?;
    let prompt = r
        .tokenizer()
        .encode_prompt(&a.prompt)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(!prompt.is_empty(), "the prompt is empty");
    anyhow::ensure!(
        prompt.len() < r.n_ctx(),
        "the prompt ({} tokens) does not fit the context ({}; --ctx-size)",
        prompt.len(),
        r.n_ctx()
    );
    let mut out = std::io::stdout().lock();
    let (g, extra) = r.generate(&prompt, a.n_predict, |t| {
        if !a.json {
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
        }
    })?;
    if a.json {
        let mut o = serde_json::json!({
            "prompt_tokens": g.prompt_tokens,
            "generated_tokens": g.generated_tokens,
            "text": g.text,
            "prompt_tok_per_s": g.prompt_tok_per_s(),
            "decode_tok_per_s": g.decode_tok_per_s(),
            "stopped_at_eog": g.stopped_at_eog,
        });
        if llmstream_infer::profile::enabled() {
            let (phases, layers) = llmstream_infer::profile::take();
            o["cpu_layer_profile"] = serde_json::json!({
                "layer_calls": layers,
                "ms": phases.into_iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            });
        }
        if let (Some(o), serde_json::Value::Object(extra)) = (o.as_object_mut(), extra) {
            o.extend(extra);
        }
        writeln!(out, "{o}")?;
    } else {
        writeln!(out)?;
        eprintln!(
            "[{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s{}]",
            g.prompt_tokens.len(),
            g.prompt_tok_per_s(),
            g.generated_tokens.len(),
            g.decode_tok_per_s(),
            r.placement()
        );
    }
    Ok(())
}

pub fn chat(a: &ChatArgs) -> Result<()> {
    let mut r = a.model.load_runner()?;
    let template = ChatTemplate::for_tokenizer(r.tokenizer())
        .context("this model has no usable chat template")?;
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage::system(s.clone()));
    }
    let mut rendered_so_far = String::new();
    let tty = std::io::stdin().is_terminal();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if tty {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if line == "/quit" || line == "/exit" {
            break;
        }
        messages.push(ChatMessage::user(line));
        let full = template.apply(&messages, true)?;
        // Feed only what the KV cache does not hold yet (the new turn).
        let new_text = full.strip_prefix(&rendered_so_far).unwrap_or(&full);
        if new_text.len() == full.len() {
            r.reset();
        }
        let ids = r
            .tokenizer()
            .encode(new_text, r.pos() == 0, true)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            r.pos() + ids.len() + a.n_predict <= r.n_ctx(),
            "the conversation no longer fits in {} tokens of context (--ctx-size)",
            r.n_ctx()
        );
        let mut out = std::io::stdout().lock();
        let (g, _) = r.generate(&ids, a.n_predict, |t| {
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
        })?;
        writeln!(out)?;
        messages.push(ChatMessage::assistant(g.text.trim().to_string()));
        // What the model saw: the template up to the generation prompt plus its answer.
        rendered_so_far = full.clone() + &g.text;
        if !g.stopped_at_eog {
            // The cache does not end where the template would continue: re-render next time.
            rendered_so_far.clear();
        } else if let Some(&eog) = g.generated_tokens.last() {
            rendered_so_far.push_str(&String::from_utf8_lossy(
                &r.tokenizer().token_to_piece_with(eog, true),
            ));
        }
    }
    Ok(())
}

pub fn tokenize(a: &TokenizeArgs) -> Result<()> {
    let ctx = llmstream::Context::new(llmstream::Config {
        backend: llmstream::BackendChoice::Host,
        ..llmstream::Config::default()
    })?;
    let m = ctx.open_model(&a.model)?;
    let spec = llmstream_infer::tokenizer::TokenizerSpec::from_gguf(m.gguf())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tok =
        llmstream_infer::tokenizer::Tokenizer::new(spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ids = tok
        .encode(&a.text, !a.no_bos, a.special)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if a.json {
        println!("{}", serde_json::json!({ "tokens": ids }));
    } else {
        for id in ids {
            println!(
                "{id:>8} {:?}",
                String::from_utf8_lossy(&tok.token_to_piece_with(id, true))
            );
        }
    }
    Ok(())
}
