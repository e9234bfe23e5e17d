//! `lls_read`: reads from a source (and copies between buffers) in flight, and the calls that
//! start them.

use super::buffer::lls_buffer;
use super::context::lls_context;
use super::error::{lls_status, FfiError};
use super::handle::Handle;
use super::panic::{guard, guard_value};
use super::source::lls_source;
use crate::context::ReadHandle;

/// A read (or copy) in flight, from `lls_read_async`, `lls_copy_async` or
/// `lls_model_load_layer_async`. Wait for it with `lls_read_wait` (or poll it), then free it with
/// `lls_read_free`; freeing an unfinished read waits for it. Use one handle from one thread at a
/// time.
#[allow(non_camel_case_types)]
pub struct lls_read {
    _private: [u8; 0],
}

/// What an `lls_read` points to: the request and, once collected, its result.
#[derive(Debug)]
pub(crate) struct ReadState {
    handle: ReadHandle,
    result: Option<Result<(), FfiError>>,
}

impl ReadState {
    pub(crate) fn new(handle: ReadHandle) -> Self {
        Self {
            handle,
            result: None,
        }
    }

    /// Block until the request completes; its result (the same on every call).
    fn wait(&mut self) -> Result<(), FfiError> {
        if self.result.is_none() {
            self.result = Some(self.handle.wait_ref().map_err(FfiError::from));
        }
        self.result.clone().unwrap_or(Ok(()))
    }
}

impl Handle for lls_read {
    type Target = ReadState;
}

/// Start reading `len` bytes at `offset` of `src` into `dst` at `dst_offset`; writes the request
/// to `*out`. The range is checked against the file and the buffer before anything is queued
/// (`LLS_STATUS_OUT_OF_RANGE`, `LLS_STATUS_INVALID_ARGUMENT`).
///
/// # Safety
/// `ctx`, `src` and `dst` are NULL or live handles; `out` is NULL or points to a writable
/// `lls_read*`.
#[no_mangle]
pub unsafe extern "C" fn lls_read_async(
    ctx: *mut lls_context,
    src: *const lls_source,
    offset: u64,
    len: u64,
    dst: *mut lls_buffer,
    dst_offset: usize,
    out: *mut *mut lls_read,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        let src = arg_ref!(src);
        let dst = arg_ref!(dst);
        check_out!(out);
        let h = ctx.read_async(src, offset, len, dst, dst_offset)?;
        put!(out, lls_read::into_raw(ReadState::new(h)));
        Ok(())
    })
}

/// Blocking `lls_read_async`: returns when the bytes are in `dst` (or the read failed).
///
/// # Safety
/// `ctx`, `src` and `dst` are NULL or live handles.
#[no_mangle]
pub unsafe extern "C" fn lls_read(
    ctx: *mut lls_context,
    src: *const lls_source,
    offset: u64,
    len: u64,
    dst: *mut lls_buffer,
    dst_offset: usize,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        let src = arg_ref!(src);
        let dst = arg_ref!(dst);
        ctx.read(src, offset, len, dst, dst_offset)?;
        Ok(())
    })
}

/// Start copying `len` bytes from host (ideally pinned) buffer `src` at `src_offset` to `dst` at
/// `dst_offset`: the RAM tier to VRAM path. Writes the request to `*out`.
///
/// # Safety
/// `ctx`, `src` and `dst` are NULL or live handles; `out` is NULL or points to a writable
/// `lls_read*`.
#[no_mangle]
pub unsafe extern "C" fn lls_copy_async(
    ctx: *mut lls_context,
    src: *const lls_buffer,
    src_offset: usize,
    dst: *mut lls_buffer,
    dst_offset: usize,
    len: usize,
    out: *mut *mut lls_read,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        let src = arg_ref!(src);
        let dst = arg_ref!(dst);
        check_out!(out);
        let h = ctx.copy_async(src, src_offset, dst, dst_offset, len)?;
        put!(out, lls_read::into_raw(ReadState::new(h)));
        Ok(())
    })
}

/// Block (sleeping, not spinning) until the request completes; its result. Waiting again
/// returns the same result. The handle stays valid: free it with `lls_read_free`.
///
/// # Safety
/// `read` is NULL or a live `lls_read` no other thread uses during the call.
#[no_mangle]
pub unsafe extern "C" fn lls_read_wait(read: *mut lls_read) -> lls_status {
    guard(|| arg_mut!(read).wait())
}

/// Without blocking: `LLS_STATUS_NOT_DONE` while the request is in flight, else its result as
/// `lls_read_wait` returns it.
///
/// # Safety
/// `read` is NULL or a live `lls_read` no other thread uses during the call.
#[no_mangle]
pub unsafe extern "C" fn lls_read_poll(read: *mut lls_read) -> lls_status {
    guard(|| {
        let r = arg_mut!(read);
        if r.result.is_none() && !r.handle.is_done() {
            return Err(FfiError::new(
                lls_status::NotDone,
                "the request has not completed",
            ));
        }
        r.wait()
    })
}

/// Write whether the request has completed (successfully or not) to `*out`.
///
/// # Safety
/// `read` is NULL or a live `lls_read`; `out` is NULL or points to a writable `bool`.
#[no_mangle]
pub unsafe extern "C" fn lls_read_is_done(read: *const lls_read, out: *mut bool) -> lls_status {
    guard(|| {
        let r = arg_ref!(read);
        put!(out, r.result.is_some() || r.handle.is_done());
        Ok(())
    })
}

/// Free a request handle. An unfinished request is waited for first (its result is dropped), so
/// that after this call the library no longer writes to the destination. NULL is a no-op.
///
/// # Safety
/// `read` is NULL or an `lls_read` not freed yet; no other thread uses it during or after the
/// call.
#[no_mangle]
pub unsafe extern "C" fn lls_read_free(read: *mut lls_read) {
    guard_value((), || {
        // SAFETY: forwarded from this function's contract.
        if let Some(r) = unsafe { lls_read::as_mut(read) } {
            if r.result.is_none() {
                // The result is dropped: the caller chose not to collect it.
                let _ = r.handle.wait_ref();
            }
        }
        // SAFETY: forwarded from this function's contract; the borrow above has ended.
        unsafe { lls_read::free(read) }
    })
}

#[cfg(test)]
mod tests {
    use super::super::buffer::{lls_buffer_alloc, lls_buffer_free, lls_buffer_kind};
    use super::super::context::lls_context_free;
    use super::super::context::tests::host_context;
    use super::super::source::{lls_source_free, lls_source_len, lls_source_open};
    use super::*;
    use std::io::Write;
    use std::ptr::null_mut;

    #[test]
    fn reads_land_and_results_repeat() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let path = std::ffi::CString::new(f.path().to_str().unwrap()).unwrap();
        let ctx = host_context();
        let (mut src, mut buf, mut rd) = (null_mut(), null_mut(), null_mut());
        // SAFETY: live context and valid arguments throughout; every handle is freed once at
        // the end, reads before their buffer.
        unsafe {
            assert_eq!(
                lls_source_open(ctx, path.as_ptr(), &mut src),
                lls_status::Ok
            );
            assert_eq!(lls_source_len(src), 100_000);
            let kind = lls_buffer_kind::Host as u32;
            assert_eq!(lls_buffer_alloc(ctx, kind, 5000, &mut buf), lls_status::Ok);
            assert_eq!(
                lls_read_async(ctx, src, 777, 4000, buf, 1000, &mut rd),
                lls_status::Ok
            );
            assert_eq!(lls_read_wait(rd), lls_status::Ok);
            assert_eq!(lls_read_wait(rd), lls_status::Ok);
            assert_eq!(lls_read_poll(rd), lls_status::Ok);
            let mut done = false;
            assert_eq!(lls_read_is_done(rd, &mut done), lls_status::Ok);
            assert!(done);
            lls_read_free(rd);
            let mut got = vec![0u8; 4000];
            let s = super::super::buffer::lls_buffer_copy_to_host(
                buf,
                1000,
                got.as_mut_ptr().cast(),
                4000,
            );
            assert_eq!(s, lls_status::Ok);
            assert_eq!(got, data[777..4777]);

            // Beyond the end of the file: refused up front, nothing to free.
            let mut none = null_mut();
            let s = lls_read_async(ctx, src, 99_000, 4000, buf, 0, &mut none);
            assert_eq!(s, lls_status::OutOfRange);
            assert!(none.is_null());
            // Beyond the end of the buffer.
            let s = lls_read(ctx, src, 0, 4000, buf, 2000);
            assert_eq!(s, lls_status::InvalidArgument);
            // NULL handles.
            assert_eq!(
                lls_read(ctx, null_mut(), 0, 1, buf, 0),
                lls_status::NullPointer
            );
            assert_eq!(lls_read_wait(null_mut()), lls_status::NullPointer);
            lls_read_free(null_mut());

            // Freeing an unfinished read waits for it.
            assert_eq!(
                lls_read_async(ctx, src, 0, 5000, buf, 0, &mut rd),
                lls_status::Ok
            );
            lls_read_free(rd);
            let mut head = vec![0u8; 5000];
            let s = super::super::buffer::lls_buffer_copy_to_host(
                buf,
                0,
                head.as_mut_ptr().cast(),
                5000,
            );
            assert_eq!(s, lls_status::Ok, "no read in flight after lls_read_free");
            assert_eq!(head, data[..5000]);

            lls_buffer_free(buf);
            lls_source_free(src);
            lls_context_free(ctx);
        }
    }
}
