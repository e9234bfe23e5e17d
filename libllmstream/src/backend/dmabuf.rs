//! VRAM as a dma-buf, and whether io_uring can take it as a fixed buffer.
//!
//! Exporting device memory (`cuMemGetHandleForAddressRange`, in [`super::cuda`]) gives a
//! dma-buf fd. For NVMe reads to land in it, io_uring would have to register that dma-buf as a
//! fixed buffer so `READ_FIXED` DMAs into it; mainline kernels have no such registration for
//! block I/O (it is proposed upstream), and the classic `IORING_REGISTER_BUFFERS` only takes
//! user memory whose pages can be pinned. This module probes at run time what the running
//! kernel and driver allow, step by step: map the dma-buf into the process, register that
//! mapping as a fixed buffer, and read into it. Each step's errno is kept and classified; any
//! failure means the caller stays on the pinned bounce.
//!
//! One of the few modules with `unsafe`: `mmap`/`munmap` and io_uring buffer registration.

use serde::Serialize;
use std::os::fd::{AsRawFd, OwnedFd};

/// A dma-buf exported from device memory.
#[derive(Debug)]
pub struct DmaBuf {
    /// The dma-buf file descriptor.
    pub fd: OwnedFd,
    /// Bytes it covers.
    pub size: usize,
}

/// One probe step's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Whether it worked.
    pub ok: bool,
    /// The errno when it failed.
    pub errno: Option<i32>,
    /// What happened, in words.
    pub detail: String,
}

impl Step {
    fn ok(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            errno: None,
            detail: detail.into(),
        }
    }

    fn failed(errno: Option<i32>, detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            errno,
            detail: detail.into(),
        }
    }
}

/// What io_uring made of a dma-buf.
#[derive(Debug, Clone, Serialize)]
pub struct UringProbe {
    /// `mmap` of the dma-buf fd into this process.
    pub mmap: Step,
    /// `IORING_REGISTER_BUFFERS` of that mapping (absent when the mapping failed).
    pub register: Option<Step>,
    /// One `READ_FIXED` from the file into it (absent when registration failed).
    pub read_fixed: Option<Step>,
}

impl UringProbe {
    /// True when NVMe reads can land in the dma-buf through io_uring.
    pub fn usable(&self) -> bool {
        self.read_fixed.as_ref().is_some_and(|s| s.ok)
    }
}

/// Words for an errno from mapping a dma-buf.
pub fn explain_mmap(errno: i32) -> &'static str {
    match errno {
        libc::ENODEV | libc::EINVAL | libc::EOPNOTSUPP => {
            "the exporter does not support mmap of this dma-buf (NVIDIA's exporter serves DMA importers only)"
        }
        libc::EACCES | libc::EPERM => "permission denied mapping the dma-buf",
        libc::ENOMEM => "no address space or memory for the mapping",
        _ => "mmap of the dma-buf failed",
    }
}

/// Words for an errno from `IORING_REGISTER_BUFFERS` or ring setup.
pub fn explain_register(errno: i32) -> &'static str {
    match errno {
        libc::EFAULT | libc::EOPNOTSUPP => {
            "the kernel cannot pin the pages of a dma-buf mapping (VM_PFNMAP/VM_IO): io_uring has no dma-buf buffer registration for block I/O in this kernel"
        }
        libc::ENOMEM => "RLIMIT_MEMLOCK too low to register the buffer",
        libc::EPERM | libc::ENOSYS => "io_uring is disabled or filtered (kernel.io_uring_disabled, seccomp)",
        libc::EINVAL => "the kernel rejected the buffer (size or alignment)",
        _ => "fixed-buffer registration failed",
    }
}

fn errno_of(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

/// A shared mapping of a dma-buf, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` was mapped by `mmap` below and is unmapped once; the ring that
        // registered it has been dropped first (declaration order in `probe_uring`).
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Probe io_uring against `buf`. With `file` (an fd open for reading, ideally `O_DIRECT`, and
/// at least `buf.size` bytes long or the read is short) a successful registration is followed
/// by one `READ_FIXED` of up to `buf.size` bytes at offset 0; the caller checks the bytes.
pub fn probe_uring(buf: &DmaBuf, file: Option<&std::fs::File>) -> UringProbe {
    // SAFETY: a fresh shared mapping of an fd we own; the kernel validates fd, size and flags.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            buf.size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            buf.fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        let errno = errno_of(&e);
        return UringProbe {
            mmap: Step::failed(errno, format!("{e}: {}", explain_mmap(errno.unwrap_or(0)))),
            register: None,
            read_fixed: None,
        };
    }
    let map = Mapping {
        ptr: p,
        len: buf.size,
    };
    let mmap = Step::ok(format!("mapped {} bytes at {:p}", buf.size, map.ptr));
    let ring = match io_uring::IoUring::new(4) {
        Ok(r) => r,
        Err(e) => {
            let errno = errno_of(&e);
            return UringProbe {
                mmap,
                register: Some(Step::failed(
                    errno,
                    format!(
                        "io_uring setup: {e}: {}",
                        explain_register(errno.unwrap_or(0))
                    ),
                )),
                read_fixed: None,
            };
        }
    };
    let iov = libc::iovec {
        iov_base: map.ptr,
        iov_len: map.len,
    };
    // SAFETY: the iovec names the live mapping `map`, which outlives `ring` (dropped first at
    // the end of this function, as declared later).
    let reg = unsafe { ring.submitter().register_buffers(&[iov]) };
    if let Err(e) = reg {
        let errno = errno_of(&e);
        return UringProbe {
            mmap,
            register: Some(Step::failed(
                errno,
                format!("{e}: {}", explain_register(errno.unwrap_or(0))),
            )),
            read_fixed: None,
        };
    }
    let register = Some(Step::ok(
        "IORING_REGISTER_BUFFERS accepted the dma-buf mapping",
    ));
    let read_fixed = file.map(|f| read_fixed_once(ring, f, &map));
    UringProbe {
        mmap,
        register,
        read_fixed,
    }
}

fn read_fixed_once(mut ring: io_uring::IoUring, file: &std::fs::File, map: &Mapping) -> Step {
    use io_uring::{opcode, types};
    let Ok(len) = u32::try_from(map.len.min(1 << 30)) else {
        return Step::failed(None, "buffer too large for one read");
    };
    let sqe = opcode::ReadFixed::new(types::Fd(file.as_raw_fd()), map.ptr.cast::<u8>(), len, 0)
        .offset(0)
        .build();
    // SAFETY: the entry reads into registered buffer 0 (`map`, alive until after the ring is
    // dropped at the end of this function) from an fd that stays open meanwhile.
    if unsafe { ring.submission().push(&sqe) }.is_err() {
        return Step::failed(None, "submission queue full");
    }
    if let Err(e) = ring.submit_and_wait(1) {
        return Step::failed(errno_of(&e), format!("io_uring_enter: {e}"));
    }
    match ring.completion().next() {
        Some(c) if c.result() >= 0 => Step::ok(format!("READ_FIXED read {} bytes", c.result())),
        Some(c) => {
            let e = std::io::Error::from_raw_os_error(-c.result());
            Step::failed(Some(-c.result()), format!("READ_FIXED: {e}"))
        }
        None => Step::failed(None, "no completion"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_classified() {
        assert!(explain_register(libc::EFAULT).contains("cannot pin"));
        assert!(explain_register(libc::ENOMEM).contains("MEMLOCK"));
        assert!(explain_register(libc::EPERM).contains("disabled"));
        assert!(explain_mmap(libc::ENODEV).contains("does not support mmap"));
    }

    fn owned(fd: i32) -> OwnedFd {
        use std::os::fd::FromRawFd;
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: a fresh fd returned by the kernel to this test and owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn a_non_dma_buf_fd_fails_at_the_first_step_with_its_errno() {
        // A pipe cannot be mapped: the probe must stop at mmap with an errno, not go on.
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (r, _w) = (owned(fds[0]), owned(fds[1]));
        let buf = DmaBuf {
            fd: r,
            size: 1 << 16,
        };
        let p = probe_uring(&buf, None);
        assert!(!p.mmap.ok);
        assert!(p.mmap.errno.is_some());
        assert!(p.register.is_none() && p.read_fixed.is_none());
        assert!(!p.usable());
    }

    #[test]
    fn ordinary_shared_memory_registers_and_reads() {
        // The same steps on a memfd (pinnable pages) must all succeed where io_uring works:
        // this checks the probe's own plumbing, so a failure on the GPU machine means the
        // dma-buf, not the code.
        // SAFETY: a NUL-terminated name; no flags.
        let fd = owned(unsafe { libc::memfd_create(c"llmstream-probe".as_ptr(), 0) });
        let size = 1usize << 16;
        // SAFETY: `fd` is an open memfd.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), 1 << 16) }, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let data: Vec<u8> = (0..size).map(|i| (i % 251).to_le_bytes()[0]).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let buf = DmaBuf { fd, size };
        let p = probe_uring(&buf, Some(&file));
        assert!(p.mmap.ok, "{:?}", p.mmap);
        let reg = p.register.clone().unwrap();
        if !reg.ok {
            println!("skipped: io_uring unavailable here ({})", reg.detail);
            return;
        }
        let rf = p.read_fixed.clone().unwrap();
        assert!(rf.ok, "{rf:?}");
        assert!(
            rf.detail.contains(&format!("{size} bytes")),
            "{}",
            rf.detail
        );
        assert!(p.usable());
        // The bytes READ_FIXED wrote through the mapping are the file's.
        let mut back = vec![0u8; size];
        // SAFETY: `back` has room for `size` bytes; the memfd is open.
        let n = unsafe { libc::pread(buf.fd.as_raw_fd(), back.as_mut_ptr().cast(), size, 0) };
        assert_eq!(usize::try_from(n).unwrap(), size);
        assert_eq!(back, data);
    }
}
