//! Synthetic GGUF models: real shapes, metadata and tokenizer, random weights.
//!
//! A [`SynthSpec`] (from a preset, with any field overridden) and the `tokenizer.*` metadata
//! of a real model ([`TokenizerSource`]) make a [`Plan`]: the metadata llama.cpp and
//! [`crate::HParams`] read, and the tensors of a llama or qwen2 model with llama.cpp's names
//! and types given by a [`QuantMix`]. [`write`] streams the file out: the header, then every
//! tensor generated in parallel ([`blocks`]) in windows of bounded size, written while the
//! next window is generated.
//!
//! Values are scaled so activations stay bounded through any number of layers: matrices have
//! standard deviation `gain / sqrt(row length)`, norms are about 1, qwen2's QKV biases small.
//! The same spec, seed and tokenizer give the same bytes.

pub mod blocks;
mod error;
pub mod mix;
mod plan;
mod stream;

pub use error::SynthError;
pub use mix::QuantMix;
pub use plan::{Plan, PlannedTensor};
pub use stream::write;

use crate::config::Arch;
use llmstream::gguf::{GgufFile, Value};
use std::str::FromStr;

/// The preset names [`SynthSpec::preset`] knows.
pub const PRESETS: [&str; 4] = ["llama3.1-8b", "llama3.1-70b", "tiny-llama", "tiny-qwen2"];

/// The shape and contents of a synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    /// Name written to `general.name` (the preset's, or `custom`).
    pub name: String,
    /// Architecture (qwen2 adds QKV biases).
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
    /// Training context length written to the metadata.
    pub n_ctx: usize,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Which type each matrix gets.
    pub quant: QuantMix,
    /// No `output.weight`: the output reuses `token_embd`.
    pub tied: bool,
    /// Seed of every random value.
    pub seed: u64,
    /// Standard deviation of a matrix times the square root of its row length.
    pub gain: f32,
}

impl SynthSpec {
    /// A preset of [`PRESETS`], with the `q4_k_m` mix, untied output and seed 0.
    pub fn preset(name: &str) -> Result<Self, SynthError> {
        let base = |arch, n_layer, n_embd, n_ff, n_head, n_head_kv| Self {
            name: name.to_owned(),
            arch,
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            n_ctx: 131_072,
            rope_base: 500_000.0,
            rms_eps: 1e-5,
            quant: QuantMix::Q4KM,
            tied: false,
            seed: 0,
            gain: 1.0,
        };
        Ok(match name {
            "llama3.1-8b" => base(Arch::Llama, 32, 4096, 14336, 32, 8),
            "llama3.1-70b" => base(Arch::Llama, 80, 8192, 28672, 64, 8),
            "tiny-llama" => Self {
                n_ctx: 2048,
                rope_base: 10_000.0,
                ..base(Arch::Llama, 4, 256, 512, 4, 2)
            },
            "tiny-qwen2" => Self {
                n_ctx: 2048,
                rope_base: 1_000_000.0,
                rms_eps: 1e-6,
                ..base(Arch::Qwen2, 4, 256, 512, 4, 2)
            },
            other => return Err(SynthError::UnknownPreset(other.to_owned())),
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd.checked_div(self.n_head).unwrap_or(0)
    }

    /// The GGUF architecture name.
    pub fn arch_name(&self) -> &'static str {
        arch_name(self.arch)
    }

    /// Checks the dimensions make a model the inference crate runs.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::Shape(m));
        if self.n_layer == 0 || self.n_embd == 0 || self.n_ff == 0 || self.n_ctx == 0 {
            return bad(format!(
                "layers {}, embedding {}, ffn {} and context {} must all be positive",
                self.n_layer, self.n_embd, self.n_ff, self.n_ctx
            ));
        }
        if self.n_head == 0 || self.n_embd % self.n_head != 0 {
            return bad(format!(
                "embedding width {} is not divisible by {} heads",
                self.n_embd, self.n_head
            ));
        }
        if self.n_head_kv == 0 || self.n_head % self.n_head_kv != 0 {
            return bad(format!(
                "{} heads are not divisible by {} KV heads",
                self.n_head, self.n_head_kv
            ));
        }
        if self.head_dim() % 2 != 0 {
            return bad(format!(
                "head width {} is odd (RoPE rotates pairs)",
                self.head_dim()
            ));
        }
        if self.n_layer >= usize::try_from(llmstream::gguf::MAX_LAYERS).unwrap_or(usize::MAX) {
            return bad(format!("{} layers is too many", self.n_layer));
        }
        let all = [
            self.n_layer,
            self.n_embd,
            self.n_ff,
            self.n_head,
            self.n_ctx,
        ];
        if all.iter().any(|&x| u32::try_from(x).is_err()) {
            return bad("a dimension does not fit in 32 bits".into());
        }
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if !(positive(self.rope_base) && positive(self.rms_eps) && positive(self.gain)) {
            return bad(format!(
                "rope base {}, rms eps {} and gain {} must be positive and finite",
                self.rope_base, self.rms_eps, self.gain
            ));
        }
        Ok(())
    }
}

/// The GGUF architecture name of `arch`.
pub fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Llama => "llama",
        Arch::Qwen2 => "qwen2",
    }
}

/// `llama` or `qwen2`.
pub fn parse_arch(s: &str) -> Result<Arch, SynthError> {
    match s.to_ascii_lowercase().as_str() {
        "llama" => Ok(Arch::Llama),
        "qwen2" => Ok(Arch::Qwen2),
        _ => Err(SynthError::UnknownArch(s.to_owned())),
    }
}

impl FromStr for SynthSpec {
    type Err = SynthError;

    /// A preset by name.
    fn from_str(s: &str) -> Result<Self, SynthError> {
        Self::preset(s)
    }
}

/// The tokenizer of a real model: its `tokenizer.*` metadata, copied as is.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerSource {
    /// Every `tokenizer.*` entry, in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tokens in `tokenizer.ggml.tokens`: the vocabulary size.
    pub n_vocab: usize,
}

impl TokenizerSource {
    /// The `tokenizer.*` entries of `g`, which must list its tokens.
    pub fn from_gguf(g: &GgufFile) -> Result<Self, SynthError> {
        let n_vocab = g
            .get_array("tokenizer.ggml.tokens")
            .map(<[Value]>::len)
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                SynthError::Tokenizer("no tokenizer.ggml.tokens array (or it is empty)".into())
            })?;
        let metadata = g
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .cloned()
            .collect();
        Ok(Self { metadata, n_vocab })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for p in PRESETS {
            let s = SynthSpec::preset(p).unwrap();
            s.validate().unwrap();
            assert_eq!(s.head_dim() % 64, 0, "{p}");
        }
        let s = SynthSpec::preset("llama3.1-70b").unwrap();
        assert_eq!((s.n_layer, s.n_embd, s.n_ff), (80, 8192, 28672));
        assert!(matches!(
            SynthSpec::preset("gpt-5"),
            Err(SynthError::UnknownPreset(_))
        ));
    }

    #[test]
    fn bad_shapes_are_refused() {
        let ok = SynthSpec::preset("tiny-llama").unwrap();
        for (spec, needle) in [
            (
                SynthSpec {
                    n_head: 3,
                    ..ok.clone()
                },
                "not divisible by 3 heads",
            ),
            (
                SynthSpec {
                    n_head_kv: 3,
                    ..ok.clone()
                },
                "KV heads",
            ),
            (
                SynthSpec {
                    n_layer: 0,
                    ..ok.clone()
                },
                "positive",
            ),
            (
                SynthSpec {
                    n_embd: 4 * 33,
                    ..ok.clone()
                },
                "odd",
            ),
            (
                SynthSpec {
                    gain: f32::NAN,
                    ..ok.clone()
                },
                "finite",
            ),
        ] {
            let e = spec.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
