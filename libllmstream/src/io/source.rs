//! A file or raw block device opened for streaming: an `O_DIRECT` descriptor where the file
//! system allows it, a buffered one always, and the direct-I/O alignment the file demands.

use super::DirectChoice;
use crate::error::{Error, Result};
use crate::staging::AlignedBuf;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An opened file or block device.
#[derive(Debug)]
pub struct Source {
    id: u64,
    path: PathBuf,
    len: u64,
    buffered: File,
    direct: Option<File>,
    offset_align: u64,
    mem_align: usize,
    max_request: Option<usize>,
    direct_refused: Option<String>,
    /// Set when llmstreamd serves this file: its shared RAM tier and connection.
    daemon: Option<crate::daemon::DaemonLink>,
}

impl Source {
    /// Open `path` for reading. With `DirectChoice::Auto` an `O_DIRECT` descriptor is used when the
    /// file system accepts it (probed with one aligned read), else buffered reads; `On` fails
    /// where `O_DIRECT` is refused; `Off` never uses it.
    pub fn open(path: &Path, direct: DirectChoice) -> Result<Self> {
        let buffered = File::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::from_file(buffered, path, direct)
    }

    /// Use a descriptor opened by someone else (a client passing an fd to the daemon, or a C
    /// caller). An `O_DIRECT` twin is opened through `/proc/self/fd` when `direct` allows, which
    /// reopens the same file without resolving any client-supplied path.
    pub fn from_file(buffered: File, label: &Path, direct: DirectChoice) -> Result<Self> {
        let path = label.to_owned();
        let meta = buffered.metadata().map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        let is_blk = meta.file_type().is_block_device();
        if !meta.is_file() && !is_blk {
            return Err(Error::Open {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a regular file or block device",
                ),
            });
        }
        let len = if is_blk {
            block_device_len(&buffered).map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?
        } else {
            meta.len()
        };
        let (offset_align, mem_align) = dio_alignment(&buffered, is_blk);
        let max_request = sysfs_queue_value(&buffered, is_blk, "max_sectors_kb")
            .and_then(|kb| usize::try_from(kb).ok()?.checked_mul(1024));
        let mut src = Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path,
            len,
            buffered,
            direct: None,
            offset_align,
            mem_align,
            max_request,
            direct_refused: None,
            daemon: None,
        };
        if direct != DirectChoice::Off {
            match src.open_direct() {
                Ok(f) => src.direct = Some(f),
                Err(e) => {
                    if direct == DirectChoice::On {
                        return Err(Error::DirectUnsupported {
                            path: src.path.clone(),
                            source: e,
                        });
                    }
                    tracing::info!(path = %src.path.display(), error = %e,
                        "O_DIRECT refused; using buffered reads for this file");
                    src.direct_refused = Some(e.to_string());
                }
            }
        }
        Ok(src)
    }

    fn open_direct(&self) -> std::io::Result<File> {
        let proc_path = format!("/proc/self/fd/{}", self.buffered.as_raw_fd());
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(proc_path)?;
        // Some file systems accept the flag at open and refuse the reads: probe one block.
        if self.len > 0 {
            let want = usize::try_from(self.offset_align).map_err(std::io::Error::other)?;
            let buf = AlignedBuf::new(want).map_err(|e| std::io::Error::other(e.to_string()))?;
            // SAFETY: `buf` is a live mapping of at least `want` bytes, and the descriptor is open.
            let n = unsafe { libc::pread(f.as_raw_fd(), buf.as_mut_ptr().cast(), want, 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(f)
    }

    /// Attach the daemon's link (before the source is shared).
    pub(crate) fn set_daemon(&mut self, link: crate::daemon::DaemonLink) {
        self.daemon = Some(link);
    }

    /// Whether llmstreamd serves this file.
    pub fn via_daemon(&self) -> bool {
        self.daemon.is_some()
    }

    /// Bytes of this file mapped from llmstreamd's shared RAM tier (0 without a daemon).
    pub fn shared_tier_bytes(&self) -> u64 {
        self.daemon
            .as_ref()
            .and_then(|d| d.tier())
            .map_or(0, |t| t.len() as u64)
    }

    /// Where bytes `offset..offset+len` lie in the shared RAM tier, when it holds all of them;
    /// valid for reading while `self` lives.
    pub(crate) fn tier_bytes_at(&self, offset: u64, len: u64) -> Option<*const u8> {
        self.daemon.as_ref()?.tier()?.bytes_at(offset, len)
    }

    /// A process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The path (or label) it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Why O_DIRECT was not used, when it was refused.
    pub fn direct_refused(&self) -> Option<&str> {
        self.direct_refused.as_deref()
    }

    /// Offsets and lengths of direct reads must be multiples of this.
    pub fn offset_align(&self) -> u64 {
        if self.is_direct() {
            self.offset_align
        } else {
            1
        }
    }

    /// Memory alignment needed by direct reads.
    pub fn mem_align(&self) -> usize {
        self.mem_align
    }

    /// The largest request the device takes in one piece (sysfs `max_sectors_kb`), when known:
    /// the reader splits its requests at this size.
    pub fn max_request(&self) -> Option<usize> {
        self.max_request
    }

    /// The descriptor reads use.
    pub fn read_fd(&self) -> RawFd {
        self.direct
            .as_ref()
            .map_or(self.buffered.as_raw_fd(), AsRawFd::as_raw_fd)
    }

    /// The buffered descriptor (for header parsing and cache control).
    pub fn buffered_file(&self) -> &File {
        &self.buffered
    }

    /// Check that `offset..offset+len` lies inside the file.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::OutOfRange {
                path: self.path.clone(),
                offset,
                len,
                file_len: self.len,
            }),
        }
    }

    /// Ask the kernel to drop this file's cached pages (for cold-cache measurements).
    pub fn drop_cache(&self) {
        // SAFETY: posix_fadvise only reads its integer arguments; the fd is open.
        unsafe {
            libc::posix_fadvise(self.buffered.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

fn block_device_len(f: &File) -> std::io::Result<u64> {
    let mut size: u64 = 0;
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to `size`.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

/// (offset alignment, memory alignment) for direct I/O: statx's DIO alignment where the kernel
/// reports it, else the block device's logical block size, never below 512.
fn dio_alignment(f: &File, is_blk: bool) -> (u64, usize) {
    let page = crate::staging::page_size();
    if let Some((mem, off)) = statx_dio(f) {
        return (u64::from(off.max(512)), (mem.max(512) as usize).max(page));
    }
    let lbs = if is_blk {
        let mut v: libc::c_int = 0;
        const BLKSSZGET: libc::c_ulong = 0x1268;
        // SAFETY: BLKSSZGET writes one int through the pointer, which points to `v`.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKSSZGET, &mut v as *mut libc::c_int) };
        if r == 0 {
            u64::try_from(v).unwrap_or(512)
        } else {
            512
        }
    } else {
        sysfs_queue_value(f, false, "logical_block_size").unwrap_or(512)
    };
    (lbs.max(512), page)
}

fn statx_dio(f: &File) -> Option<(u32, u32)> {
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: `empty` is a valid C string, `st` is a writable statx; AT_EMPTY_PATH makes the call
    // describe the descriptor itself.
    let r = unsafe {
        libc::statx(
            f.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut st,
        )
    };
    if r != 0 || st.stx_mask & libc::STATX_DIOALIGN == 0 || st.stx_dio_offset_align == 0 {
        return None;
    }
    Some((st.stx_dio_mem_align, st.stx_dio_offset_align))
}

/// A value of the block queue behind `f` (the device itself, or for a file the device holding
/// its file system; partitions read their parent's queue).
fn sysfs_queue_value(f: &File, is_blk: bool, name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = f.metadata().ok()?;
    let dev = if is_blk { meta.rdev() } else { meta.dev() };
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let base = format!("/sys/dev/block/{major}:{minor}");
    for p in [
        format!("{base}/queue/{name}"),
        format!("{base}/../queue/{name}"),
    ] {
        if let Ok(s) = std::fs::read_to_string(&p) {
            if let Ok(v) = s.trim().parse::<u64>() {
                return Some(v);
            }
        }
    }
    None
}
