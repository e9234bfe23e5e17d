//! `lls_buffer`: device, host or page-locked memory that reads land in.

use super::context::lls_context;
use super::error::{lls_status, FfiError};
use super::handle::Handle;
use super::panic::{guard, guard_value};
use crate::backend::BufferKind;
use crate::context::Buffer;
use std::ffi::c_void;

/// Memory that reads land in: library-allocated (`lls_buffer_alloc`) or caller memory lent to
/// the library (`lls_buffer_wrap_host`, `lls_buffer_wrap_device`). Any thread may use a buffer;
/// the library refuses (`LLS_STATUS_BUSY`) to copy out of a buffer while reads into it are in
/// flight. Library-allocated memory is released when the buffer is freed and every read into it
/// has finished.
#[allow(non_camel_case_types)]
pub struct lls_buffer {
    _private: [u8; 0],
}

impl Handle for lls_buffer {
    type Target = Buffer;
}

/// What memory a buffer is.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lls_buffer_kind {
    /// Device memory: VRAM on the CUDA backend, host memory on the host backend.
    Device = 0,
    /// Pageable host memory.
    Host = 1,
    /// Page-locked host memory (copies to the device at full link speed).
    Pinned = 2,
}

/// The buffer kind for an integer from C.
pub(crate) fn buffer_kind(kind: u32) -> Result<BufferKind, FfiError> {
    match kind {
        0 => Ok(BufferKind::Device),
        1 => Ok(BufferKind::Host),
        2 => Ok(BufferKind::Pinned),
        k => Err(FfiError::invalid(format!("{k} is not an lls_buffer_kind"))),
    }
}

/// Allocate a buffer of `bytes` bytes of kind `kind` (an `lls_buffer_kind`).
///
/// # Safety
/// `ctx` is NULL or a live context; `out` is NULL or points to a writable `lls_buffer*`.
#[no_mangle]
pub unsafe extern "C" fn lls_buffer_alloc(
    ctx: *mut lls_context,
    kind: u32,
    bytes: usize,
    out: *mut *mut lls_buffer,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        let kind = buffer_kind(kind)?;
        check_out!(out);
        let buf = ctx.alloc(kind, bytes)?;
        put!(out, lls_buffer::into_raw(buf));
        Ok(())
    })
}

/// Lend `len` bytes of caller host memory at `ptr` to the library as a buffer (kind HOST).
///
/// # Safety
/// `ctx` is NULL or a live context; `ptr` is NULL or points to `len` writable bytes that stay
/// valid, and that the caller does not touch while reads into them are in flight, until the
/// buffer is freed and every `lls_request` into it has been waited for or freed; `out` is NULL or
/// points to a writable `lls_buffer*`.
#[no_mangle]
pub unsafe extern "C" fn lls_buffer_wrap_host(
    ctx: *mut lls_context,
    ptr: *mut c_void,
    len: usize,
    out: *mut *mut lls_buffer,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        if ptr.is_null() {
            return Err(FfiError::null("ptr"));
        }
        check_out!(out);
        // SAFETY: `ptr..ptr+len` is writable caller memory kept alive and untouched while the
        // buffer and reads into it live (this function's contract).
        let buf = unsafe { ctx.wrap_host(ptr.cast(), len) }?;
        put!(out, lls_buffer::into_raw(buf));
        Ok(())
    })
}

/// Lend `len` bytes of caller device memory (a `CUdeviceptr` of the context's device) to the
/// library as a buffer (kind DEVICE). Needs the CUDA backend (`LLS_STATUS_INVALID_ARGUMENT`
/// otherwise). The library never reads it back (`lls_buffer_copy_to_host` refuses).
///
/// # Safety
/// `ctx` is NULL or a live context; `dptr..dptr+len` is device memory of the context's device,
/// kept alive until the buffer is freed and every `lls_request` into it has been waited for or
/// freed; `out` is NULL or points to a writable `lls_buffer*`.
#[no_mangle]
pub unsafe extern "C" fn lls_buffer_wrap_device(
    ctx: *mut lls_context,
    dptr: u64,
    len: usize,
    out: *mut *mut lls_buffer,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        check_out!(out);
        // SAFETY: forwarded from this function's contract on `dptr` and `len`.
        let buf = unsafe { ctx.wrap_device(dptr, len) }?;
        put!(out, lls_buffer::into_raw(buf));
        Ok(())
    })
}

/// Free a buffer. Reads in flight into it finish first in the background (library memory is
/// released after them). NULL is a no-op.
///
/// # Safety
/// `buf` is NULL or a buffer not freed yet; no other thread uses it during or after the call.
#[no_mangle]
pub unsafe extern "C" fn lls_buffer_free(buf: *mut lls_buffer) {
    guard_value((), || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_buffer::free(buf) }
    })
}

/// Length of the buffer in bytes; 0 for NULL.
///
/// # Safety
/// `buf` is NULL or a live buffer.
#[no_mangle]
pub unsafe extern "C" fn lls_buffer_len(buf: *const lls_buffer) -> usize {
    guard_value(0, || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_buffer::as_ref(buf) }.map_or(0, Buffer::len)
    })
}

/// The host address of the buffer's memory, or NULL when it is not host-addressable (CUDA
/// device memory) or `buf` is NULL. Host and pinned buffers, and every buffer of the host
/// backend, have one. Do not touch the bytes while reads into the buffer are in flight.
///
/// # Safety
/// `buf` is NULL or a live buffer.
#[no_mangle]
pub unsafe extern "C" fn lls_buffer_host_ptr(buf: *const lls_buffer) -> *mut c_void {
    guard_value(std::ptr::null_mut(), || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_buffer::as_ref(buf) }
            .and_then(Buffer::host_ptr)
            .map_or(std::ptr::null_mut(), |p| p.cast())
    })
}

/// The device address (`CUdeviceptr`) of a CUDA device buffer; 0 for host memory or NULL.
///
/// # Safety
/// `buf` is NULL or a live buffer.
#[no_mangle]
pub unsafe extern "C" fn lls_buffer_device_ptr(buf: *const lls_buffer) -> u64 {
    guard_value(0, || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_buffer::as_ref(buf) }
            .and_then(Buffer::device_ptr)
            .unwrap_or(0)
    })
}

/// Copy `len` bytes at `offset` of the buffer to host memory `dst` (from the device if need
/// be). `LLS_STATUS_BUSY` while reads into the buffer are in flight; `LLS_STATUS_INVALID_ARGUMENT`
/// when the range lies outside the buffer or the buffer is wrapped device memory.
///
/// # Safety
/// `buf` is NULL or a live buffer; `dst` is NULL or points to `len` writable bytes that do not
/// overlap the buffer.
#[no_mangle]
pub unsafe extern "C" fn lls_buffer_copy_to_host(
    buf: *const lls_buffer,
    offset: usize,
    dst: *mut c_void,
    len: usize,
) -> lls_status {
    guard(|| {
        let buf = arg_ref!(buf);
        if dst.is_null() {
            return Err(FfiError::null("dst"));
        }
        // SAFETY: `dst` is non-NULL and points to `len` writable bytes not overlapping the
        // buffer (this function's contract), so a unique slice over them is sound for the call.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), len) };
        buf.copy_to_host(offset, out)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::context::lls_context_free;
    use super::super::context::tests::host_context;
    use super::*;
    use std::ptr::{null, null_mut};

    #[test]
    fn alloc_copy_and_errors() {
        let ctx = host_context();
        let mut b = null_mut();
        // SAFETY: live context, writable output.
        let r = unsafe { lls_buffer_alloc(ctx, 9, 16, &mut b) };
        assert_eq!(r, lls_status::InvalidArgument);
        assert!(b.is_null());
        // SAFETY: as above.
        let r = unsafe { lls_buffer_alloc(ctx, lls_buffer_kind::Device as u32, 16, &mut b) };
        assert_eq!(r, lls_status::Ok);
        // SAFETY: `b` is live.
        unsafe {
            assert_eq!(lls_buffer_len(b), 16);
            assert!(!lls_buffer_host_ptr(b).is_null(), "host backend");
            assert_eq!(lls_buffer_device_ptr(b), 0);
            assert_eq!(lls_buffer_len(null()), 0);
            assert!(lls_buffer_host_ptr(null()).is_null());
        }
        let mut out = [1u8; 8];
        // SAFETY: `out` has 8 writable bytes.
        let s = unsafe { lls_buffer_copy_to_host(b, 12, out.as_mut_ptr().cast(), 8) };
        assert_eq!(s, lls_status::InvalidArgument, "beyond the end");
        // SAFETY: as above.
        let s = unsafe { lls_buffer_copy_to_host(b, 8, out.as_mut_ptr().cast(), 8) };
        assert_eq!(s, lls_status::Ok);
        // SAFETY: NULL destination is reported.
        let s = unsafe { lls_buffer_copy_to_host(b, 0, null_mut(), 8) };
        assert_eq!(s, lls_status::NullPointer);

        let mut mine = vec![0u8; 32];
        let mut w = null_mut();
        // SAFETY: `mine` outlives the buffer `w`, which is freed below.
        let s = unsafe { lls_buffer_wrap_host(ctx, mine.as_mut_ptr().cast(), 32, &mut w) };
        assert_eq!(s, lls_status::Ok);
        // SAFETY: `w` is live.
        assert_eq!(unsafe { lls_buffer_host_ptr(w) }, mine.as_mut_ptr().cast());
        let mut d = null_mut();
        // SAFETY: the host backend refuses device pointers before using them.
        let s = unsafe { lls_buffer_wrap_device(ctx, 0x1000, 32, &mut d) };
        assert_eq!(s, lls_status::InvalidArgument);
        // SAFETY: NULL host pointer is reported.
        let s = unsafe { lls_buffer_wrap_host(ctx, null_mut(), 32, &mut d) };
        assert_eq!(s, lls_status::NullPointer);
        assert!(d.is_null());
        // SAFETY: live handles freed once; NULL is a no-op.
        unsafe {
            lls_buffer_free(w);
            lls_buffer_free(b);
            lls_buffer_free(null_mut());
            lls_context_free(ctx);
        }
    }
}
