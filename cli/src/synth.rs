//! `llmstream synth -o OUT.gguf`: write a synthetic GGUF model with real shapes, a real
//! tokenizer and random weights (see `llmstream_infer::synth`), for benchmarks on machines
//! that cannot download models.
//!
//! The file is written to `OUT.tmp`, synced, then renamed to `OUT`; an existing `OUT` is kept
//! unless `--force`. Free space is checked before the first byte is written.

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use llmstream::gguf::{GgufFile, WriteError};
use llmstream_infer::synth::{self, Plan, SynthError, SynthSpec, TokenizerSource};
use std::ffi::{CString, OsString};
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The tokenizer source used when `--tokenizer-from` is not given, under the shared directory.
const DEFAULT_TOKENIZER: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Arguments of `llmstream synth`.
#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// The GGUF file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Shape preset: llama3.1-8b, llama3.1-70b, tiny-llama, tiny-qwen2.
    #[arg(long, default_value = "tiny-llama")]
    pub preset: String,
    /// Architecture: llama, or qwen2 (adds QKV biases).
    #[arg(long)]
    pub arch: Option<String>,
    /// Layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Embedding width.
    #[arg(long)]
    pub embd: Option<usize>,
    /// FFN width.
    #[arg(long)]
    pub ff: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Key/value heads.
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Training context length written to the metadata.
    #[arg(long)]
    pub ctx: Option<usize>,
    /// RoPE base frequency.
    #[arg(long)]
    pub rope_base: Option<f32>,
    /// Quant mix: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, q6_k (one type for
    /// every matrix), q4_k_m (as llama.cpp), all (every type in turn) [preset's: q4_k_m].
    #[arg(long)]
    pub quant: Option<String>,
    /// Copy the `tokenizer.*` metadata (and so the vocabulary size) from this GGUF file
    /// [default: the shared SmolLM2 model].
    #[arg(long)]
    pub tokenizer_from: Option<PathBuf>,
    /// Seed of the random weights (same seed, same bytes).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tie the output to the token embeddings (no output.weight).
    #[arg(long)]
    pub tied: bool,
    /// Overwrite OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
}

impl SynthArgs {
    /// The preset with the explicit fields applied.
    fn spec(&self) -> Result<SynthSpec> {
        let mut s = SynthSpec::preset(&self.preset)?;
        let shape = [self.layers, self.embd, self.ff, self.heads, self.kv_heads];
        if self.arch.is_some() || shape.iter().any(Option::is_some) {
            s.name = format!("{} (custom)", s.name);
        }
        if let Some(a) = &self.arch {
            s.arch = synth::parse_arch(a)?;
        }
        s.n_layer = self.layers.unwrap_or(s.n_layer);
        s.n_embd = self.embd.unwrap_or(s.n_embd);
        s.n_ff = self.ff.unwrap_or(s.n_ff);
        s.n_head = self.heads.unwrap_or(s.n_head);
        s.n_head_kv = self.kv_heads.unwrap_or(s.n_head_kv);
        s.n_ctx = self.ctx.unwrap_or(s.n_ctx);
        s.rope_base = self.rope_base.unwrap_or(s.rope_base);
        if let Some(q) = &self.quant {
            s.quant = q.parse()?;
        }
        s.tied = self.tied;
        s.seed = self.seed;
        Ok(s)
    }
}

/// `$LLMSTREAM_SHARED_DIR/models/...`, else `shared/` beside the source tree, else `shared/`
/// beside or inside the current directory.
fn default_tokenizer() -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("LLMSTREAM_SHARED_DIR") {
        tried.push(PathBuf::from(dir).join(DEFAULT_TOKENIZER));
    }
    tried.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared")
            .join(DEFAULT_TOKENIZER),
    );
    tried.push(Path::new("../shared").join(DEFAULT_TOKENIZER));
    tried.push(Path::new("shared").join(DEFAULT_TOKENIZER));
    if let Some(p) = tried.iter().find(|p| p.exists()) {
        return Ok(p.clone());
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "no tokenizer source: pass --tokenizer-from MODEL.gguf (any GGUF with tokenizer.* \
         metadata, a synthetic one too); looked for {}",
        list.join(", ")
    )
}

/// Bytes available to an unprivileged user on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string alive for the call; `st` points to writable
    // memory of the size of a `statvfs`, which the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    // fsblkcnt_t and c_ulong are 32 bits on some targets, 64 on others.
    #[allow(clippy::useless_conversion)]
    let (avail, frsize) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Some(avail.saturating_mul(frsize))
}

fn gb(bytes: u64) -> f64 {
    // Display only.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    b / 1e9
}

/// `4.47 GB`, or `3.56 MB` below a gigabyte.
fn size(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.2} GB", gb(bytes))
    } else {
        format!("{:.2} MB", gb(bytes) * 1e3)
    }
}

/// Run the command.
pub fn run(a: &SynthArgs) -> Result<()> {
    let spec = a.spec()?;
    let tok_path = match &a.tokenizer_from {
        Some(p) => p.clone(),
        None => default_tokenizer()?,
    };
    let tok_file = GgufFile::open(&tok_path)
        .with_context(|| format!("reading the tokenizer source {}", tok_path.display()))?;
    let tok = TokenizerSource::from_gguf(&tok_file)
        .with_context(|| format!("tokenizer source {}", tok_path.display()))?;
    let plan = Plan::new(&spec, &tok)?;
    let len = plan.file_len();

    if a.output.exists() && !a.force {
        bail!(
            "{} exists; pass --force to overwrite it",
            a.output.display()
        );
    }
    let mut tmp_name = OsString::from(a.output.as_os_str());
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let dir = match a.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let reclaimed = std::fs::metadata(&tmp).map_or(0, |m| m.len());
    if let Some(free) = free_bytes(&dir) {
        if free.saturating_add(reclaimed) < len {
            bail!(
                "not enough disk space in {}: the model takes {:.2} GB, {:.2} GB are free",
                dir.display(),
                gb(len),
                gb(free.saturating_add(reclaimed))
            );
        }
    }

    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let pb = if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(len);
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let written = synth::write(&plan, file, &|n| pb.set_position(n)).and_then(|f| {
        f.sync_all().map_err(|source| {
            SynthError::Write(WriteError::Io {
                what: "the file (fsync)",
                offset: len,
                source,
            })
        })
    });
    pb.finish_and_clear();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        let full = matches!(&e, SynthError::Write(WriteError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::StorageFull);
        if full {
            bail!(
                "disk full writing {} ({:.2} GB needed); the partial file was removed",
                tmp.display(),
                gb(len)
            );
        }
        return Err(anyhow::Error::new(e).context(format!("writing {}", tmp.display())));
    }
    std::fs::rename(&tmp, &a.output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), a.output.display()))?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "wrote {}: {}, {} {} layers, {} tensors, {} ({} tokens) in {:.1} s: {:.2} GB/s",
        a.output.display(),
        size(len),
        spec.arch_name(),
        spec.n_layer,
        plan.tensors().len(),
        spec.quant,
        tok.n_vocab,
        secs,
        gb(len) / secs.max(1e-9)
    );
    Ok(())
}
