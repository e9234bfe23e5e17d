//! Launch wrapper for `kernels/fast.cu`: the single-token product for `Q4_K` (most of a
//! `Q4_K_M` model), tuned for decode (one warp per row, 16-byte loads from global memory).
//! [`crate::gpu::quant::matvec`] takes this path for one activation row unless
//! `LLMSTREAM_FAST_MV=0`. On an H100 (`gpu_matvec_bench`, same run): 4096 x 14336 at 51% of
//! the device-to-device copy bandwidth against 33% for the general kernel. A `Q6_K` variant
//! of the same design measured 45-49% against the general kernel's 56%, so `Q6_K` stays there.

use super::mem::DevSpan;
use super::{Gpu, GpuError, Result};
use cudarc::driver::LaunchConfig;
use llmstream::gguf::GgmlType;
use std::sync::OnceLock;

/// Kernel names defined in `kernels/fast.cu`.
pub(crate) const KERNELS: &[&str] = &["fast_mv_q4_k_n1"];

const WARPS: u32 = 8;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("LLMSTREAM_FAST_MV").map_or(true, |v| v != "0"))
}

/// `y = W x` for one Q8_K activation row when `wty` has a fast kernel; `Ok(false)` when not
/// (the caller takes the general path). Spans were checked by the caller; checked again here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn try_matvec_n1(
    gpu: &Gpu,
    wty: GgmlType,
    w: DevSpan,
    rows: usize,
    cols: usize,
    xq: DevSpan,
    y: DevSpan,
) -> Result<bool> {
    let (name, block_bytes, align) = match wty {
        GgmlType::Q4_K => ("fast_mv_q4_k_n1", 144usize, 16u64),
        _ => return Ok(false),
    };
    if !enabled() || cols % 256 != 0 {
        return Ok(false);
    }
    let invalid = |why: String| GpuError::Invalid { kernel: name, why };
    let nsb = cols / 256;
    w.need(name, "weights", rows * nsb * block_bytes)?;
    xq.need(name, "activations", nsb * 292)?;
    y.need(name, "output", rows * 4)?;
    if w.ptr() % align != 0 || xq.ptr() % 4 != 0 || y.ptr() % 4 != 0 {
        return Err(invalid("misaligned span".into()));
    }
    let rows32 = u32::try_from(rows).map_err(|_| invalid(format!("{rows} rows")))?;
    let nsb32 = u32::try_from(nsb).map_err(|_| invalid(format!("{nsb} blocks")))?;
    let grid = rows32.div_ceil(WARPS);
    let cfg = LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (WARPS * 32, 1, 1),
        shared_mem_bytes: 0,
    };
    let (wp, xp, yp) = (w.ptr(), xq.ptr(), y.ptr());
    let func = gpu.function(name)?;
    let mut b = gpu.stream().launch_builder(func);
    cudarc::driver::PushKernelArg::arg(&mut b, &wp);
    cudarc::driver::PushKernelArg::arg(&mut b, &xp);
    cudarc::driver::PushKernelArg::arg(&mut b, &yp);
    cudarc::driver::PushKernelArg::arg(&mut b, &rows32);
    cudarc::driver::PushKernelArg::arg(&mut b, &nsb32);
    // SAFETY: the arguments are the kernel's parameters in order (three device addresses, two
    // u32 counts); the spans cover `rows` rows of `nsb` blocks, `nsb` activation blocks and
    // `rows` outputs (checked above), which is all the kernel touches (one warp per row below
    // `rows`); the spans outlive the launch (their owners' contract).
    unsafe { b.launch(cfg) }.map_err(|e| GpuError::driver("cuLaunchKernel", e))?;
    Ok(true)
}
