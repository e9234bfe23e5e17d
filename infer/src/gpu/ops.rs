//! Launch wrappers for `kernels/ops.cu`.

/// Kernel names defined in `kernels/ops.cu`.
pub(crate) const KERNELS: &[&str] = &[];
