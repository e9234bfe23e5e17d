//! The one place that launches kernels, and the size arithmetic the wrappers check with.

use crate::gpu::{Gpu, GpuError, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// A kernel argument, in the C type the kernel declares.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    /// A device address (`T*`), or 0 for a null pointer the kernel tests for.
    Ptr(u64),
    /// `int`.
    I32(i32),
    /// `u32` (`unsigned int`).
    U32(u32),
    /// `u64` (`unsigned long long`).
    U64(u64),
    /// `float`.
    F32(f32),
}

/// Launch `kernel` on the compute stream with a 1-D block of `block` threads (the op
/// wrappers and [`crate::gpu::fast`]).
///
/// # Safety
/// `args` must match the kernel's parameter list (`kernels/ops.cu`, `kernels/fast.cu`) in number, order and type,
/// and every address among them must be device memory of this context that holds every byte
/// the kernel touches given the other arguments and the launch shape, for as long as the
/// launch runs.
pub(crate) unsafe fn launch(
    gpu: &Gpu,
    kernel: &'static str,
    grid: (u32, u32, u32),
    block: u32,
    args: &[Arg],
) -> Result<()> {
    let f = gpu.function(kernel)?;
    let mut b = gpu.stream().launch_builder(f);
    for a in args {
        match a {
            Arg::Ptr(v) | Arg::U64(v) => b.arg(v),
            Arg::I32(v) => b.arg(v),
            Arg::U32(v) => b.arg(v),
            Arg::F32(v) => b.arg(v),
        };
    }
    let cfg = LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the argument list and the memory behind it are the caller's contract (above);
    // the launch shape is within the device limits the callers check (grid y, z ≤ 65535).
    unsafe { b.launch(cfg) }.map_err(|e| GpuError::driver("cuLaunchKernel", e))?;
    Ok(())
}

/// A [`GpuError::Invalid`].
pub(crate) fn invalid(kernel: &'static str, why: impl Into<String>) -> GpuError {
    GpuError::Invalid {
        kernel,
        why: why.into(),
    }
}

/// `a · b · …` or an error naming `what`.
pub(super) fn product(kernel: &'static str, what: &str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| invalid(kernel, format!("{what} overflows: {factors:?}")))
}

pub(super) fn to_i32(kernel: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| invalid(kernel, format!("{what} {v} exceeds i32")))
}

pub(super) fn to_u32(kernel: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| invalid(kernel, format!("{what} {v} exceeds u32")))
}

pub(super) fn to_u64(v: usize) -> u64 {
    v as u64 // usize is at most 64 bits on every target CUDA supports
}

/// Blocks for a grid-stride loop over `n` elements with `block` threads each.
pub(super) fn stride_blocks(n: usize, block: u32) -> u32 {
    let want = n.div_ceil(block as usize).clamp(1, 4096);
    u32::try_from(want).unwrap_or(4096)
}
