//! Hyper-parameters read from GGUF metadata.

use crate::error::{InferError, Result};
use llmstream::gguf::{GgufFile, Value};

/// The architectures this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, SmolLM2 (RoPE "normal": adjacent pairs).
    Llama,
    /// Qwen2 (QKV biases, RoPE NEOX: halves).
    Qwen2,
}

/// How RoPE pairs dimensions, as llama.cpp does per architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeMode {
    /// Pairs (2i, 2i+1).
    Normal,
    /// Pairs (i, i + n_rot/2).
    Neox,
}

/// Model hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    /// Architecture.
    pub arch: Arch,
    /// Layers.
    pub n_layer: usize,
    /// Embedding width.
    pub n_embd: usize,
    /// FFN width.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Rotated dimensions per head.
    pub n_rot: usize,
    /// RoPE base frequency.
    pub rope_freq_base: f32,
    /// RoPE linear frequency scale (1 / factor for linear scaling).
    pub rope_freq_scale: f32,
    /// RoPE pairing.
    pub rope_mode: RopeMode,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Training context length.
    pub n_ctx_train: usize,
}

/// A float that some converters store as an integer.
#[allow(clippy::cast_precision_loss)] // metadata integers read as floats are small
fn as_f32(v: &Value) -> Option<f32> {
    v.as_f32().or_else(|| v.as_u64().map(|x| x as f32))
}

/// Metadata helpers over any integer or float width.
pub(crate) fn meta_usize(g: &GgufFile, key: &str) -> Result<usize> {
    let v = g.get(key).ok_or_else(|| InferError::Metadata {
        key: key.into(),
        problem: "is missing".into(),
    })?;
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| InferError::Metadata {
            key: key.into(),
            problem: format!("is not an unsigned integer ({v:?})"),
        })
}

pub(crate) fn meta_f32(g: &GgufFile, key: &str) -> Option<f32> {
    g.get(key).and_then(as_f32)
}

pub(crate) fn meta_str<'a>(g: &'a GgufFile, key: &str) -> Option<&'a str> {
    g.get_str(key)
}

impl HParams {
    /// Read and check the hyper-parameters.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch_name =
            meta_str(g, "general.architecture").ok_or_else(|| InferError::Metadata {
                key: "general.architecture".into(),
                problem: "is missing".into(),
            })?;
        let (arch, rope_mode) = match arch_name {
            "llama" => (Arch::Llama, RopeMode::Normal),
            "qwen2" => (Arch::Qwen2, RopeMode::Neox),
            other => return Err(InferError::UnsupportedArch(other.into())),
        };
        let k = |s: &str| format!("{arch_name}.{s}");
        let n_layer = meta_usize(g, &k("block_count"))?;
        let n_embd = meta_usize(g, &k("embedding_length"))?;
        let n_ff = meta_usize(g, &k("feed_forward_length"))?;
        let n_head = meta_usize(g, &k("attention.head_count"))?;
        let n_head_kv = meta_usize(g, &k("attention.head_count_kv")).unwrap_or(n_head);
        let bad = |key: &str, problem: String| InferError::Metadata {
            key: key.into(),
            problem,
        };
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 || n_layer == 0 || n_embd == 0 {
            return Err(bad(
                "attention.head_count",
                format!("heads {n_head}, kv heads {n_head_kv}, layers {n_layer}, width {n_embd} are inconsistent"),
            ));
        }
        let head_dim = meta_usize(g, &k("attention.key_length")).unwrap_or(n_embd / n_head);
        let n_rot = meta_usize(g, &k("rope.dimension_count")).unwrap_or(head_dim);
        if head_dim == 0 || n_rot > head_dim || n_rot % 2 != 0 {
            return Err(bad(
                "rope.dimension_count",
                format!("{n_rot} with head width {head_dim}"),
            ));
        }
        let rope_freq_base = meta_f32(g, &k("rope.freq_base")).unwrap_or(10_000.0);
        let mut rope_freq_scale = 1.0;
        if meta_str(g, &k("rope.scaling.type")) == Some("linear") {
            if let Some(f) = meta_f32(g, &k("rope.scaling.factor")).filter(|f| *f > 0.0) {
                rope_freq_scale = 1.0 / f;
            }
        }
        let rms_eps = meta_f32(g, &k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5);
        let n_ctx_train = meta_usize(g, &k("context_length")).unwrap_or(4096);
        Ok(Self {
            arch,
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rope_freq_base,
            rope_freq_scale,
            rope_mode,
            rms_eps,
            n_ctx_train,
        })
    }
}
