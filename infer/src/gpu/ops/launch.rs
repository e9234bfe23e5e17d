//! The one place that launches kernels, and the size arithmetic the wrappers check with.

use crate::gpu::{Gpu, GpuError, Result};
use cudarc::driver::{sys, LaunchConfig, PushKernelArg};
use std::ffi::c_void;

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

/// Kernels that start with `pdl_wait()` (`kernels/common.cuh`) and may therefore be launched
/// with programmatic dependent launch: the kernels of a decode layer, so that each one's blocks
/// start (and load their first weights) while the kernel before it finishes.
pub(crate) const PDL_KERNELS: &[&str] = &[
    "fast_mv",
    "fast_mv2",
    "fast_gate_up",
    "ops_rms_norm_q8k",
    "ops_rope_kv",
    "ops_attn_partial",
    "ops_attn_combine",
    "ops_attn_combine_q8k",
    "ops_attn_one",
    "ops_add_bias",
    "ops_copy",
    "quant_act_q8_k",
    "quant_act_q8_k16",
];

/// Launch `kernel` on the compute stream with a 1-D block of `block` threads (the op
/// wrappers and [`crate::gpu::fast`]). A kernel of [`PDL_KERNELS`] goes with the programmatic
/// stream serialization attribute when [`Gpu::pdl`] holds.
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
    if gpu.pdl() && PDL_KERNELS.contains(&kernel) {
        // SAFETY: the caller's contract (above) is what `launch_pdl` needs.
        return unsafe { launch_pdl(gpu, f.cu_function(), grid, block, args) };
    }
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

/// Most kernel parameters [`launch_pdl`] passes (the decode kernels take at most 21).
const MAX_ARGS: usize = 24;

/// `cuLaunchKernelEx` with programmatic stream serialization allowed.
///
/// # Safety
/// As [`launch`]; `f` is a kernel of [`PDL_KERNELS`] loaded in `gpu`'s context.
unsafe fn launch_pdl(
    gpu: &Gpu,
    f: sys::CUfunction,
    grid: (u32, u32, u32),
    block: u32,
    args: &[Arg],
) -> Result<()> {
    // each argument's value in its C type, then a pointer to each (what the driver reads); on
    // the stack, as this runs for every kernel of a decode layer
    if args.len() > MAX_ARGS {
        return Err(GpuError::Invalid {
            kernel: "cuLaunchKernelEx",
            why: format!("{} arguments, at most {MAX_ARGS}", args.len()),
        });
    }
    let mut words = [0u64; MAX_ARGS];
    for (w, a) in words.iter_mut().zip(args) {
        *w = match *a {
            Arg::Ptr(v) | Arg::U64(v) => v,
            Arg::I32(v) => u64::from(u32::from_ne_bytes(v.to_ne_bytes())),
            Arg::U32(v) => u64::from(v),
            Arg::F32(v) => u64::from(v.to_bits()),
        };
    }
    // little-endian: a 4-byte argument is the low half of its word, at the word's address
    let mut params = [std::ptr::null_mut::<c_void>(); MAX_ARGS];
    for (p, w) in params.iter_mut().zip(words.iter_mut()) {
        *p = std::ptr::from_mut(w).cast::<c_void>();
    }
    // SAFETY: an all-zero attribute is valid plain data (id 0, zero value); its id and the
    // one value field the id selects are set next.
    let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    let cfg = sys::CUlaunchConfig {
        gridDimX: grid.0,
        gridDimY: grid.1,
        gridDimZ: grid.2,
        blockDimX: block,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: 0,
        hStream: gpu.stream().cu_stream(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    gpu.context()
        .bind_to_thread()
        .map_err(|e| GpuError::driver("cuCtxSetCurrent", e))?;
    // SAFETY: `cfg` and `attr` live across the call; `params` holds one pointer per kernel
    // parameter, in order, each to a value of the parameter's C type (the caller's contract);
    // the driver copies the values before returning.
    let r = unsafe { sys::cuLaunchKernelEx(&cfg, f, params.as_mut_ptr(), std::ptr::null_mut()) };
    r.result()
        .map_err(|e| GpuError::driver("cuLaunchKernelEx", e))
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

#[cfg(test)]
mod tests {
    use super::PDL_KERNELS;

    /// A kernel launched with programmatic dependent launch that reads its inputs without
    /// `pdl_wait()` would race the kernel before it: each listed kernel's body must wait.
    #[test]
    fn every_pdl_kernel_waits_for_the_kernel_before_it() {
        let src = crate::gpu::nvrtc::source();
        for name in PDL_KERNELS {
            // the definition whose signature (up to its `{`) names the kernel
            let call = format!(" {name}(");
            let at = src
                .match_indices("__global__")
                .map(|(i, _)| i)
                .find(|&i| {
                    let sig = &src[i..src[i..].find('{').map_or(src.len(), |p| i + p)];
                    sig.replace('\n', " ").contains(&call)
                })
                .unwrap_or_else(|| panic!("{name}: no __global__ definition"));
            let body_end = src[at + 10..]
                .find("__global__")
                .map_or(src.len(), |p| at + 10 + p);
            let body = &src[at..body_end];
            // its parameter list, between `name(` and the `)` before the body, fits launch_pdl
            let sig = &body[..body.find('{').unwrap_or(body.len())];
            let params = &sig[sig.find(&call[1..]).map_or(0, |p| p + call.len() - 1)..];
            let n_params = params.matches(',').count() + 1;
            assert!(
                n_params <= super::MAX_ARGS,
                "{name}: {n_params} parameters, launch_pdl passes at most {}",
                super::MAX_ARGS
            );
            // directly, or through the product rows' wait (kernels/fast.cu: PdlWait), or in
            // fast_mv_rows (the body of fast_mv and fast_mv2), which takes that wait
            let rows_waits = src.find("fast_mv_rows(").is_some_and(|i| {
                src[i..]
                    .find("\n}\n")
                    .is_some_and(|e| src[i..i + e].contains("PdlWait{}"))
            });
            assert!(
                body.contains("pdl_wait();")
                    || body.contains("PdlWait{}")
                    || (rows_waits && body.contains("fast_mv_rows<")),
                "{name} never calls pdl_wait()"
            );
            assert!(
                crate::gpu::nvrtc::kernel_names().any(|k| k == *name),
                "{name} is not a loaded kernel"
            );
        }
    }
}
