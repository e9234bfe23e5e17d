//! What can go wrong planning or writing a synthetic model.

use llmstream::gguf::{GgmlType, WriteError};

/// Errors of [`super`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// A preset name that is not one of [`super::PRESETS`].
    #[error("unknown preset {0:?} (known: {known})", known = super::PRESETS.join(", "))]
    UnknownPreset(String),
    /// A quant mix name that [`super::QuantMix`] does not know.
    #[error(
        "unknown quant mix {0:?} (known: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, \
         q5_k, q6_k, q4_k_m, all)"
    )]
    UnknownQuant(String),
    /// An architecture other than llama and qwen2.
    #[error("unknown architecture {0:?} (known: llama, qwen2)")]
    UnknownArch(String),
    /// Dimensions that do not make a model.
    #[error("bad model shape: {0}")]
    Shape(String),
    /// A matrix whose rows are not whole blocks of the type the mix gives it.
    #[error(
        "tensor {tensor}: rows of {cols} values are not whole {ty} blocks of {block} (choose \
         dims that are multiples of {block}, or another --quant)"
    )]
    NotWholeBlocks {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// Its row length.
        cols: u64,
        /// The type's block size.
        block: u64,
    },
    /// A type the generator cannot fill.
    #[error("cannot generate {ty} data{reason}")]
    Unsupported {
        /// The type.
        ty: GgmlType,
        /// Why, with a leading separator, or empty.
        reason: &'static str,
    },
    /// The tokenizer source has no usable vocabulary.
    #[error("tokenizer source: {0}")]
    Tokenizer(String),
    /// The GGUF writer refused something or the output failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The thread writing the file stopped unexpectedly.
    #[error("the writer thread stopped: {0}")]
    WriterGone(String),
}
