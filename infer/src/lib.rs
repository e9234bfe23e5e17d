//! Reference inference (Llama, Qwen2 on GGUF) on top of libllmstream: weights are streamed
//! through the library's reader, computed on the CPU with llama.cpp's numerics so that greedy
//! tokens agree with it, and serve as the oracle for the GPU engine.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod calibration;
pub mod chat;
pub mod config;
pub mod cpu_layers;
pub mod engine;
pub mod error;
pub mod forward;
pub mod ggml_math;
pub mod gpu;
pub mod kv;
pub mod ops;
pub mod profile;
pub mod quant;
pub mod sampler;
pub mod synth;
pub mod tokenizer;
pub mod weights;

pub use config::{Arch, HParams};
pub use engine::{Engine, Generation};
pub use error::{InferError, Result};
pub use forward::{State, Transformer};
pub use kv::KvType;
pub use sampler::{Sampler, SamplerConfig};
