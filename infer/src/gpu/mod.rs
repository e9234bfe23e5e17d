//! The CUDA inference path: kernels compiled at run time with NVRTC (sources in `kernels/`),
//! device buffers, and launch wrappers checked against the CPU engine.
//!
//! - [`nvrtc`]: compiles the embedded sources once per GPU architecture, caches the PTX on disk,
//!   and loads every kernel once ([`Gpu::function`]).
//! - [`mem`]: device allocations and bounds-checked spans ([`DevBuf`], [`DevSpan`]) that the
//!   launch wrappers take, so no wrapper can be handed a range past an allocation.
//! - [`quant`]: activation quantization, dequant-fused matrix-vector products and row lookups for
//!   every weight type the CPU engine supports.
//! - [`ops`]: RMSNorm, RoPE, KV-cache stores, attention, SwiGLU, residual adds, argmax, sampling.
//! - [`plan`]: the tier planner (VRAM / pinned RAM / storage per layer).
//! - [`engine`]: the forward pass over tiered weights with the copy/compute pipeline.

pub mod engine;
mod error;
mod fast;
pub mod mem;
pub mod nvrtc;
pub mod ops;
pub mod plan;
pub mod quant;
pub mod session;

pub use engine::{GpuConfig, GpuEngine, TokenStats};
pub use error::{GpuError, Result};
pub use mem::{DevBuf, DevSpan};
pub use nvrtc::Gpu;
pub use plan::Split;
pub use session::{GpuGenStats, GpuSession};
