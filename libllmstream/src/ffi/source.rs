//! `lls_source`: a file or block device opened for streaming.

use super::context::lls_context;
use super::error::{lls_status, FfiError};
use super::handle::Handle;
use super::panic::{guard, guard_value};
use super::text::str_arg;
use crate::io::Source;
use std::ffi::{c_char, c_int};
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;

/// A file or raw block device opened for streaming (with O_DIRECT where allowed). Immutable:
/// any thread may read from it; free it with `lls_source_free` (reads in flight keep what they
/// need alive).
#[allow(non_camel_case_types)]
pub struct lls_source {
    _private: [u8; 0],
}

impl Handle for lls_source {
    type Target = Arc<Source>;
}

/// Open the file or block device at `path` (UTF-8) for streaming through `ctx`.
///
/// Fails with `LLS_STATUS_OPEN` when it cannot be opened, `LLS_STATUS_DIRECT_UNSUPPORTED` when
/// the context demands O_DIRECT and the file system refuses it.
///
/// # Safety
/// `ctx` is NULL or a live context; `path` is NULL or a NUL-terminated string; `out` is NULL or
/// points to a writable `lls_source*`.
#[no_mangle]
pub unsafe extern "C" fn lls_source_open(
    ctx: *mut lls_context,
    path: *const c_char,
    out: *mut *mut lls_source,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { str_arg(path, "path") }?;
        check_out!(out);
        let src = ctx.open(Path::new(path))?;
        put!(out, lls_source::into_raw(src));
        Ok(())
    })
}

/// Stream from a descriptor the caller opened. The library duplicates `fd` (close-on-exec) and
/// owns the duplicate; the caller keeps and closes its own `fd`. `label` (UTF-8, may be NULL)
/// names the source in error messages; NULL gives `"fd N"`.
///
/// # Safety
/// `ctx` is NULL or a live context; `fd` is an open descriptor during the call (a negative one
/// is refused); `label` is NULL or a NUL-terminated string; `out` is NULL or points to a
/// writable `lls_source*`.
#[no_mangle]
pub unsafe extern "C" fn lls_source_open_fd(
    ctx: *mut lls_context,
    fd: c_int,
    label: *const c_char,
    out: *mut *mut lls_source,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        if fd < 0 {
            return Err(FfiError::invalid(format!("fd {fd} is not a descriptor")));
        }
        let label = if label.is_null() {
            format!("fd {fd}")
        } else {
            // SAFETY: non-NULL, NUL-terminated by this function's contract.
            unsafe { str_arg(label, "label") }?.to_owned()
        };
        check_out!(out);
        // SAFETY: `fd` is non-negative and open for the duration of the call (this function's
        // contract); it is only borrowed to duplicate it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let owned = borrowed
            .try_clone_to_owned()
            .map_err(|source| crate::Error::Os {
                op: "duplicate the caller's descriptor",
                source,
            })?;
        let src = ctx.open_file(std::fs::File::from(owned), Path::new(&label))?;
        put!(out, lls_source::into_raw(src));
        Ok(())
    })
}

/// Length of the source in bytes; 0 for NULL.
///
/// # Safety
/// `src` is NULL or a live source.
#[no_mangle]
pub unsafe extern "C" fn lls_source_len(src: *const lls_source) -> u64 {
    guard_value(0, || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_source::as_ref(src) }.map_or(0, |s| s.len())
    })
}

/// True when reads from the source bypass the page cache (O_DIRECT); false for NULL.
///
/// # Safety
/// `src` is NULL or a live source.
#[no_mangle]
pub unsafe extern "C" fn lls_source_is_direct(src: *const lls_source) -> bool {
    guard_value(false, || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_source::as_ref(src) }.is_some_and(|s| s.is_direct())
    })
}

/// Free a source. Reads in flight from it finish normally. NULL is a no-op.
///
/// # Safety
/// `src` is NULL or a source not freed yet; no other thread uses it during or after the call.
#[no_mangle]
pub unsafe extern "C" fn lls_source_free(src: *mut lls_source) {
    guard_value((), || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_source::free(src) }
    })
}
