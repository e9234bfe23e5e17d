//! Reads from a source into a buffer, and copies between buffers: blocking, or started
//! asynchronously as an `lls_request`.

use super::buffer::lls_buffer;
use super::context::lls_context;
use super::error::lls_status;
use super::handle::Handle;
use super::panic::guard;
use super::request::{lls_request, RequestState};
use super::source::lls_source;

/// Start reading `len` bytes at `offset` of `src` into `dst` at `dst_offset`; writes the request
/// to `*out`. The range is checked against the file and the buffer before anything is queued
/// (`LLS_STATUS_OUT_OF_RANGE`, `LLS_STATUS_INVALID_ARGUMENT`).
///
/// # Safety
/// `ctx`, `src` and `dst` are NULL or live handles; `out` is NULL or points to a writable
/// `lls_request*`.
#[no_mangle]
pub unsafe extern "C" fn lls_read_async(
    ctx: *mut lls_context,
    src: *const lls_source,
    offset: u64,
    len: u64,
    dst: *mut lls_buffer,
    dst_offset: usize,
    out: *mut *mut lls_request,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        let src = arg_ref!(src);
        let dst = arg_ref!(dst);
        check_out!(out);
        let h = ctx.read_async(src, offset, len, dst, dst_offset)?;
        put!(out, lls_request::into_raw(RequestState::new(h)));
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
/// `lls_request*`.
#[no_mangle]
pub unsafe extern "C" fn lls_copy_async(
    ctx: *mut lls_context,
    src: *const lls_buffer,
    src_offset: usize,
    dst: *mut lls_buffer,
    dst_offset: usize,
    len: usize,
    out: *mut *mut lls_request,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        let src = arg_ref!(src);
        let dst = arg_ref!(dst);
        check_out!(out);
        let h = ctx.copy_async(src, src_offset, dst, dst_offset, len)?;
        put!(out, lls_request::into_raw(RequestState::new(h)));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::buffer::{lls_buffer_alloc, lls_buffer_free, lls_buffer_kind};
    use super::super::context::lls_context_free;
    use super::super::context::tests::host_context;
    use super::super::request::{
        lls_request_free, lls_request_is_done, lls_request_poll, lls_request_wait,
    };
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
            assert_eq!(lls_request_wait(rd), lls_status::Ok);
            assert_eq!(lls_request_wait(rd), lls_status::Ok);
            assert_eq!(lls_request_poll(rd), lls_status::Ok);
            let mut done = false;
            assert_eq!(lls_request_is_done(rd, &mut done), lls_status::Ok);
            assert!(done);
            lls_request_free(rd);
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
            assert_eq!(lls_request_wait(null_mut()), lls_status::NullPointer);
            lls_request_free(null_mut());

            // Freeing an unfinished read waits for it.
            assert_eq!(
                lls_read_async(ctx, src, 0, 5000, buf, 0, &mut rd),
                lls_status::Ok
            );
            lls_request_free(rd);
            let mut head = vec![0u8; 5000];
            let s = super::super::buffer::lls_buffer_copy_to_host(
                buf,
                0,
                head.as_mut_ptr().cast(),
                5000,
            );
            assert_eq!(
                s,
                lls_status::Ok,
                "no read in flight after lls_request_free"
            );
            assert_eq!(head, data[..5000]);

            lls_buffer_free(buf);
            lls_source_free(src);
            lls_context_free(ctx);
        }
    }
}
