//! Launch wrappers for `kernels/ops.cu`.

/// Kernel names defined in `kernels/ops.cu`.
pub(crate) const KERNELS: &[&str] = &[];

// ---- Interface stubs the engine is written against; the gpuops branch replaces this file. ----
use super::{DevSpan, Gpu, Result};
use crate::config::RopeMode;

/// Sampling parameters on the GPU.
#[derive(Debug, Clone, Copy)]
pub struct GpuSampleParams {
    /// Temperature.
    pub temp: f32,
    /// Top-k (0 = off).
    pub top_k: usize,
    /// Top-p.
    pub top_p: f32,
    /// Min-p.
    pub min_p: f32,
}
#[allow(missing_docs, clippy::too_many_arguments)]
pub fn rms_norm(
    _: &Gpu,
    _: DevSpan,
    _: DevSpan,
    _: DevSpan,
    _: usize,
    _: usize,
    _: f32,
) -> Result<()> {
    todo!()
}
#[allow(missing_docs, clippy::too_many_arguments)]
pub fn rope(
    _: &Gpu,
    _: DevSpan,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: f32,
    _: f32,
    _: Option<DevSpan>,
    _: RopeMode,
) -> Result<()> {
    todo!()
}
#[allow(missing_docs, clippy::too_many_arguments)]
pub fn kv_store(
    _: &Gpu,
    _: DevSpan,
    _: DevSpan,
    _: DevSpan,
    _: DevSpan,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
) -> Result<()> {
    todo!()
}
#[allow(missing_docs, clippy::too_many_arguments)]
pub fn attention(
    _: &Gpu,
    _: DevSpan,
    _: DevSpan,
    _: DevSpan,
    _: DevSpan,
    _: DevSpan,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: f32,
) -> Result<()> {
    todo!()
}
#[allow(missing_docs)]
pub fn attention_workspace_bytes(_: usize, _: usize, _: usize, _: usize) -> usize {
    todo!()
}
#[allow(missing_docs)]
pub fn swiglu(_: &Gpu, _: DevSpan, _: DevSpan, _: usize) -> Result<()> {
    todo!()
}
#[allow(missing_docs)]
pub fn add(_: &Gpu, _: DevSpan, _: DevSpan, _: usize) -> Result<()> {
    todo!()
}
#[allow(missing_docs)]
pub fn add_bias(_: &Gpu, _: DevSpan, _: DevSpan, _: usize, _: usize) -> Result<()> {
    todo!()
}
#[allow(missing_docs)]
pub fn argmax(_: &Gpu, _: DevSpan, _: usize, _: DevSpan) -> Result<()> {
    todo!()
}
#[allow(missing_docs)]
pub fn repeat_penalty(_: &Gpu, _: DevSpan, _: usize, _: DevSpan, _: usize, _: f32) -> Result<()> {
    todo!()
}
#[allow(missing_docs, clippy::too_many_arguments)]
pub fn sample(
    _: &Gpu,
    _: DevSpan,
    _: usize,
    _: &GpuSampleParams,
    _: f32,
    _: DevSpan,
    _: DevSpan,
) -> Result<()> {
    todo!()
}
#[allow(missing_docs)]
pub fn sample_workspace_bytes(_: usize) -> usize {
    todo!()
}
