//! The direct paths into VRAM, beside the pinned bounce of the streaming worker: cuFile (GDS,
//! or its compatibility mode) and dma-buf. See DESIGN.md, "Direct paths".
//!
//! [`CuFileSession`] reads files straight into device [`Buffer`]s with `cuFileRead`;
//! [`DeviceLoader`] picks cuFile when it is usable on this machine and falls back to the
//! pinned bounce otherwise, saying why. [`probe_dma_buf`] exports device memory as a dma-buf
//! and reports, step by step, whether io_uring can read into it.

use super::cufile::{self, BufRegistration, CuFileError, Driver, FileHandle};
use super::dmabuf::{self, DmaBuf, UringProbe};
use super::{Backend, BufferKind, Memory};
use crate::context::{Buffer, Context};
use crate::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn cuda_of(ctx: &Context) -> Result<&super::cuda::CudaBackend> {
    match &**ctx.backend_arc() {
        Backend::Cuda(c) => Ok(c),
        Backend::Host => Err(Error::BackendUnavailable {
            backend: "cuda",
            reason: "the direct paths need the CUDA backend (this context runs on the host)".into(),
        }),
    }
}

/// Device address of `len` bytes at `offset` of a device buffer, checked.
fn device_range(buf: &Buffer, offset: usize, len: usize) -> Result<u64> {
    if buf.kind() != BufferKind::Device {
        return Err(Error::InvalidArgument(
            "cuFile reads need a device buffer".into(),
        ));
    }
    offset
        .checked_add(len)
        .filter(|end| *end <= buf.len())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{len} bytes at offset {offset} do not fit a buffer of {} bytes",
                buf.len()
            ))
        })?;
    buf.device_ptr().ok_or_else(|| {
        Error::InvalidArgument("the buffer has no device address (host backend)".into())
    })
}

/// An open cuFile driver bound to a context's GPU.
#[derive(Debug)]
pub struct CuFileSession {
    ctx: Context,
    driver: Driver,
}

/// A file registered with cuFile.
#[derive(Debug)]
pub struct CuFileFile<'s> {
    /// The `O_DIRECT` fd's handle, where the file system allows `O_DIRECT`.
    direct: Option<FileHandle<'s>>,
    /// A buffered fd's handle, for the parts of a request that are not 4 KiB-aligned (and for
    /// everything where `O_DIRECT` is refused); `None` when cuFile refused to register it.
    buffered: Option<FileHandle<'s>>,
    path: PathBuf,
    len: u64,
}

/// `O_DIRECT` granularity assumed for the split between the direct and buffered handles (the
/// page size cuFile aligns to; a multiple of every logical block size).
const DIO_ALIGN: u64 = 4096;

/// Which handle serves a piece of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Buffered,
}

/// One piece of a request: handle, file offset, length, offset in the destination.
type Piece = (Via, u64, u64, u64);

/// Split a request so the 4 KiB-aligned body that lies inside the file goes through the direct
/// handle and the unaligned head and tail through the buffered one; with one handle only,
/// everything goes through it.
fn plan(
    offset: u64,
    len: u64,
    dst_offset: u64,
    file_len: u64,
    direct: bool,
    buffered: bool,
) -> Vec<Piece> {
    let whole = |via| vec![(via, offset, len, dst_offset)];
    match (direct, buffered) {
        (true, false) => return whole(Via::Direct),
        (false, _) => return whole(Via::Buffered),
        (true, true) => {}
    }
    // File and destination offsets must be congruent for the body to be aligned in both.
    if offset % DIO_ALIGN != dst_offset % DIO_ALIGN {
        return whole(Via::Buffered);
    }
    let end = offset.saturating_add(len);
    let start = offset.div_ceil(DIO_ALIGN).saturating_mul(DIO_ALIGN);
    let body_end = end.min(file_len) / DIO_ALIGN * DIO_ALIGN;
    if body_end <= start {
        return whole(Via::Buffered);
    }
    let mut out = Vec::with_capacity(3);
    if start > offset {
        out.push((Via::Buffered, offset, start - offset, dst_offset));
    }
    out.push((
        Via::Direct,
        start,
        body_end - start,
        dst_offset + (start - offset),
    ));
    if end > body_end {
        out.push((
            Via::Buffered,
            body_end,
            end - body_end,
            dst_offset + (body_end - offset),
        ));
    }
    out
}

impl CuFileFile<'_> {
    /// Whether aligned reads go through an `O_DIRECT` fd (GDS proper needs it; compatibility
    /// mode does not).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether a buffered fd serves the unaligned parts.
    pub fn has_buffered(&self) -> bool {
        self.buffered.is_some()
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A device buffer registered with cuFile; holds the memory alive until dropped.
#[derive(Debug)]
pub struct CuFileRegistration<'s> {
    _reg: BufRegistration<'s>,
    _mem: Arc<Memory>,
}

impl CuFileSession {
    /// Load libcufile and open its driver for the context's GPU. Fails with
    /// [`Error::CuFile`] when libcufile is missing or the driver refuses to open (without
    /// nvidia-fs, only when compatibility mode is off).
    pub fn new(ctx: &Context) -> Result<Self> {
        let cuda = cuda_of(ctx)?;
        cuda.bind_thread()?;
        let driver = Driver::open()?;
        Ok(Self {
            ctx: ctx.clone(),
            driver,
        })
    }

    /// The libcufile that was loaded.
    pub fn library(&self) -> &str {
        self.driver.library()
    }

    /// Open `path` and register it twice: an `O_DIRECT` fd (where the file system allows it)
    /// for aligned reads and a buffered fd for unaligned heads and tails.
    pub fn open(&self, path: &Path) -> Result<CuFileFile<'_>> {
        let open_err = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let (fd, is_direct) = cufile::open_for_cufile(path)?;
        let plain = std::fs::File::open(path).map_err(open_err)?;
        let len = plain.metadata().map_err(open_err)?.len();
        let (direct, buffered) = if is_direct {
            let direct = self.driver.register_file(fd)?;
            let buffered = match self.driver.register_file(plain.into()) {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::info!("cuFile refused a buffered fd ({e}); unaligned parts go through the O_DIRECT one");
                    None
                }
            };
            (Some(direct), buffered)
        } else {
            (None, Some(self.driver.register_file(fd)?))
        };
        Ok(CuFileFile {
            direct,
            buffered,
            path: path.to_owned(),
            len,
        })
    }

    /// Register a whole device buffer with cuFile (`cuFileBufRegister`). Optional: reads into
    /// unregistered memory go through cuFile's own bounce buffers.
    pub fn register(&self, buf: &Buffer) -> Result<CuFileRegistration<'_>> {
        let base = device_range(buf, 0, buf.len())?;
        cuda_of(&self.ctx)?.bind_thread()?;
        let mem = Arc::clone(buf.memory());
        // SAFETY: `base..base+len` is the buffer's device allocation in this context (checked
        // above); `mem` keeps it allocated until the registration, which owns it, drops.
        let reg = unsafe { self.driver.register_buffer(base, buf.len()) }?;
        Ok(CuFileRegistration {
            _reg: reg,
            _mem: mem,
        })
    }

    /// Read `len` bytes at file `offset` into `dst` at `dst_offset`, on the calling thread
    /// (cuFileRead is synchronous; call from several threads for parallel reads). Returns the
    /// bytes read, less than `len` only at the end of the file.
    pub fn read(
        &self,
        file: &CuFileFile<'_>,
        offset: u64,
        len: usize,
        dst: &Buffer,
        dst_offset: usize,
    ) -> Result<usize> {
        let base = device_range(dst, dst_offset, len)?;
        cuda_of(&self.ctx)?.bind_thread()?;
        // Counts as a read in flight: host borrows of `dst` are refused meanwhile.
        let _busy = dst.mark_busy()?;
        let pieces = plan(
            offset,
            len as u64,
            dst_offset as u64,
            file.len,
            file.direct.is_some(),
            file.buffered.is_some(),
        );
        let mut total = 0usize;
        for (via, off, n, at) in pieces {
            let h = match via {
                Via::Direct => file.direct.as_ref(),
                Via::Buffered => file.buffered.as_ref(),
            }
            .ok_or_else(|| Error::InvalidArgument("no cuFile handle for this piece".into()))?;
            let n =
                usize::try_from(n).map_err(|_| Error::InvalidArgument("piece too large".into()))?;
            // SAFETY: every piece lies inside the checked range of `dst`'s device allocation,
            // which `_busy` keeps alive; the context is current on this thread.
            let got = unsafe { h.read(base, at, off, n) }.map_err(|e| match e {
                CuFileError::Io {
                    offset,
                    len,
                    source,
                } => Error::Read {
                    path: file.path.clone(),
                    offset,
                    len: len as u64,
                    source,
                },
                other => Error::CuFile(other),
            })?;
            total += got;
            if got < n {
                break; // end of file
            }
        }
        Ok(total)
    }
}

/// Which path a [`DeviceLoader`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadPath {
    /// cuFile (GDS with nvidia-fs, else its compatibility mode).
    CuFile,
    /// The streaming worker: `O_DIRECT` into pinned staging, then a host-to-device copy.
    PinnedBounce,
}

impl LoadPath {
    /// Name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CuFile => "cufile",
            Self::PinnedBounce => "pinned_bounce",
        }
    }
}

/// What a [`DeviceLoader`] should prefer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPreference {
    /// cuFile when GDS proper is available (nvidia-fs loaded), else the pinned bounce: cuFile's
    /// compatibility mode is itself a bounce through host memory, so it gains nothing.
    Auto,
    /// cuFile whenever libcufile opens (compatibility mode included), else the bounce.
    CuFile,
    /// Always the pinned bounce.
    PinnedBounce,
}

/// Whether nvidia-fs (the GDS kernel module) is loaded.
pub fn nvidia_fs_loaded() -> bool {
    Path::new("/proc/driver/nvidia-fs").exists() || Path::new("/sys/module/nvidia_fs").exists()
}

/// Loads file ranges into device buffers by cuFile or the pinned bounce, whichever was chosen.
#[derive(Debug)]
pub struct DeviceLoader {
    ctx: Context,
    cufile: Option<CuFileSession>,
    reason: String,
}

impl DeviceLoader {
    /// Choose a path for `ctx`. Never fails for want of cuFile: the reason says why the
    /// bounce was taken.
    pub fn new(ctx: &Context, pref: LoadPreference) -> Self {
        let bounce = |reason: String| Self {
            ctx: ctx.clone(),
            cufile: None,
            reason,
        };
        if ctx.backend() != super::BackendKind::Cuda {
            return bounce("no CUDA backend".into());
        }
        let nvfs = nvidia_fs_loaded();
        match pref {
            LoadPreference::PinnedBounce => return bounce("pinned bounce requested".into()),
            LoadPreference::Auto if !nvfs => {
                return bounce(
                    "nvidia-fs is not loaded: cuFile would only run its compatibility mode, itself a bounce"
                        .into(),
                )
            }
            _ => {}
        }
        match CuFileSession::new(ctx) {
            Ok(s) => {
                let mode = if nvfs {
                    "nvidia-fs loaded: GPUDirect Storage"
                } else {
                    "nvidia-fs not loaded: cuFile compatibility mode"
                };
                let reason = format!("cuFile through {} ({mode})", s.library());
                Self {
                    ctx: ctx.clone(),
                    cufile: Some(s),
                    reason,
                }
            }
            Err(e) => {
                tracing::info!("cuFile unavailable, using the pinned bounce: {e}");
                bounce(format!("cuFile unavailable: {e}"))
            }
        }
    }

    /// The path taken.
    pub fn path(&self) -> LoadPath {
        if self.cufile.is_some() {
            LoadPath::CuFile
        } else {
            LoadPath::PinnedBounce
        }
    }

    /// Why that path.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The cuFile session, when cuFile was chosen.
    pub fn cufile(&self) -> Option<&CuFileSession> {
        self.cufile.as_ref()
    }

    /// Load `len` bytes at `offset` of `path` into `dst` at 0, in `chunk`-sized pieces. When
    /// cuFile was chosen but fails on this file (registration or a read), the whole range is
    /// loaded again through the pinned bounce, and the failure is logged; range errors are not
    /// retried.
    pub fn load(
        &self,
        path: &Path,
        offset: u64,
        len: usize,
        dst: &Buffer,
        chunk: usize,
    ) -> Result<()> {
        let chunk = chunk.max(1);
        if let Some(s) = &self.cufile {
            match Self::load_cufile(s, path, offset, len, dst, chunk) {
                Ok(()) => return Ok(()),
                Err(
                    e @ (Error::OutOfRange { .. } | Error::InvalidArgument(_) | Error::Busy(_)),
                ) => return Err(e),
                Err(e) => tracing::warn!(
                    "cuFile failed on {} ({e}); loading it through the pinned bounce",
                    path.display()
                ),
            }
        }
        self.load_bounce(path, offset, len, dst, chunk)
    }

    fn load_cufile(
        s: &CuFileSession,
        path: &Path,
        offset: u64,
        len: usize,
        dst: &Buffer,
        chunk: usize,
    ) -> Result<()> {
        let f = s.open(path)?;
        let mut done = 0usize;
        while done < len {
            let n = chunk.min(len - done);
            let got = s.read(&f, offset + done as u64, n, dst, done)?;
            if got < n {
                return Err(Error::OutOfRange {
                    path: path.to_owned(),
                    offset,
                    len: len as u64,
                    file_len: f.len(),
                });
            }
            done += n;
        }
        Ok(())
    }

    fn load_bounce(
        &self,
        path: &Path,
        offset: u64,
        len: usize,
        dst: &Buffer,
        chunk: usize,
    ) -> Result<()> {
        let src = self.ctx.open(path)?;
        let mut hs = Vec::new();
        let mut done = 0usize;
        while done < len {
            let n = chunk.min(len - done);
            hs.push(
                self.ctx
                    .read_async(&src, offset + done as u64, n as u64, dst, done)?,
            );
            done += n;
        }
        hs.into_iter().try_for_each(|h| h.wait())
    }
}

/// What exporting VRAM as a dma-buf and offering it to io_uring did.
#[derive(Debug, Clone, Serialize)]
pub struct DmaBufReport {
    /// `CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED`, when it could be read.
    pub device_supported: Option<bool>,
    /// The export: fd and size on success.
    pub export: dmabuf::Step,
    /// The dma-buf fd number (informational; closed when the report is made).
    pub fd: Option<i32>,
    /// Bytes exported.
    pub size: usize,
    /// Whether the PCIe (BAR1) mapping type was requested.
    pub pcie_mapping: bool,
    /// io_uring steps, when the export worked.
    pub uring: Option<UringProbe>,
    /// Whether the bytes READ_FIXED put in VRAM match the file (checked by copying back),
    /// when a read happened.
    pub verified: Option<bool>,
    /// The path llmstream takes for device loads as a result.
    pub fallback: &'static str,
}

/// Host page size, for dma-buf alignment.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(v).ok().filter(|v| *v > 0).unwrap_or(4096)
}

/// Export `size` bytes (rounded up to 2 MiB, a multiple of every host page size) of fresh
/// device memory as a dma-buf and probe io_uring with it; with `file`, a successful
/// registration is followed by one READ_FIXED whose bytes are checked against the file.
pub fn probe_dma_buf(ctx: &Context, size: usize, file: Option<&Path>) -> Result<DmaBufReport> {
    let cuda = cuda_of(ctx)?;
    let granule = (2usize << 20).max(page_size());
    let size = size
        .max(1)
        .div_ceil(granule)
        .checked_mul(granule)
        .ok_or_else(|| Error::InvalidArgument("dma-buf size overflows".into()))?;
    let device_supported = cuda.dma_buf_supported().ok();
    let buf = ctx.alloc(BufferKind::Device, size)?;
    let ptr = buf
        .device_ptr()
        .ok_or_else(|| Error::InvalidArgument("no device address".into()))?;
    let mut report = DmaBufReport {
        device_supported,
        export: dmabuf::Step {
            ok: false,
            errno: None,
            detail: String::new(),
        },
        fd: None,
        size,
        pcie_mapping: false,
        uring: None,
        verified: None,
        fallback: "pinned_bounce",
    };
    // The PCIe mapping type is what a third-party device (an NVMe controller) needs; older
    // drivers reject the flag, so retry without it.
    let exported = match cuda.export_dma_buf(ptr, size, true) {
        Ok(fd) => {
            report.pcie_mapping = true;
            Ok(fd)
        }
        Err(_) => cuda.export_dma_buf(ptr, size, false),
    };
    let fd = match exported {
        Ok(fd) => fd,
        Err(e) => {
            report.export = dmabuf::Step {
                ok: false,
                errno: None,
                detail: e.to_string(),
            };
            return Ok(report);
        }
    };
    use std::os::fd::AsRawFd;
    report.fd = Some(fd.as_raw_fd());
    report.export = dmabuf::Step {
        ok: true,
        errno: None,
        detail: format!(
            "dma-buf fd {} for {size} bytes of VRAM{}",
            fd.as_raw_fd(),
            if report.pcie_mapping {
                " (PCIe mapping)"
            } else {
                ""
            }
        ),
    };
    let dbuf = DmaBuf { fd, size };
    let opened = match file {
        Some(p) => Some(cufile::open_for_cufile(p).map(|(fd, _)| std::fs::File::from(fd))?),
        None => None,
    };
    let probe = dmabuf::probe_uring(&dbuf, opened.as_ref());
    if probe.usable() {
        if let Some(p) = file {
            let n = size.min(
                usize::try_from(std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
                    .unwrap_or(usize::MAX),
            );
            let mut want = vec![0u8; n];
            let mut got = vec![0u8; n];
            use std::io::Read;
            std::fs::File::open(p)
                .and_then(|mut f| f.read_exact(&mut want))
                .map_err(|source| Error::Open {
                    path: p.to_owned(),
                    source,
                })?;
            buf.copy_to_host(0, &mut got)?;
            report.verified = Some(want == got);
            if want == got {
                report.fallback = "none: io_uring READ_FIXED lands in VRAM";
            }
        }
    }
    report.uring = Some(probe);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendChoice, Config};

    fn host_ctx() -> Context {
        Context::new(Config {
            backend: BackendChoice::Host,
            ..Config::default()
        })
        .unwrap()
    }

    #[test]
    fn cufile_needs_the_cuda_backend() {
        let ctx = host_ctx();
        let e = CuFileSession::new(&ctx).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BackendUnavailable {
                    backend: "cuda",
                    ..
                }
            ),
            "{e}"
        );
        let e = probe_dma_buf(&ctx, 1 << 20, None).unwrap_err();
        assert!(matches!(e, Error::BackendUnavailable { .. }), "{e}");
    }

    #[test]
    fn loader_falls_back_to_the_bounce_and_says_why() {
        let ctx = host_ctx();
        for pref in [
            LoadPreference::Auto,
            LoadPreference::CuFile,
            LoadPreference::PinnedBounce,
        ] {
            let l = DeviceLoader::new(&ctx, pref);
            assert_eq!(l.path(), LoadPath::PinnedBounce);
            assert!(l.cufile().is_none());
            assert!(!l.reason().is_empty());
        }
        // The bounce path really loads: bytes in the buffer equal the file's.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7).to_le_bytes()[0]).collect();
        std::fs::write(&p, &data).unwrap();
        let l = DeviceLoader::new(&ctx, LoadPreference::Auto);
        let buf = ctx.alloc(BufferKind::Device, data.len()).unwrap();
        l.load(&p, 0, data.len(), &buf, 65536).unwrap();
        let mut back = vec![0u8; data.len()];
        buf.copy_to_host(0, &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn requests_split_into_aligned_direct_body_and_buffered_ends() {
        use Via::{Buffered as B, Direct as D};
        let mib = 1u64 << 20;
        // Aligned and inside the file: all direct.
        assert_eq!(plan(0, mib, 0, 10 * mib, true, true), vec![(D, 0, mib, 0)]);
        // Unaligned head and tail around an aligned body.
        assert_eq!(
            plan(100, 3 * 4096, 100, 10 * mib, true, true),
            vec![
                (B, 100, 3996, 100),
                (D, 4096, 8192, 4096),
                (B, 12288, 100, 12288)
            ]
        );
        // The file ends inside the request: the body stops at the last whole page in the file.
        assert_eq!(
            plan(0, 3 * 4096, 0, 8192 + 5, true, true),
            vec![(D, 0, 8192, 0), (B, 8192, 4096, 8192)]
        );
        // File and buffer offsets not congruent: nothing can be aligned in both.
        assert_eq!(
            plan(4096, 8192, 100, mib, true, true),
            vec![(B, 4096, 8192, 100)]
        );
        // Less than a page: buffered.
        assert_eq!(plan(10, 20, 0, mib, true, true), vec![(B, 10, 20, 0)]);
        // One handle only: everything through it.
        assert_eq!(plan(100, 50, 7, mib, true, false), vec![(D, 100, 50, 7)]);
        assert_eq!(plan(0, mib, 0, mib, false, true), vec![(B, 0, mib, 0)]);
        // Pieces tile the request exactly.
        for (off, len, flen) in [(1, 99_999, 50_000), (4095, 8194, 1 << 20), (0, 4096, 4096)] {
            let p = plan(off, len, off, flen, true, true);
            assert_eq!(p[0].1, off);
            let mut at = off;
            for (_, o, n, d) in &p {
                assert_eq!(*o, at);
                assert_eq!(*d, *o);
                at += n;
            }
            assert_eq!(at, off + len);
        }
    }

    #[test]
    fn device_ranges_are_checked() {
        let ctx = host_ctx();
        let host = ctx.alloc(BufferKind::Host, 4096).unwrap();
        assert!(matches!(
            device_range(&host, 0, 16),
            Err(Error::InvalidArgument(_))
        ));
        let dev = ctx.alloc(BufferKind::Device, 4096).unwrap();
        let e = device_range(&dev, 4000, 200).unwrap_err().to_string();
        assert!(e.contains("do not fit a buffer of 4096 bytes"), "{e}");
        assert!(device_range(&dev, usize::MAX, 2).is_err());
        // In range, but the host backend has no device addresses.
        let e = device_range(&dev, 0, 16).unwrap_err().to_string();
        assert!(e.contains("no device address"), "{e}");
    }
}
