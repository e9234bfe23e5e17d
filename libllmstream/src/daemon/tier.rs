//! A model's shared RAM tier as one client sees it: the daemon's sealed memfd mapped read-only
//! and page-locked (registered with CUDA on the cuda backend, `mlock` otherwise). The only
//! unsafe code of the client: the mapping, its locking, and handing out pointers into it.

use super::proto::TierGrant;
use super::DaemonError;
use crate::backend::Backend;
use crate::stats::StatsInner;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

/// How the mapping is page-locked.
enum Lock {
    /// Not locked (the limit did not allow it; recorded as a fallback).
    None,
    /// `mlock`.
    Mlock,
    /// Registered with the CUDA driver (page-locked and DMA-mapped).
    Cuda(Arc<Backend>),
}

/// The mapped tier of one model.
pub(crate) struct SharedTier {
    ptr: NonNull<u8>,
    len: usize,
    file_offset: u64,
    lock: Lock,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("file_offset", &self.file_offset)
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: the mapping is read-only shared memory whose writes and size changes the daemon has
// sealed away (checked in `map`); it only hands out pointers to read, from any thread.
unsafe impl Send for SharedTier {}
// SAFETY: as above.
unsafe impl Sync for SharedTier {}

/// The seals that make the memfd safe to map and read: no writes, no shrinking (no SIGBUS).
fn required_seals() -> SealFlag {
    SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW
}

impl SharedTier {
    /// Check and map the memfd `fd` holding `grant` of a `file_len`-byte file.
    pub(crate) fn map(
        fd: OwnedFd,
        grant: TierGrant,
        file_len: u64,
        backend: &Arc<Backend>,
        stats: &StatsInner,
    ) -> Result<Self, DaemonError> {
        let bad = |why: String| DaemonError::Tier(why);
        if grant
            .file_offset
            .checked_add(grant.len)
            .is_none_or(|end| end > file_len)
        {
            return Err(bad(format!(
                "{} bytes at {} lie outside the {file_len}-byte file",
                grant.len, grant.file_offset
            )));
        }
        let len = usize::try_from(grant.len).map_err(|_| bad("too large to map".into()))?;
        let nz = NonZeroUsize::new(len).ok_or_else(|| bad("empty tier".into()))?;
        let file = std::fs::File::from(fd);
        let size = file
            .metadata()
            .map_err(|source| DaemonError::Os {
                op: "fstat memfd",
                source,
            })?
            .len();
        if size < grant.len {
            return Err(bad(format!("memfd of {size} bytes, {len} granted")));
        }
        let seals =
            fcntl(file.as_raw_fd(), FcntlArg::F_GET_SEALS).map_err(|e| DaemonError::Os {
                op: "F_GET_SEALS",
                source: e.into(),
            })?;
        if !SealFlag::from_bits_truncate(seals).contains(required_seals()) {
            return Err(bad(format!("memfd not sealed (seals {seals:#x})")));
        }
        // SAFETY: a fresh mapping chosen by the kernel (no address given), of `len` bytes of a
        // memfd that is at least that long and sealed against shrinking, so every mapped page
        // stays backed; read-only, so the sealed contents are never written through it.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                &file,
                0,
            )
        }
        .map_err(|e| DaemonError::Os {
            op: "mmap",
            source: e.into(),
        })?;
        let ptr = ptr.cast::<u8>();
        let lock = lock(ptr, len, backend, stats);
        Ok(Self {
            ptr,
            len,
            file_offset: grant.file_offset,
            lock,
        })
    }

    /// Bytes mapped.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A pointer to file bytes `offset..offset+len` when the tier holds all of them. The
    /// pointer is valid for `len` bytes of reading for as long as `self` lives.
    pub(crate) fn bytes_at(&self, offset: u64, len: u64) -> Option<*const u8> {
        let start = offset.checked_sub(self.file_offset)?;
        let end = start.checked_add(len)?;
        if end > self.len as u64 {
            return None;
        }
        let start = usize::try_from(start).ok()?;
        // SAFETY: start + len <= self.len, so the result stays inside the mapping.
        Some(unsafe { self.ptr.as_ptr().add(start) }.cast_const())
    }
}

/// Page-lock the mapping: CUDA registration on the cuda backend (read-only), `mlock` otherwise.
fn lock(ptr: NonNull<u8>, len: usize, backend: &Arc<Backend>, stats: &StatsInner) -> Lock {
    if let Backend::Cuda(c) = &**backend {
        match c.register_host_read_only(ptr.as_ptr(), len) {
            Ok(()) => return Lock::Cuda(Arc::clone(backend)),
            Err(e) => stats.fallback(format!(
                "shared RAM tier not registered with CUDA ({e}); mlock instead"
            )),
        }
    }
    // SAFETY: `ptr..ptr+len` is the mapping just made; mlock only changes its residency.
    match unsafe { nix::sys::mman::mlock(ptr.cast::<c_void>(), len) } {
        Ok(()) => Lock::Mlock,
        Err(e) => {
            stats.fallback(format!(
                "shared RAM tier not page-locked ({e}: RLIMIT_MEMLOCK too low); copies from it \
                 may be slower"
            ));
            Lock::None
        }
    }
}

impl Drop for SharedTier {
    fn drop(&mut self) {
        match &self.lock {
            Lock::None => {}
            Lock::Cuda(b) => {
                if let Backend::Cuda(c) = &**b {
                    c.unregister_host(self.ptr.as_ptr());
                }
            }
            Lock::Mlock => {
                // SAFETY: the range is the mapping locked in `lock`, still mapped.
                let _ = unsafe { nix::sys::mman::munlock(self.ptr.cast::<c_void>(), self.len) };
            }
        }
        // SAFETY: `ptr..ptr+len` is the mapping made in `map`; every pointer handed out by
        // `bytes_at` was used under a borrow of `self` or with `self` kept alive by an
        // `Arc<Source>` until the copy finished, so nothing uses it any more.
        if let Err(e) = unsafe { munmap(self.ptr.cast::<c_void>(), self.len) } {
            tracing::warn!("munmap of the shared RAM tier failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendChoice;
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    use std::io::Write;

    /// A memfd holding `bytes`, sealed with `seals`.
    fn memfd(bytes: &[u8], seals: SealFlag) -> OwnedFd {
        let fd = memfd_create(c"tier-test", MemFdCreateFlag::MFD_ALLOW_SEALING).unwrap();
        let mut f = std::fs::File::from(fd);
        f.write_all(bytes).unwrap();
        fcntl(f.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).unwrap();
        OwnedFd::from(f)
    }

    fn host() -> Arc<Backend> {
        Arc::new(Backend::new(BackendChoice::Host, 0).unwrap())
    }

    #[test]
    fn a_sealed_tier_maps_and_serves_covered_ranges_only() {
        let bytes: Vec<u8> = (0..10_000u32)
            .map(|i| u8::try_from(i % 253).unwrap())
            .collect();
        let stats = StatsInner::default();
        let grant = TierGrant {
            file_offset: 1000,
            len: 10_000,
        };
        let t = SharedTier::map(
            memfd(&bytes, required_seals()),
            grant,
            11_000,
            &host(),
            &stats,
        )
        .unwrap();
        assert_eq!(t.len(), 10_000);
        let p = t.bytes_at(1500, 100).unwrap();
        // SAFETY: bytes_at promised 100 readable bytes while `t` lives.
        let got = unsafe { std::slice::from_raw_parts(p, 100) };
        assert_eq!(got, &bytes[500..600]);
        assert!(t.bytes_at(1000, 10_000).is_some());
        assert!(t.bytes_at(999, 10).is_none());
        assert!(t.bytes_at(10_990, 11).is_none());
        assert!(t.bytes_at(u64::MAX, 2).is_none());
    }

    #[test]
    fn unsealed_short_or_misplaced_tiers_are_refused() {
        let bytes = vec![7u8; 4096];
        let stats = StatsInner::default();
        let grant = TierGrant {
            file_offset: 0,
            len: 4096,
        };
        let b = host();
        // Writable: the daemon could change it under us.
        let e = SharedTier::map(
            memfd(&bytes, SealFlag::F_SEAL_SHRINK),
            grant,
            4096,
            &b,
            &stats,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not sealed"), "{e}");
        // Outside the file.
        let e =
            SharedTier::map(memfd(&bytes, required_seals()), grant, 4095, &b, &stats).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        // Longer than the memfd.
        let long = TierGrant {
            file_offset: 0,
            len: 8192,
        };
        let e =
            SharedTier::map(memfd(&bytes, required_seals()), long, 8192, &b, &stats).unwrap_err();
        assert!(e.to_string().contains("memfd of 4096 bytes"), "{e}");
        let empty = TierGrant {
            file_offset: 0,
            len: 0,
        };
        assert!(SharedTier::map(memfd(&bytes, required_seals()), empty, 10, &b, &stats).is_err());
    }
}
