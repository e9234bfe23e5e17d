//! Device backends: where streamed bytes end up.
//!
//! `cuda` (through cudarc, loaded at run time: nothing from CUDA is needed to build) page-locks
//! the staging slots and copies them to VRAM on a dedicated stream, completion tracked by events
//! created with blocking sync so waiting threads sleep instead of spinning. `host` needs no GPU:
//! "device" memory is plain host memory and copies are memcpy.

pub(crate) mod cuda;
pub mod cufile;
pub mod direct;
pub mod dmabuf;

use crate::error::{Error, Result};
use crate::staging::AlignedBuf;

/// Which backend a context should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// CUDA when libcuda and a device exist, else host.
    #[default]
    Auto,
    /// CUDA or an error.
    Cuda,
    /// Plain host memory.
    Host,
}

impl std::str::FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cuda" => Ok(Self::Cuda),
            "host" | "cpu" => Ok(Self::Host),
            _ => Err(Error::Config {
                field: "backend",
                reason: format!("{s:?} is not one of auto, cuda, host"),
            }),
        }
    }
}

/// The backend a context runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// CUDA.
    Cuda,
    /// Host memory.
    Host,
}

impl BackendKind {
    /// `cuda` or `host`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cuda => "cuda",
            Self::Host => "host",
        }
    }
}

/// What kind of memory a buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferKind {
    /// Device memory (VRAM on CUDA; host memory on the host backend).
    Device,
    /// Pageable host memory.
    Host,
    /// Page-locked host memory (the RAM tier: copies to the device at full link speed).
    Pinned,
}

/// Memory behind a [`crate::Buffer`].
#[derive(Debug)]
pub(crate) enum Memory {
    Host(AlignedBuf),
    Pinned(cuda::PinnedHost),
    Device(cuda::DeviceMem),
    /// Caller-owned host memory (C ABI).
    ExternalHost {
        ptr: *mut u8,
    },
    /// Caller-owned device memory (C ABI).
    ExternalDevice {
        ptr: u64,
    },
}

// SAFETY: the raw pointers of the external variants are caller-owned memory the caller promised
// (in the unsafe constructors) to keep valid and unaliased while the buffer lives; the other
// variants own their memory.
unsafe impl Send for Memory {}
// SAFETY: as above; all writes go through the streaming worker, serialised by the buffer's
// in-flight accounting.
unsafe impl Sync for Memory {}

impl Memory {
    /// Host address, for memory the CPU can touch.
    pub fn host_ptr(&self) -> Option<*mut u8> {
        match self {
            Memory::Host(b) => Some(b.as_mut_ptr()),
            Memory::Pinned(p) => Some(p.as_mut_ptr()),
            Memory::ExternalHost { ptr, .. } => Some(*ptr),
            Memory::Device(_) | Memory::ExternalDevice { .. } => None,
        }
    }

    /// Device address, for VRAM.
    pub fn device_ptr(&self) -> Option<u64> {
        match self {
            Memory::Device(d) => Some(d.ptr()),
            Memory::ExternalDevice { ptr, .. } => Some(*ptr),
            _ => None,
        }
    }
}

/// A pending copy.
#[derive(Debug)]
pub(crate) enum Ticket {
    Done,
    Event(cuda::EventTicket),
}

/// The backend of a context.
#[derive(Debug)]
pub(crate) enum Backend {
    Host,
    Cuda(cuda::CudaBackend),
}

impl Backend {
    pub fn new(choice: BackendChoice, device: usize) -> Result<Self> {
        match choice {
            BackendChoice::Host => Ok(Backend::Host),
            BackendChoice::Cuda => Ok(Backend::Cuda(cuda::CudaBackend::new(device)?)),
            BackendChoice::Auto => match cuda::CudaBackend::new(device) {
                Ok(c) => Ok(Backend::Cuda(c)),
                Err(e) => {
                    tracing::info!("no usable GPU ({e}); using the host backend");
                    Ok(Backend::Host)
                }
            },
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Host => BackendKind::Host,
            Backend::Cuda(_) => BackendKind::Cuda,
        }
    }

    /// A human description (`host`, `cuda: NVIDIA H100 ..., driver 13.0`).
    pub fn describe(&self) -> String {
        match self {
            Backend::Host => "host".into(),
            Backend::Cuda(c) => format!("cuda: {}", c.describe()),
        }
    }

    /// Make the backend usable from the calling thread.
    pub fn bind_thread(&self) -> Result<()> {
        match self {
            Backend::Host => Ok(()),
            Backend::Cuda(c) => c.bind_thread(),
        }
    }

    /// Page-lock a staging slot so copies from it are DMA.
    pub fn pin(&self, buf: &AlignedBuf) -> Result<()> {
        match self {
            Backend::Host => Ok(()),
            Backend::Cuda(c) => c.register_host(buf.as_mut_ptr(), buf.len()),
        }
    }

    /// Undo [`Backend::pin`].
    pub fn unpin(&self, buf: &AlignedBuf) {
        if let Backend::Cuda(c) = self {
            c.unregister_host(buf.as_mut_ptr());
        }
    }

    pub fn alloc(&self, kind: BufferKind, bytes: usize) -> Result<Memory> {
        match (self, kind) {
            (Backend::Host, _) | (Backend::Cuda(_), BufferKind::Host) => {
                Ok(Memory::Host(AlignedBuf::new(bytes)?))
            }
            (Backend::Cuda(c), BufferKind::Pinned) => Ok(Memory::Pinned(c.alloc_pinned(bytes)?)),
            (Backend::Cuda(c), BufferKind::Device) => Ok(Memory::Device(c.alloc_device(bytes)?)),
        }
    }

    /// Copy `len` bytes from host memory `src` to device address `dst`, asynchronously.
    ///
    /// # Safety
    /// `src..src+len` must stay valid and unmodified until the ticket completes, and
    /// `dst..dst+len` must be device memory of this backend.
    pub unsafe fn h2d_async(&self, src: *const u8, dst: u64, len: usize) -> Result<Ticket> {
        match self {
            Backend::Host => Err(Error::InvalidArgument(
                "the host backend has no device memory".into(),
            )),
            // SAFETY: forwarded from this function's contract.
            Backend::Cuda(c) => Ok(Ticket::Event(unsafe { c.h2d_async(src, dst, len) }?)),
        }
    }

    /// True when the ticket's copy finished.
    pub fn poll(&self, t: &Ticket) -> Result<bool> {
        match t {
            Ticket::Done => Ok(true),
            Ticket::Event(e) => e.poll(),
        }
    }

    /// Block (sleeping) until the ticket's copy finished.
    pub fn wait(&self, t: &Ticket) -> Result<()> {
        match t {
            Ticket::Done => Ok(()),
            Ticket::Event(e) => e.wait(),
        }
    }
}
