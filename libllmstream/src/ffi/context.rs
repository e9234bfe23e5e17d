//! `lls_config` and `lls_context`: settings, and the streaming context (one backend, one reader,
//! one worker thread) every read goes through.

use super::error::{lls_status, FfiError};
use super::handle::Handle;
use super::panic::{guard, guard_value};
use super::text::write_str;
use crate::backend::{BackendChoice, BackendKind};
use crate::context::{Config, Context};
use crate::io::{DirectChoice, EngineChoice, ReaderConfig};
use std::ffi::c_char;
use std::mem::{align_of, offset_of, size_of};

/// A streaming context: one backend, one storage reader and one worker thread. Thread-safe: any
/// thread may use a context at the same time as others. `lls_context_free` waits for the reads
/// in flight to finish.
#[allow(non_camel_case_types)]
pub struct lls_context {
    _private: [u8; 0],
}

impl Handle for lls_context {
    type Target = Context;
}

/// A backend: where streamed bytes end up.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lls_backend {
    /// CUDA when a driver and a device exist, else host (only as a choice in `lls_config`).
    Auto = 0,
    /// CUDA device memory, copies on a dedicated stream.
    Cuda = 1,
    /// Plain host memory, no GPU needed.
    Host = 2,
}

/// The storage reader engine.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lls_io_engine {
    /// io_uring when the kernel allows it, else the thread pool.
    Auto = 0,
    /// io_uring or an error.
    Uring = 1,
    /// A pool of threads doing pread.
    Threads = 2,
}

/// Whether files are read with O_DIRECT (bypassing the page cache).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lls_direct {
    /// O_DIRECT where the file system accepts it, buffered reads elsewhere.
    Auto = 0,
    /// O_DIRECT or an error.
    On = 1,
    /// Buffered reads through the page cache.
    Off = 2,
}

/// Settings of a context. Fill one with `lls_config_default` (or `lls_config_from_env`), change
/// fields, and pass it to `lls_context_new`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct lls_config {
    /// `sizeof(lls_config)` as the caller knows it; set by `lls_config_default`. Lets later
    /// versions append fields without breaking older callers.
    pub struct_size: usize,
    /// Which backend to use.
    pub backend: lls_backend,
    /// CUDA device ordinal.
    pub device: u32,
    /// Reader engine.
    pub io_engine: lls_io_engine,
    /// O_DIRECT choice.
    pub direct: lls_direct,
    /// Storage reads in flight at once (1..=4096).
    pub queue_depth: u32,
    /// Threads of the pread pool (1..=256).
    pub threads: u32,
    /// Bytes per storage read request: a power of two, 4 KiB ..= 64 MiB.
    pub request_size: usize,
    /// Page-locked staging slots (1..=1024).
    pub staging_buffers: usize,
    /// Bytes per staging slot: at least `request_size`, at most 1 GiB.
    pub staging_buffer_size: usize,
}

/// [`lls_config`] as it may arrive from C: the enum fields as plain integers, so that reading
/// an out-of-range value is not undefined behaviour. Same layout (checked below).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RawConfig {
    struct_size: usize,
    backend: u32,
    device: u32,
    io_engine: u32,
    direct: u32,
    queue_depth: u32,
    threads: u32,
    request_size: usize,
    staging_buffers: usize,
    staging_buffer_size: usize,
}

const _: () = {
    assert!(size_of::<RawConfig>() == size_of::<lls_config>());
    assert!(align_of::<RawConfig>() == align_of::<lls_config>());
    assert!(offset_of!(RawConfig, struct_size) == offset_of!(lls_config, struct_size));
    assert!(offset_of!(RawConfig, backend) == offset_of!(lls_config, backend));
    assert!(offset_of!(RawConfig, device) == offset_of!(lls_config, device));
    assert!(offset_of!(RawConfig, io_engine) == offset_of!(lls_config, io_engine));
    assert!(offset_of!(RawConfig, direct) == offset_of!(lls_config, direct));
    assert!(offset_of!(RawConfig, queue_depth) == offset_of!(lls_config, queue_depth));
    assert!(offset_of!(RawConfig, threads) == offset_of!(lls_config, threads));
    assert!(offset_of!(RawConfig, request_size) == offset_of!(lls_config, request_size));
    assert!(offset_of!(RawConfig, staging_buffers) == offset_of!(lls_config, staging_buffers));
    assert!(
        offset_of!(RawConfig, staging_buffer_size) == offset_of!(lls_config, staging_buffer_size)
    );
};

pub(crate) fn backend_kind(k: BackendKind) -> lls_backend {
    match k {
        BackendKind::Cuda => lls_backend::Cuda,
        BackendKind::Host => lls_backend::Host,
    }
}

/// The C view of a configuration.
fn config_to_c(c: &Config) -> Result<lls_config, FfiError> {
    let r = &c.reader;
    let too_big = |field: &str| {
        FfiError::new(
            lls_status::InvalidConfig,
            format!("{field} does not fit the C field"),
        )
    };
    Ok(lls_config {
        struct_size: size_of::<lls_config>(),
        backend: match c.backend {
            BackendChoice::Auto => lls_backend::Auto,
            BackendChoice::Cuda => lls_backend::Cuda,
            BackendChoice::Host => lls_backend::Host,
        },
        device: u32::try_from(c.device).map_err(|_| too_big("device"))?,
        io_engine: match r.engine {
            EngineChoice::Auto => lls_io_engine::Auto,
            EngineChoice::Uring => lls_io_engine::Uring,
            EngineChoice::Threads => lls_io_engine::Threads,
        },
        direct: match r.direct {
            DirectChoice::Auto => lls_direct::Auto,
            DirectChoice::On => lls_direct::On,
            DirectChoice::Off => lls_direct::Off,
        },
        queue_depth: r.queue_depth,
        threads: u32::try_from(r.threads).map_err(|_| too_big("threads"))?,
        request_size: r.request_size,
        staging_buffers: r.staging_buffers,
        staging_buffer_size: r.staging_buffer_size,
    })
}

/// A configuration from what C passed, enums checked.
fn config_from_c(r: RawConfig) -> Result<Config, FfiError> {
    let bad = |field: &str, v: u32, what: &str| {
        FfiError::new(
            lls_status::InvalidConfig,
            format!("lls_config.{field} = {v} is not an {what}"),
        )
    };
    let backend = match r.backend {
        0 => BackendChoice::Auto,
        1 => BackendChoice::Cuda,
        2 => BackendChoice::Host,
        v => return Err(bad("backend", v, "lls_backend")),
    };
    let engine = match r.io_engine {
        0 => EngineChoice::Auto,
        1 => EngineChoice::Uring,
        2 => EngineChoice::Threads,
        v => return Err(bad("io_engine", v, "lls_io_engine")),
    };
    let direct = match r.direct {
        0 => DirectChoice::Auto,
        1 => DirectChoice::On,
        2 => DirectChoice::Off,
        v => return Err(bad("direct", v, "lls_direct")),
    };
    let as_usize = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
    Ok(Config {
        backend,
        device: as_usize(r.device),
        reader: ReaderConfig {
            engine,
            direct,
            queue_depth: r.queue_depth,
            request_size: r.request_size,
            staging_buffers: r.staging_buffers,
            staging_buffer_size: r.staging_buffer_size,
            threads: as_usize(r.threads),
        },
    })
}

/// Fill `*out` with the built-in defaults (environment variables are not read).
///
/// # Safety
/// `out` is NULL or points to writable memory for an `lls_config`.
#[no_mangle]
pub unsafe extern "C" fn lls_config_default(out: *mut lls_config) -> lls_status {
    guard(|| {
        check_out!(out);
        put!(out, config_to_c(&Config::default())?);
        Ok(())
    })
}

/// Fill `*out` with the defaults and the `LLMSTREAM_BACKEND`, `LLMSTREAM_IO_ENGINE`,
/// `LLMSTREAM_DIRECT`, `LLMSTREAM_QUEUE_DEPTH` and `LLMSTREAM_REQUEST_SIZE` environment variables
/// applied: what `lls_context_new(NULL, ...)` uses.
///
/// # Safety
/// `out` is NULL or points to writable memory for an `lls_config`.
#[no_mangle]
pub unsafe extern "C" fn lls_config_from_env(out: *mut lls_config) -> lls_status {
    guard(|| {
        check_out!(out);
        let c = Config::from_env()?;
        put!(out, config_to_c(&c)?);
        Ok(())
    })
}

/// Start a context with the settings in `*cfg`, or with defaults and the environment
/// (`lls_config_from_env`) when `cfg` is NULL. Writes the new context to `*out`.
///
/// Fails with `LLS_STATUS_INVALID_CONFIG` for out-of-range settings,
/// `LLS_STATUS_BACKEND_UNAVAILABLE` when `LLS_BACKEND_CUDA` was asked for and cannot be used,
/// `LLS_STATUS_MEMLOCK` when page-locked staging exceeds RLIMIT_MEMLOCK.
///
/// # Safety
/// `cfg` is NULL or points to an `lls_config` of at least `cfg->struct_size` readable bytes;
/// `out` is NULL or points to a writable `lls_context*`.
#[no_mangle]
pub unsafe extern "C" fn lls_context_new(
    cfg: *const lls_config,
    out: *mut *mut lls_context,
) -> lls_status {
    guard(|| {
        check_out!(out);
        let config = if cfg.is_null() {
            Config::from_env()?
        } else {
            // SAFETY: `cfg` is non-NULL and points to at least a `size_t` (the first field of
            // every lls_config version), aligned as the struct is.
            let size = unsafe { cfg.cast::<usize>().read() };
            if size < size_of::<lls_config>() {
                return Err(FfiError::new(
                    lls_status::InvalidConfig,
                    format!(
                        "lls_config.struct_size is {size}; this library needs {} (fill the \
                         struct with lls_config_default)",
                        size_of::<lls_config>()
                    ),
                ));
            }
            // SAFETY: the caller's struct holds `size >= sizeof(RawConfig)` readable bytes, and
            // RawConfig has lls_config's layout with integers where the enums are, so any bit
            // pattern C put there is a valid RawConfig.
            let raw = unsafe { cfg.cast::<RawConfig>().read() };
            config_from_c(raw)?
        };
        let ctx = crate::Context::new(config)?;
        put!(out, lls_context::into_raw(ctx));
        Ok(())
    })
}

/// Free a context. Waits for the reads in flight to finish, then stops its worker. Sources,
/// models and buffers made through it stay usable on their own (buffers keep their memory), but
/// no new read can be issued through the freed context. NULL is a no-op.
///
/// # Safety
/// `ctx` is NULL or a context from `lls_context_new` not freed yet; no other thread uses it
/// during or after the call.
#[no_mangle]
pub unsafe extern "C" fn lls_context_free(ctx: *mut lls_context) {
    guard_value((), || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_context::free(ctx) }
    })
}

/// The backend the context runs (`LLS_BACKEND_CUDA` or `LLS_BACKEND_HOST`, never AUTO).
///
/// # Safety
/// `ctx` is NULL or a live context; `out` is NULL or points to a writable `lls_backend`.
#[no_mangle]
pub unsafe extern "C" fn lls_context_backend(
    ctx: *const lls_context,
    out: *mut lls_backend,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        put!(out, backend_kind(ctx.backend()));
        Ok(())
    })
}

/// A one-line description of the backend (`host`, or `cuda: <device name>, driver ...`), written
/// as `lls_error_message` writes text.
///
/// # Safety
/// `ctx` is NULL or a live context; `buf` is NULL or points to `len` writable bytes; `out_n` is
/// NULL or points to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn lls_context_backend_description(
    ctx: *const lls_context,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        // SAFETY: forwarded from this function's contract.
        unsafe { write_str(&ctx.backend_description(), buf, len, out_n) }
    })
}

/// The settings the context runs with (the environment applied when it was made from NULL).
///
/// # Safety
/// `ctx` is NULL or a live context; `out` is NULL or points to a writable `lls_config`.
#[no_mangle]
pub unsafe extern "C" fn lls_context_config(
    ctx: *const lls_context,
    out: *mut lls_config,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        put!(out, config_to_c(ctx.config())?);
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::ptr::{null, null_mut};

    /// A host-backend context with small staging, for tests.
    pub(crate) fn host_context() -> *mut lls_context {
        let mut cfg = std::mem::MaybeUninit::<lls_config>::uninit();
        // SAFETY: `cfg` is writable memory for an lls_config.
        let r = unsafe { lls_config_default(cfg.as_mut_ptr()) };
        assert_eq!(r, lls_status::Ok);
        // SAFETY: lls_config_default succeeded, so it initialised the struct.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.backend = lls_backend::Host;
        cfg.staging_buffers = 2;
        cfg.staging_buffer_size = 1 << 20;
        cfg.threads = 2;
        let mut ctx = null_mut();
        // SAFETY: valid config and output pointer.
        let s = unsafe { lls_context_new(&cfg, &mut ctx) };
        assert_eq!(
            s,
            lls_status::Ok,
            "{:?}",
            super::super::text_of_last_error()
        );
        ctx
    }

    #[test]
    fn defaults_round_trip() {
        let mut cfg = std::mem::MaybeUninit::<lls_config>::uninit();
        // SAFETY: writable lls_config memory.
        let r = unsafe { lls_config_default(cfg.as_mut_ptr()) };
        assert_eq!(r, lls_status::Ok);
        // SAFETY: initialised by lls_config_default.
        let cfg = unsafe { cfg.assume_init() };
        assert_eq!(cfg.struct_size, size_of::<lls_config>());
        let raw = RawConfig {
            struct_size: cfg.struct_size,
            backend: cfg.backend as u32,
            device: cfg.device,
            io_engine: cfg.io_engine as u32,
            direct: cfg.direct as u32,
            queue_depth: cfg.queue_depth,
            threads: cfg.threads,
            request_size: cfg.request_size,
            staging_buffers: cfg.staging_buffers,
            staging_buffer_size: cfg.staging_buffer_size,
        };
        assert_eq!(config_from_c(raw).unwrap(), Config::default());
    }

    #[test]
    fn context_lifecycle_and_null_arguments() {
        let ctx = host_context();
        let mut b = lls_backend::Auto;
        // SAFETY: live context, writable output.
        assert_eq!(unsafe { lls_context_backend(ctx, &mut b) }, lls_status::Ok);
        assert_eq!(b, lls_backend::Host);
        // SAFETY: NULL context is reported.
        let s = unsafe { lls_context_backend(null(), &mut b) };
        assert_eq!(s, lls_status::NullPointer);
        assert!(super::super::text_of_last_error().contains("`ctx`"));
        // SAFETY: NULL output is reported.
        let r = unsafe { lls_context_backend(ctx, null_mut()) };
        assert_eq!(r, lls_status::NullPointer);
        let mut buf = [0 as c_char; 64];
        let mut n = 0;
        // SAFETY: 64 writable bytes.
        let s = unsafe { lls_context_backend_description(ctx, buf.as_mut_ptr(), 64, &mut n) };
        assert_eq!(s, lls_status::Ok);
        assert_eq!(n, 4, "host");
        let mut c2 = std::mem::MaybeUninit::<lls_config>::uninit();
        // SAFETY: live context, writable output.
        let r = unsafe { lls_context_config(ctx, c2.as_mut_ptr()) };
        assert_eq!(r, lls_status::Ok);
        // SAFETY: initialised on success.
        assert_eq!(unsafe { c2.assume_init() }.staging_buffers, 2);
        // SAFETY: a live context, freed once; then NULL is a no-op.
        unsafe {
            lls_context_free(ctx);
            lls_context_free(null_mut());
        }
    }

    #[test]
    fn bad_configs_are_refused_without_output() {
        let mut cfg = std::mem::MaybeUninit::<lls_config>::uninit();
        // SAFETY: writable lls_config memory.
        unsafe { lls_config_default(cfg.as_mut_ptr()) };
        // SAFETY: initialised above.
        let good = unsafe { cfg.assume_init() };
        let sentinel = 0x1000 as *mut lls_context;

        let mut raw = RawConfig {
            struct_size: good.struct_size,
            backend: 7,
            device: 0,
            io_engine: 0,
            direct: 0,
            queue_depth: 32,
            threads: 2,
            request_size: 1 << 20,
            staging_buffers: 2,
            staging_buffer_size: 1 << 20,
        };
        let mut out = sentinel;
        // SAFETY: RawConfig has lls_config's layout; `out` is writable.
        let s = unsafe { lls_context_new(std::ptr::from_ref(&raw).cast(), &mut out) };
        assert_eq!(s, lls_status::InvalidConfig);
        assert_eq!(out, sentinel, "output untouched on failure");
        assert!(super::super::text_of_last_error().contains("backend = 7"));

        raw.backend = 2;
        raw.struct_size = 8;
        // SAFETY: as above.
        let s = unsafe { lls_context_new(std::ptr::from_ref(&raw).cast(), &mut out) };
        assert_eq!(s, lls_status::InvalidConfig);

        raw.struct_size = good.struct_size;
        raw.request_size = 3000;
        // SAFETY: as above.
        let s = unsafe { lls_context_new(std::ptr::from_ref(&raw).cast(), &mut out) };
        assert_eq!(s, lls_status::InvalidConfig);
        assert_eq!(out, sentinel);

        // SAFETY: NULL output is reported before anything is created.
        let s = unsafe { lls_context_new(&good, null_mut()) };
        assert_eq!(s, lls_status::NullPointer);
    }
}
