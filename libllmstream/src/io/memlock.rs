//! RLIMIT_MEMLOCK: registered io_uring buffers are charged against it unless the process holds
//! CAP_IPC_LOCK.

use crate::error::{Error, Result};

/// The soft RLIMIT_MEMLOCK in bytes, `None` when unlimited.
pub fn limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through the valid pointer.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
    if r != 0 || rl.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(rl.rlim_cur)
}

/// Whether the process holds CAP_IPC_LOCK (then the limit does not apply).
pub fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Ok when `required` bytes can be locked; else [`Error::MemlockLimit`] naming both figures.
pub fn check(required: u64) -> Result<()> {
    match limit() {
        Some(current) if current < required && !has_cap_ipc_lock() => {
            Err(Error::MemlockLimit { current, required })
        }
        _ => Ok(()),
    }
}
