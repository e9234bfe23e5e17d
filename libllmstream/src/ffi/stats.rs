//! `lls_stats`: what a context moved, through which path, and which fallbacks it took.

use super::context::{backend_kind, lls_backend, lls_context};
use super::error::{lls_status, FfiError};
use super::panic::guard;
use super::text::write_str;
use crate::io::EngineKind;
use std::ffi::c_char;

/// The storage reader engine a context runs.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lls_engine {
    /// Not known (no engine started).
    None = 0,
    /// io_uring with registered (fixed) buffers and files.
    IoUringFixed = 1,
    /// io_uring with plain reads (buffer registration was refused).
    IoUring = 2,
    /// The pread thread pool.
    Threads = 3,
}

/// Counters of a context since it was made.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct lls_stats {
    /// The backend in use (CUDA or HOST).
    pub backend: lls_backend,
    /// The reader engine in use.
    pub engine: lls_engine,
    /// Bytes read from storage with O_DIRECT.
    pub bytes_direct: u64,
    /// Bytes read through the page cache.
    pub bytes_buffered: u64,
    /// Bytes copied to device memory.
    pub bytes_to_device: u64,
    /// Bytes copied to host memory.
    pub bytes_to_host: u64,
    /// Requests completed (reads, layer loads, copies).
    pub requests: u64,
    /// Storage read operations issued.
    pub read_ops: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Nanoseconds the worker had work in flight.
    pub busy_ns: u64,
    /// Number of distinct fallbacks taken; read each with `lls_context_fallback`.
    pub fallbacks: u64,
}

fn engine_of(name: &str) -> lls_engine {
    [
        (EngineKind::UringFixed, lls_engine::IoUringFixed),
        (EngineKind::Uring, lls_engine::IoUring),
        (EngineKind::Threads, lls_engine::Threads),
    ]
    .into_iter()
    .find(|(k, _)| k.name() == name)
    .map_or(lls_engine::None, |(_, e)| e)
}

/// Write the context's counters so far to `*out`.
///
/// # Safety
/// `ctx` is NULL or a live context; `out` is NULL or points to a writable `lls_stats`.
#[no_mangle]
pub unsafe extern "C" fn lls_context_stats(
    ctx: *const lls_context,
    out: *mut lls_stats,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        check_out!(out);
        let s = ctx.stats();
        put!(
            out,
            lls_stats {
                backend: backend_kind(ctx.backend()),
                engine: engine_of(&s.engine),
                bytes_direct: s.bytes_direct,
                bytes_buffered: s.bytes_buffered,
                bytes_to_device: s.bytes_to_device,
                bytes_to_host: s.bytes_to_host,
                requests: s.requests,
                read_ops: s.read_ops,
                errors: s.errors,
                busy_ns: s.busy_ns,
                fallbacks: u64::try_from(s.fallbacks.len()).unwrap_or(u64::MAX),
            }
        );
        Ok(())
    })
}

/// Write the reason of fallback number `idx` (0 ..< `lls_stats.fallbacks`) as
/// `lls_error_message` writes text (`"O_DIRECT refused by the file system ...; buffered
/// reads"`). `LLS_STATUS_INVALID_ARGUMENT` for an index beyond the count.
///
/// # Safety
/// `ctx` is NULL or a live context; `buf` is NULL or points to `len` writable bytes; `out_n` is
/// NULL or points to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn lls_context_fallback(
    ctx: *const lls_context,
    idx: usize,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        let all = ctx.stats().fallbacks;
        let text = all
            .get(idx)
            .ok_or_else(|| FfiError::invalid(format!("fallback {idx} of {}", all.len())))?;
        // SAFETY: forwarded from this function's contract.
        unsafe { write_str(text, buf, len, out_n) }
    })
}

#[cfg(test)]
mod tests {
    use super::super::context::lls_context_free;
    use super::super::context::tests::host_context;
    use super::*;
    use std::ptr::null_mut;

    #[test]
    fn engine_names_map() {
        assert_eq!(engine_of("threads"), lls_engine::Threads);
        assert_eq!(engine_of("io_uring_fixed"), lls_engine::IoUringFixed);
        assert_eq!(engine_of("io_uring"), lls_engine::IoUring);
        assert_eq!(engine_of(""), lls_engine::None);
    }

    #[test]
    fn stats_and_fallbacks() {
        let ctx = host_context();
        let mut s = std::mem::MaybeUninit::<lls_stats>::uninit();
        // SAFETY: live context, writable output.
        let r = unsafe { lls_context_stats(ctx, s.as_mut_ptr()) };
        assert_eq!(r, lls_status::Ok);
        // SAFETY: written on success.
        let s = unsafe { s.assume_init() };
        assert_eq!(s.backend, lls_backend::Host);
        assert_ne!(s.engine, lls_engine::None);
        assert_eq!(s.requests, 0);
        let mut n = 0;
        let idx = usize::try_from(s.fallbacks).unwrap();
        // SAFETY: NULL buffer with len 0 is a size query; index beyond the count is refused.
        let r = unsafe { lls_context_fallback(ctx, idx, null_mut(), 0, &mut n) };
        assert_eq!(r, lls_status::InvalidArgument);
        // SAFETY: NULL output is reported.
        let r = unsafe { lls_context_stats(ctx, null_mut()) };
        assert_eq!(r, lls_status::NullPointer);
        // SAFETY: freed once.
        unsafe { lls_context_free(ctx) };
    }
}
