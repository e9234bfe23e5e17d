//! Filling a shared RAM tier: a memfd written once through a temporary mapping by the library's
//! reader (O_DIRECT where the file allows), then sealed so that no one can write, shrink or grow
//! it. The only unsafe code of the daemon besides taking over the activation socket.

use llmstream::{Context, Source};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// Why a tier could not be filled.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        /// The call.
        op: &'static str,
        /// Its error.
        source: nix::errno::Errno,
    },
    /// The read from the client's descriptor failed.
    #[error("reading the model: {0}")]
    Read(#[from] llmstream::Error),
    /// The size does not fit this machine's types.
    #[error("a tier of {0} bytes cannot be mapped")]
    TooLarge(u64),
}

fn os(op: &'static str) -> impl FnOnce(nix::errno::Errno) -> FillError {
    move |source| FillError::Os { op, source }
}

/// A sealed memfd holding bytes `offset..offset+len` of `src`, read with `ctx`.
pub fn fill(ctx: &Context, src: &Arc<Source>, offset: u64, len: u64) -> Result<OwnedFd, FillError> {
    let n = usize::try_from(len).map_err(|_| FillError::TooLarge(len))?;
    let nz = NonZeroUsize::new(n).ok_or(FillError::TooLarge(0))?;
    let size = i64::try_from(len).map_err(|_| FillError::TooLarge(len))?;
    let fd = memfd_create(
        c"llmstream-tier",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(os("memfd_create"))?;
    nix::unistd::ftruncate(&fd, size).map_err(os("ftruncate"))?;
    // SAFETY: a fresh shared mapping placed by the kernel, of exactly the memfd's size; only
    // this function knows the memfd, so nothing else maps or resizes it meanwhile.
    let map = unsafe {
        mmap(
            None,
            nz,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            &fd,
            0,
        )
    }
    .map_err(os("mmap"))?;
    // SAFETY: `map..map+n` is the writable mapping just made, not touched by this thread while
    // the read runs, and unmapped only once no read into it is in flight (checked below).
    let read = match unsafe { ctx.wrap_host(map.as_ptr().cast::<u8>(), n) } {
        Ok(buf) => {
            let r = ctx.read(src, offset, len, &buf, 0);
            match r {
                Err(e) if buf.reads_in_flight() > 0 => {
                    // The wait failed with the request unfinished: the worker may still write,
                    // so the mapping stays (a leak on a broken worker, never a write to freed
                    // memory).
                    std::mem::forget(buf);
                    return Err(e.into());
                }
                r => r,
            }
        }
        Err(e) => Err(e),
    };
    // SAFETY: the mapping made above; no read into it is in flight and no pointer into it
    // remains.
    unsafe { munmap(map, n) }.map_err(os("munmap"))?;
    read?;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(os("F_ADD_SEALS"))?;
    Ok(fd)
}
