//! The C ABI of libllmstream: every `lls_*` symbol of `include/llmstream.h`.
//!
//! The header is generated from this module by cbindgen (`libllmstream/cbindgen.toml`); the
//! conventions it follows are written down in `docs/c-api.md`. In short:
//!
//! - Fallible calls return an [`lls_status`]; outputs are the last arguments and are written only
//!   on success. `lls_last_error()` holds the detailed message of the calling thread's last
//!   failed call.
//! - Handles are opaque (`lls_context`, `lls_source`, `lls_model`, `lls_buffer`, `lls_request`),
//!   created by `*_new`/`*_open`/`*_alloc` and released by the matching `*_free`, which accepts
//!   NULL.
//! - Every entry point runs inside a panic boundary: no Rust panic unwinds into C.
//!
//! Plumbing (private): [`handle`] (handle ownership), [`error`] (status codes and the thread's
//! last error), [`panic`] (the boundary), [`text`] (strings in and out), `macros` (argument
//! checks). One module per C "class" holds the entry points.

#[macro_use]
mod macros;
mod error;
mod handle;
mod panic;
mod text;

pub mod buffer;
pub mod context;
pub mod model;
pub mod read;
pub mod request;
pub mod source;
pub mod stats;
pub mod version;

pub use error::{lls_error_message, lls_last_error, lls_status, lls_status_name};

/// The calling thread's last error as a Rust string (tests).
#[cfg(test)]
pub(crate) fn text_of_last_error() -> String {
    // SAFETY: lls_last_error returns a NUL-terminated string valid until the next call.
    unsafe { std::ffi::CStr::from_ptr(lls_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    /// The threading rules of docs/c-api.md rest on these.
    #[test]
    fn handle_targets_are_thread_safe() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<crate::Context>();
        send_sync::<std::sync::Arc<crate::Source>>();
        send_sync::<crate::Buffer>();
        send_sync::<crate::Model>();
        send::<crate::ReadHandle>();
    }
}
