//! Launch wrappers for `kernels/ops.cu`.

#[cfg(test)]
mod sample_model;

/// Kernel names defined in `kernels/ops.cu`.
pub(crate) const KERNELS: &[&str] = &[];
