//! Errors of the inference crate.

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// The streaming library failed (open, read, GGUF).
    #[error(transparent)]
    Stream(#[from] llmstream::Error),
    /// The architecture is not one this crate runs.
    #[error("unsupported architecture {0:?}: supported are llama (Llama 2, Llama 3.x, SmolLM2) and qwen2")]
    UnsupportedArch(String),
    /// A metadata key is missing or has the wrong type.
    #[error("model metadata: {key} {problem}")]
    Metadata {
        /// The key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A tensor is missing or has the wrong shape or type.
    #[error("tensor {name}: {problem}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// Quantized math rejected its input.
    #[error("quantized math: {0}")]
    Quant(String),
    /// Tokenizer failure.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// No usable GPU (no driver, no device, no NVRTC): callers may fall back to the CPU.
    #[error("no usable GPU: {0}")]
    NoGpu(String),
    /// The CUDA path failed (no device, NVRTC, a driver call, a launch).
    #[error("gpu: {0}")]
    Gpu(String),
    /// A request the model cannot serve (context full, bad token id ...).
    #[error("{0}")]
    Invalid(String),
}

/// Result alias.
pub type Result<T, E = InferError> = std::result::Result<T, E>;
