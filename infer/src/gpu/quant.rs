//! Launch wrappers for `kernels/quant.cu`.

/// Kernel names defined in `kernels/quant.cu`.
pub(crate) const KERNELS: &[&str] = &[];
