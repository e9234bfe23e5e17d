//! The panic boundary every `extern "C"` body runs inside: a panic becomes `LLS_STATUS_PANIC`
//! (or the call's NULL/0 default) and a last-error message instead of unwinding into C.

use super::error::{clear_last_error, lls_status, set_last_error, FfiError};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Run the body of a call that returns a status: `Ok` clears the thread's last error, an error
/// records it, a panic is caught and reported as `LLS_STATUS_PANIC`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), FfiError>) -> lls_status {
    // AssertUnwindSafe: after a panic the objects the call touched may be inconsistent; the
    // status tells the caller so (documented: free them), and nothing here reuses them.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            clear_last_error();
            lls_status::Ok
        }
        Ok(Err(e)) => {
            set_last_error(&e);
            e.status
        }
        Err(payload) => {
            set_last_error(&panic_error(payload.as_ref()));
            lls_status::Panic
        }
    }
}

/// Run the body of a call that returns a plain value; a panic returns `default` and records the
/// panic as the thread's last error. The last error is otherwise left alone.
pub(crate) fn guard_value<T>(default: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            set_last_error(&panic_error(payload.as_ref()));
            default
        }
    }
}

fn panic_error(payload: &(dyn Any + Send)) -> FfiError {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    FfiError::new(
        lls_status::Panic,
        format!("internal error: libllmstream panicked: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let s = guard(|| panic!("boom {}", 7));
        assert_eq!(s, lls_status::Panic);
        let s2 = guard_value(42u32, || panic!("static boom"));
        assert_eq!(s2, 42);
        let s3 = guard(|| Err(FfiError::invalid("bad")));
        assert_eq!(s3, lls_status::InvalidArgument);
        assert_eq!(guard(|| Ok(())), lls_status::Ok);
    }

    #[test]
    fn panic_messages_are_extracted() {
        let e = panic_error(&"plain");
        assert!(e.message.ends_with("panicked: plain"), "{}", e.message);
        let e = panic_error(&String::from("owned"));
        assert!(e.message.ends_with("panicked: owned"), "{}", e.message);
        let e = panic_error(&5u8);
        assert!(e.message.ends_with("(no message)"), "{}", e.message);
    }
}
