//! The CUDA backend over the driver API, loaded at run time through cudarc.
//!
//! One of the few modules with `unsafe`: raw driver handles. Every driver call goes through
//! [`check`], which turns a `CUresult` into a typed [`Error::Cuda`]; `Drop` impls never panic
//! (failures are logged).

use crate::error::{Error, Result};
use cudarc::driver::sys;
use std::ffi::c_void;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

fn check(op: &'static str, r: sys::CUresult) -> Result<()> {
    if r == sys::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    Err(Error::Cuda {
        op,
        message: format!("{r:?}"),
    })
}

#[derive(Debug)]
struct Shared {
    ctx: sys::CUcontext,
    dev: sys::CUdevice,
    stream: sys::CUstream,
    events: Mutex<Vec<sys::CUevent>>,
    name: String,
    driver_version: i32,
}

// SAFETY: CUDA driver handles (context, stream, events) may be used from any thread once the
// context is made current there (`bind`), which every method does; the event pool is behind a
// mutex.
unsafe impl Send for Shared {}
// SAFETY: see above.
unsafe impl Sync for Shared {}

impl Shared {
    fn bind(&self) -> Result<()> {
        // SAFETY: `ctx` is the retained primary context, valid until `Shared` drops.
        check("cuCtxSetCurrent", unsafe { sys::cuCtxSetCurrent(self.ctx) })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: handles created in `CudaBackend::new` and by the event pool, released once
        // here after every user (buffers, tickets hold an Arc) is gone.
        unsafe {
            let _ = sys::cuCtxSetCurrent(self.ctx);
            if let Ok(evs) = self.events.get_mut() {
                for e in evs.drain(..) {
                    let _ = sys::cuEventDestroy_v2(e);
                }
            }
            let _ = sys::cuStreamDestroy_v2(self.stream);
            let _ = sys::cuDevicePrimaryCtxRelease_v2(self.dev);
        }
    }
}

/// A CUDA device with a dedicated copy stream.
#[derive(Debug, Clone)]
pub(crate) struct CudaBackend {
    shared: Arc<Shared>,
}

impl CudaBackend {
    /// Load libcuda, pick device `ordinal`, retain its primary context and make a copy stream.
    pub fn new(ordinal: usize) -> Result<Self> {
        let unavailable = |reason: String| Error::BackendUnavailable {
            backend: "cuda",
            reason,
        };
        // cudarc panics when a library or symbol is missing; keep that inside this call.
        let loaded = std::panic::catch_unwind(|| {
            // SAFETY: only tries to dlopen the driver library.
            unsafe { sys::is_culib_present() }
        })
        .unwrap_or(false);
        if !loaded {
            return Err(unavailable(
                "libcuda.so could not be loaded (no NVIDIA driver)".into(),
            ));
        }
        let r = std::panic::catch_unwind(move || Self::init(ordinal));
        match r {
            Ok(r) => r.map_err(|e| unavailable(e.to_string())),
            Err(_) => Err(unavailable(
                "the CUDA driver library lacks a needed symbol".into(),
            )),
        }
    }

    fn init(ordinal: usize) -> Result<Self> {
        let ord =
            i32::try_from(ordinal).map_err(|_| Error::InvalidArgument("device ordinal".into()))?;
        // SAFETY: plain driver calls with valid out-pointers; handles are checked before use.
        unsafe {
            check("cuInit", sys::cuInit(0))?;
            let mut count = 0;
            check("cuDeviceGetCount", sys::cuDeviceGetCount(&mut count))?;
            if ord >= count {
                return Err(Error::Cuda {
                    op: "cuDeviceGet",
                    message: format!("device {ord} requested, {count} present"),
                });
            }
            let mut dev = 0;
            check("cuDeviceGet", sys::cuDeviceGet(&mut dev, ord))?;
            let mut name = [0 as std::ffi::c_char; 256];
            check(
                "cuDeviceGetName",
                sys::cuDeviceGetName(name.as_mut_ptr(), 255, dev),
            )?;
            let name = std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned();
            let mut driver_version = 0;
            check(
                "cuDriverGetVersion",
                sys::cuDriverGetVersion(&mut driver_version),
            )?;
            let mut ctx = std::ptr::null_mut();
            check(
                "cuDevicePrimaryCtxRetain",
                sys::cuDevicePrimaryCtxRetain(&mut ctx, dev),
            )?;
            check("cuCtxSetCurrent", sys::cuCtxSetCurrent(ctx))?;
            let mut stream = std::ptr::null_mut();
            let created = sys::cuStreamCreate(
                &mut stream,
                sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32,
            );
            if let Err(e) = check("cuStreamCreate", created) {
                let _ = sys::cuDevicePrimaryCtxRelease_v2(dev);
                return Err(e);
            }
            Ok(Self {
                shared: Arc::new(Shared {
                    ctx,
                    dev,
                    stream,
                    events: Mutex::new(Vec::new()),
                    name,
                    driver_version,
                }),
            })
        }
    }

    pub fn describe(&self) -> String {
        let v = self.shared.driver_version;
        format!(
            "{}, driver API {}.{}",
            self.shared.name,
            v / 1000,
            (v % 1000) / 10
        )
    }

    pub fn bind_thread(&self) -> Result<()> {
        self.shared.bind()
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.shared.bind()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid out-pointers; context bound above.
        check("cuMemGetInfo", unsafe {
            sys::cuMemGetInfo_v2(&mut free, &mut total)
        })?;
        Ok((free, total))
    }

    pub fn register_host(&self, ptr: *mut u8, len: usize) -> Result<()> {
        self.shared.bind()?;
        // SAFETY: `ptr..ptr+len` is a live page-aligned mapping owned by the caller, which
        // unregisters it before unmapping.
        check("cuMemHostRegister", unsafe {
            sys::cuMemHostRegister_v2(ptr.cast::<c_void>(), len, sys::CU_MEMHOSTREGISTER_PORTABLE)
        })
    }

    /// Register a read-only mapping (the daemon's sealed shared RAM tier) for DMA.
    pub fn register_host_read_only(&self, ptr: *mut u8, len: usize) -> Result<()> {
        self.shared.bind()?;
        // SAFETY: `ptr..ptr+len` is a live read-only mapping owned by the caller, which
        // unregisters it before unmapping; READ_ONLY tells the driver it will never be written.
        check("cuMemHostRegister", unsafe {
            sys::cuMemHostRegister_v2(
                ptr.cast::<c_void>(),
                len,
                sys::CU_MEMHOSTREGISTER_PORTABLE | sys::CU_MEMHOSTREGISTER_READ_ONLY,
            )
        })
    }

    pub fn unregister_host(&self, ptr: *mut u8) {
        if self.shared.bind().is_ok() {
            // SAFETY: `ptr` was registered by `register_host` and is still mapped.
            let r = unsafe { sys::cuMemHostUnregister(ptr.cast::<c_void>()) };
            if let Err(e) = check("cuMemHostUnregister", r) {
                tracing::warn!("{e}");
            }
        }
    }

    pub fn alloc_pinned(&self, bytes: usize) -> Result<PinnedHost> {
        self.shared.bind()?;
        let mut p: *mut c_void = std::ptr::null_mut();
        // mapped into the device's address space too, so kernels may read or write it over
        // PCIe (with unified addressing, the default on 64-bit Linux, it is mapped anyway)
        let flags = sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_DEVICEMAP;
        // SAFETY: valid out-pointer; portable, mapped pinned allocation.
        let r = unsafe { sys::cuMemHostAlloc(&mut p, bytes.max(1), flags) };
        if r != sys::CUresult::CUDA_SUCCESS || p.is_null() {
            return Err(Error::OutOfMemory {
                what: "pinned host",
                bytes: bytes as u64,
            });
        }
        Ok(PinnedHost {
            ptr: p.cast(),
            shared: Arc::clone(&self.shared),
        })
    }

    pub fn alloc_device(&self, bytes: usize) -> Result<DeviceMem> {
        self.shared.bind()?;
        let mut d: sys::CUdeviceptr = 0;
        // SAFETY: valid out-pointer.
        let r = unsafe { sys::cuMemAlloc_v2(&mut d, bytes.max(1)) };
        if r != sys::CUresult::CUDA_SUCCESS {
            return Err(Error::OutOfMemory {
                what: "device",
                bytes: bytes as u64,
            });
        }
        Ok(DeviceMem {
            ptr: d,
            len: bytes,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Whether the device can export its memory as a dma-buf
    /// (`CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED`).
    pub fn dma_buf_supported(&self) -> Result<bool> {
        self.shared.bind()?;
        let mut v = 0;
        // SAFETY: valid out-pointer; `dev` is this backend's device.
        check("cuDeviceGetAttribute", unsafe {
            sys::cuDeviceGetAttribute(
                &mut v,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED,
                self.shared.dev,
            )
        })?;
        Ok(v != 0)
    }

    /// Export `size` bytes of device memory at `ptr` as a dma-buf file descriptor
    /// (`cuMemGetHandleForAddressRange`), forcing a PCIe (BAR1) mapping when `pcie` is set.
    /// `ptr` and `size` must be multiples of the host page size.
    ///
    /// The caller keeps the memory allocated while the fd (or any importer of it) lives.
    pub fn export_dma_buf(&self, ptr: u64, size: usize, pcie: bool) -> Result<OwnedFd> {
        self.shared.bind()?;
        let mut fd: std::ffi::c_int = -1;
        let flags = if pcie {
            sys::CUmemRangeFlags::CU_MEM_RANGE_FLAG_DMA_BUF_MAPPING_TYPE_PCIE as u64
        } else {
            0
        };
        // SAFETY: for DMA_BUF_FD the handle out-parameter is an `int`; the range is checked by
        // the driver against its allocations (an error, not UB, when it is not ours).
        check("cuMemGetHandleForAddressRange", unsafe {
            sys::cuMemGetHandleForAddressRange(
                (&mut fd as *mut std::ffi::c_int).cast::<c_void>(),
                ptr,
                size,
                sys::CUmemRangeHandleType::CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD,
                flags,
            )
        })?;
        if fd < 0 {
            return Err(Error::Cuda {
                op: "cuMemGetHandleForAddressRange",
                message: format!("returned success but fd {fd}"),
            });
        }
        // SAFETY: the driver just created `fd` for this process and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The classic bandwidth-test baseline: synchronous cuMemcpyHtoD of a resident pinned
    /// buffer of `bytes`, `iters` times after one warm-up; returns bytes per second.
    pub fn raw_h2d_peak(&self, bytes: usize, iters: u32) -> Result<f64> {
        let host = self.alloc_pinned(bytes)?;
        let dev = self.alloc_device(bytes)?;
        self.shared.bind()?;
        let copy = || {
            // SAFETY: both allocations are `bytes` long and alive for the call.
            check("cuMemcpyHtoD", unsafe {
                sys::cuMemcpyHtoD_v2(dev.ptr(), host.as_mut_ptr().cast::<c_void>(), bytes)
            })
        };
        copy()?;
        let t = std::time::Instant::now();
        for _ in 0..iters {
            copy()?;
        }
        let secs = t.elapsed().as_secs_f64().max(1e-9);
        Ok(bytes as f64 * f64::from(iters) / secs)
    }

    fn event(&self) -> Result<sys::CUevent> {
        if let Some(e) = self.shared.events.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(e);
        }
        let mut e = std::ptr::null_mut();
        let flags = sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC as u32
            | sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32;
        // SAFETY: valid out-pointer; the context is bound by the callers.
        check("cuEventCreate", unsafe {
            sys::cuEventCreate(&mut e, flags)
        })?;
        Ok(e)
    }

    /// # Safety
    /// `src..src+len` valid and unchanged until the ticket completes; `dst..dst+len` device
    /// memory of this context.
    pub unsafe fn h2d_async(&self, src: *const u8, dst: u64, len: usize) -> Result<EventTicket> {
        self.shared.bind()?;
        let ev = self.event()?;
        let ticket = EventTicket {
            ev,
            shared: Arc::clone(&self.shared),
        };
        // SAFETY: from this function's contract; stream and event belong to this context.
        unsafe {
            check(
                "cuMemcpyHtoDAsync",
                sys::cuMemcpyHtoDAsync_v2(dst, src.cast::<c_void>(), len, self.shared.stream),
            )?;
            check("cuEventRecord", sys::cuEventRecord(ev, self.shared.stream))?;
        }
        Ok(ticket)
    }
}

/// Page-locked host memory from cuMemHostAlloc.
#[derive(Debug)]
pub(crate) struct PinnedHost {
    ptr: *mut u8,
    shared: Arc<Shared>,
}

impl PinnedHost {
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for PinnedHost {
    fn drop(&mut self) {
        if self.shared.bind().is_ok() {
            // SAFETY: allocated by cuMemHostAlloc in this context, freed once.
            let r = unsafe { sys::cuMemFreeHost(self.ptr.cast::<c_void>()) };
            if let Err(e) = check("cuMemFreeHost", r) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Device memory from cuMemAlloc.
#[derive(Debug)]
pub(crate) struct DeviceMem {
    ptr: u64,
    len: usize,
    shared: Arc<Shared>,
}

impl DeviceMem {
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Blocking copy of `out.len()` bytes at `offset` to host memory.
    pub fn copy_to_host(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        if offset.checked_add(out.len()).is_none_or(|e| e > self.len) {
            return Err(Error::InvalidArgument(
                "range outside the device buffer".into(),
            ));
        }
        self.shared.bind()?;
        // SAFETY: the range lies inside this allocation (checked) and `out` is writable.
        check("cuMemcpyDtoH", unsafe {
            sys::cuMemcpyDtoH_v2(
                out.as_mut_ptr().cast::<c_void>(),
                self.ptr + offset as u64,
                out.len(),
            )
        })
    }
}

impl Drop for DeviceMem {
    fn drop(&mut self) {
        if self.shared.bind().is_ok() {
            // SAFETY: allocated by cuMemAlloc in this context, freed once; no copy into it is
            // in flight because buffers with reads in flight are kept alive by the worker.
            let r = unsafe { sys::cuMemFree_v2(self.ptr) };
            if let Err(e) = check("cuMemFree", r) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// A recorded event marking the end of an asynchronous copy.
#[derive(Debug)]
pub(crate) struct EventTicket {
    ev: sys::CUevent,
    shared: Arc<Shared>,
}

// SAFETY: see `Shared`.
unsafe impl Send for EventTicket {}

impl EventTicket {
    pub fn poll(&self) -> Result<bool> {
        // SAFETY: `ev` is a live event of this context.
        let r = unsafe { sys::cuEventQuery(self.ev) };
        match r {
            sys::CUresult::CUDA_SUCCESS => Ok(true),
            sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
            other => check("cuEventQuery", other).map(|()| false),
        }
    }

    pub fn wait(&self) -> Result<()> {
        // SAFETY: `ev` is a live event; it was created with blocking sync, so this sleeps.
        check("cuEventSynchronize", unsafe {
            sys::cuEventSynchronize(self.ev)
        })
    }
}

impl Drop for EventTicket {
    fn drop(&mut self) {
        if let Ok(mut pool) = self.shared.events.lock() {
            pool.push(self.ev);
        }
    }
}
