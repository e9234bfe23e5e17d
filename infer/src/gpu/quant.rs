//! Launch wrappers for `kernels/quant.cu`.

/// Kernel names defined in `kernels/quant.cu`.
pub(crate) const KERNELS: &[&str] = &[];

// ---- Interface stubs the engine is written against; the gpuquant branch replaces this file. ----
use super::{DevSpan, Gpu, Result};
use llmstream::gguf::GgmlType;
#[allow(missing_docs)]
pub fn activation_row_bytes(_: GgmlType, _: usize) -> Result<usize> {
    todo!()
}
#[allow(missing_docs)]
pub fn quantize(_: &Gpu, _: GgmlType, _: DevSpan, _: usize, _: usize, _: DevSpan) -> Result<()> {
    todo!()
}
#[allow(missing_docs, clippy::too_many_arguments)]
pub fn matvec(
    _: &Gpu,
    _: GgmlType,
    _: DevSpan,
    _: usize,
    _: usize,
    _: DevSpan,
    _: usize,
    _: DevSpan,
) -> Result<()> {
    todo!()
}
#[allow(missing_docs, clippy::too_many_arguments)]
pub fn get_rows(
    _: &Gpu,
    _: GgmlType,
    _: DevSpan,
    _: usize,
    _: usize,
    _: DevSpan,
    _: usize,
    _: DevSpan,
) -> Result<()> {
    todo!()
}
