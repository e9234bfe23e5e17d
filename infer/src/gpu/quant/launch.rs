//! Launch plumbing of the quant wrappers: the one `unsafe` kernel launch, grid sizing from the
//! SM count, and a cache of occupancy queries.

use std::collections::HashMap;
use std::sync::Mutex;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::CudaFunction;

use super::super::{Gpu, GpuError, Result};

/// Launch kernel `$name` with `$cfg` on the GPU's stream, the arguments being local variables
/// (the launch builder keeps references to them until the launch).
///
/// Callers guarantee what the `SAFETY` comment below relies on: the argument list matches the
/// kernel's parameter list in `kernels/quant.cu` (types and order), and every device address
/// passed is the start of a [`DevSpan`](super::super::DevSpan) the caller checked to hold every
/// byte the kernel reads or writes for the sizes passed.
macro_rules! launch {
    ($gpu:expr, $name:expr, $cfg:expr, $($arg:ident),+ $(,)?) => {{
        let func = $gpu.function($name)?;
        let mut builder = $gpu.stream().launch_builder(func);
        $( cudarc::driver::PushKernelArg::arg(&mut builder, &$arg); )+
        // SAFETY: the caller passes exactly the kernel's parameters, in order and with their
        // types (u64 device addresses and lengths, u32 counts); every address is the start of
        // a span checked by `DevSpan::need` to cover what the kernel touches for the counts
        // passed; the spans stay valid while the stream runs (their owners' contract).
        unsafe { builder.launch($cfg) }
            .map(|_| ())
            .map_err(|e| $crate::gpu::GpuError::driver("cuLaunchKernel", e))
    }};
}
pub(super) use launch;

/// `(CUfunction address, threads, shared bytes)` -> CTAs per SM.
type OccupancyCache = HashMap<(usize, u32, u32), u32>;

static SMS: Mutex<Vec<(usize, u32)>> = Mutex::new(Vec::new());
static OCCUPANCY: Mutex<Option<OccupancyCache>> = Mutex::new(None);

/// Multiprocessors of the GPU's device (cached per device ordinal).
pub(crate) fn sm_count(gpu: &Gpu) -> Result<u32> {
    let ordinal = gpu.context().ordinal();
    let mut cache = SMS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, n)) = cache.iter().find(|(o, _)| *o == ordinal) {
        return Ok(n);
    }
    let n = gpu
        .context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| GpuError::driver("cuDeviceGetAttribute", e))?;
    let n = u32::try_from(n).unwrap_or(1).max(1);
    cache.push((ordinal, n));
    Ok(n)
}

/// CTAs of `threads` threads and `shared` bytes of dynamic shared memory that fit one SM
/// (cached per function).
pub(crate) fn occupancy(f: &CudaFunction, threads: u32, shared: u32) -> Result<u32> {
    let key = (f.cu_function() as usize, threads, shared);
    let mut cache = OCCUPANCY.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if let Some(&n) = map.get(&key) {
        return Ok(n);
    }
    let n = f
        .occupancy_max_active_blocks_per_multiprocessor(threads, shared as usize, None)
        .map_err(|e| GpuError::driver("cuOccupancyMaxActiveBlocksPerMultiprocessor", e))?;
    map.insert(key, n);
    Ok(n)
}

/// CTAs for `units` units of work, `per_cta` per CTA, at most `max` (grid-stride kernels do
/// the rest), at least 1.
pub(super) fn grid_for(units: u64, per_cta: u32, max: u32) -> u32 {
    let want = units.div_ceil(u64::from(per_cta.max(1)));
    u32::try_from(want.min(u64::from(max.max(1))))
        .unwrap_or(1)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_clamped() {
        assert_eq!(grid_for(0, 4, 100), 1);
        assert_eq!(grid_for(4096, 4, 528), 528);
        assert_eq!(grid_for(4096, 4, 2000), 1024);
        assert_eq!(grid_for(4097, 4, 2000), 1025);
        assert_eq!(grid_for(u64::MAX, 1, 7), 7);
    }
}
