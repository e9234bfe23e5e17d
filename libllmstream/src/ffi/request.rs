//! `lls_request`: a read, copy or layer load in flight: wait, poll, free.

use super::error::{lls_status, FfiError};
use super::handle::Handle;
use super::panic::{guard, guard_value};
use crate::context::ReadHandle;

/// A read, copy or layer load in flight, from `lls_read_async`, `lls_copy_async` or
/// `lls_model_load_layer_async`. Wait for it with `lls_request_wait` (or poll it), then free it
/// with `lls_request_free`; freeing an unfinished request waits for it. Use one request from one
/// thread at a time.
#[allow(non_camel_case_types)]
pub struct lls_request {
    _private: [u8; 0],
}

/// What an `lls_request` points to: the request and, once collected, its result.
#[derive(Debug)]
pub(crate) struct RequestState {
    handle: ReadHandle,
    result: Option<Result<(), FfiError>>,
}

impl RequestState {
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

impl Handle for lls_request {
    type Target = RequestState;
}

/// Block (sleeping, not spinning) until the request completes; its result. Waiting again
/// returns the same result. The handle stays valid: free it with `lls_request_free`.
///
/// # Safety
/// `req` is NULL or a live `lls_request` no other thread uses during the call.
#[no_mangle]
pub unsafe extern "C" fn lls_request_wait(req: *mut lls_request) -> lls_status {
    guard(|| arg_mut!(req).wait())
}

/// Without blocking: `LLS_STATUS_NOT_DONE` while the request is in flight, else its result as
/// `lls_request_wait` returns it.
///
/// # Safety
/// `req` is NULL or a live `lls_request` no other thread uses during the call.
#[no_mangle]
pub unsafe extern "C" fn lls_request_poll(req: *mut lls_request) -> lls_status {
    guard(|| {
        let r = arg_mut!(req);
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
/// `req` is NULL or a live `lls_request`; `out` is NULL or points to a writable `bool`.
#[no_mangle]
pub unsafe extern "C" fn lls_request_is_done(
    req: *const lls_request,
    out: *mut bool,
) -> lls_status {
    guard(|| {
        let r = arg_ref!(req);
        put!(out, r.result.is_some() || r.handle.is_done());
        Ok(())
    })
}

/// Free a request handle. An unfinished request is waited for first (its result is dropped), so
/// that after this call the library no longer writes to the destination. NULL is a no-op.
///
/// # Safety
/// `req` is NULL or an `lls_request` not freed yet; no other thread uses it during or after the
/// call.
#[no_mangle]
pub unsafe extern "C" fn lls_request_free(req: *mut lls_request) {
    guard_value((), || {
        // SAFETY: forwarded from this function's contract.
        if let Some(r) = unsafe { lls_request::as_mut(req) } {
            if r.result.is_none() {
                // The result is dropped: the caller chose not to collect it.
                let _ = r.handle.wait_ref();
            }
        }
        // SAFETY: forwarded from this function's contract; the borrow above has ended.
        unsafe { lls_request::free(req) }
    })
}
