//! Run-time detection of io_uring, done once per process and cached.

use io_uring::{opcode, IoUring, Probe};
use std::sync::OnceLock;

static URING: OnceLock<Result<(), String>> = OnceLock::new();

/// Whether io_uring with the opcodes the reader needs works here; `Err` says why not
/// (`kernel.io_uring_disabled`, seccomp, old kernel, missing opcode). Logged once.
pub fn uring_support() -> &'static Result<(), String> {
    URING.get_or_init(|| {
        let r = detect();
        match &r {
            Ok(()) => tracing::debug!("io_uring available"),
            Err(why) => tracing::warn!("io_uring unavailable: {why}"),
        }
        r
    })
}

fn detect() -> Result<(), String> {
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if s.trim() == "2" {
            return Err("kernel.io_uring_disabled = 2".into());
        }
    }
    let ring = IoUring::new(4).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no io_uring (ENOSYS)".to_string(),
        Some(libc::EPERM) => {
            "io_uring_setup refused (EPERM: kernel.io_uring_disabled = 1 without the \
             io_uring group, or a seccomp filter)"
                .to_string()
        }
        _ => format!("io_uring_setup failed: {e}"),
    })?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("IORING_REGISTER_PROBE failed (kernel older than 5.6?): {e}"))?;
    for (code, name) in [
        (opcode::Read::CODE, "IORING_OP_READ"),
        (opcode::ReadFixed::CODE, "IORING_OP_READ_FIXED"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("{name} is not supported by this kernel"));
        }
    }
    Ok(())
}
