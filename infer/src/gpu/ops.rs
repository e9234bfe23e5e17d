//! Launch wrappers for `kernels/ops.cu`: RMSNorm, RoPE, KV-cache stores, attention, SwiGLU,
//! residual adds, argmax, repeat penalty and sampling, each numerically matched to the CPU
//! engine (`crate::ops`, `crate::forward`, `crate::sampler`).
//!
//! Every wrapper takes [`DevSpan`](super::DevSpan)s, checks each size against them and returns
//! [`GpuError::Invalid`](super::GpuError::Invalid) instead of launching when anything does not
//! fit; all launches go to [`Gpu::stream`](super::Gpu::stream). Activations are row-major `f32`.

mod attention;
mod elementwise;
pub(crate) mod launch;
mod sampling;

#[cfg(test)]
mod attention_model;
#[cfg(test)]
mod sample_model;

pub(crate) use attention::attention_q8k;
pub use attention::{
    attention, attention_workspace_bytes, ATTENTION_CHUNK, ATTENTION_MAX_HEAD_DIM,
};
pub(crate) use elementwise::rope_theta_scale;
pub use elementwise::{
    add, add_bias, copy_words, kv_store, rms_norm, rms_norm_q8k, rope, rope_kv, swiglu,
};
pub use sampling::{
    argmax, repeat_penalty, sample, sample_workspace_bytes, GpuSampleParams, SampleTrace,
    SAMPLE_MAX_VOCAB,
};

/// Kernel names defined in `kernels/ops.cu`.
pub(crate) const KERNELS: &[&str] = &[
    "ops_rms_norm",
    "ops_rms_norm_q8k",
    "ops_rope_kv",
    "ops_rope",
    "ops_kv_store",
    "ops_swiglu",
    "ops_add",
    "ops_copy",
    "ops_add_bias",
    "ops_attn_partial",
    "ops_attn_combine",
    "ops_attn_combine_q8k",
    "ops_attn_one",
    "ops_argmax",
    "ops_repeat_penalty",
    "ops_sample",
];
