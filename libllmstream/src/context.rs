//! The public Rust API: a [`Context`] (backend + reader + streaming worker), [`Buffer`]s in device,
//! host or pinned memory, blocking and asynchronous reads, and [`Model`]s mapped from GGUF.

use crate::backend::{Backend, BackendChoice, BackendKind, BufferKind, Memory};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Layer, TensorInfo};
use crate::io::{ReaderConfig, Source};
use crate::pipeline::{Dest, DestMem, JobState, Msg, Worker};
use crate::stats::{Stats, StatsInner};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Settings of a [`Context`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Backend choice.
    pub backend: BackendChoice,
    /// CUDA device ordinal.
    pub device: usize,
    /// Reader settings.
    pub reader: ReaderConfig,
}

impl Config {
    /// Defaults with `LLMSTREAM_BACKEND` and the reader's environment variables applied.
    pub fn from_env() -> Result<Self> {
        let mut c = Self::default();
        if let Ok(v) = std::env::var("LLMSTREAM_BACKEND") {
            c.backend = v.parse()?;
        }
        c.reader = c.reader.with_env()?;
        Ok(c)
    }
}

struct Inner {
    backend: Arc<Backend>,
    stats: Arc<StatsInner>,
    tx: Mutex<Option<Sender<Msg>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    config: Config,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the worker finish what it has and exit.
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut w) = self.worker.lock() {
            if let Some(h) = w.take() {
                let _ = h.join();
            }
        }
    }
}

/// A streaming context: one backend, one reader, one worker thread. Cheap to clone (shared).
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("backend", &self.inner.backend.describe())
            .finish()
    }
}

impl Context {
    /// Start a context.
    pub fn new(config: Config) -> Result<Self> {
        config.reader.validate()?;
        let backend = Arc::new(Backend::new(config.backend, config.device)?);
        let stats = Arc::new(StatsInner::default());
        let (tx, rx) = channel();
        let worker = Worker::new(
            config.reader.clone(),
            Arc::clone(&backend),
            Arc::clone(&stats),
            rx,
        )?;
        let handle = std::thread::Builder::new()
            .name("lls-stream".into())
            .spawn(move || worker.run())
            .map_err(|source| Error::Os {
                op: "spawn streaming worker",
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                stats,
                tx: Mutex::new(Some(tx)),
                worker: Mutex::new(Some(handle)),
                config,
            }),
        })
    }

    /// The backend itself, for the direct paths (cuFile, dma-buf) in `backend::direct`.
    pub(crate) fn backend_arc(&self) -> &Arc<Backend> {
        &self.inner.backend
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        self.inner.backend.kind()
    }

    /// A description of the backend (device name, driver version).
    pub fn backend_description(&self) -> String {
        self.inner.backend.describe()
    }

    /// The settings this context was made with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Free and total device memory (CUDA), `None` on the host backend.
    pub fn device_memory(&self) -> Option<(usize, usize)> {
        match &*self.inner.backend {
            Backend::Cuda(c) => c.mem_info().ok(),
            Backend::Host => None,
        }
    }

    /// Baseline for benchmarks: the driver's own pinned host → device copy rate (synchronous
    /// cuMemcpyHtoD of a resident pinned buffer), in bytes per second. `None` on the host backend.
    pub fn raw_h2d_peak(&self, bytes: usize, iters: u32) -> Result<Option<f64>> {
        match &*self.inner.backend {
            Backend::Cuda(c) => c.raw_h2d_peak(bytes, iters).map(Some),
            Backend::Host => Ok(None),
        }
    }

    /// Open a file or block device for streaming.
    pub fn open(&self, path: &Path) -> Result<Arc<Source>> {
        let s = Source::open(path, self.inner.config.reader.direct)?;
        self.note_source(&s);
        Ok(Arc::new(s))
    }

    /// Stream from a descriptor the caller opened (`label` names it in errors).
    pub fn open_file(&self, file: std::fs::File, label: &Path) -> Result<Arc<Source>> {
        let s = Source::from_file(file, label, self.inner.config.reader.direct)?;
        self.note_source(&s);
        Ok(Arc::new(s))
    }

    fn note_source(&self, s: &Source) {
        if let Some(why) = s.direct_refused() {
            self.inner.stats.fallback(format!(
                "O_DIRECT refused by the file system ({why}); buffered reads"
            ));
        }
    }

    /// Open a GGUF model. When llmstreamd runs (see [`crate::daemon`]), the file is opened
    /// here, handed to the daemon, and the model's shared RAM tier mapped; otherwise, or when
    /// the daemon cannot be used (a recorded fallback), it is streamed in-process alone.
    pub fn open_model(&self, path: &Path) -> Result<Model> {
        let Some(socket) = crate::daemon::live_socket() else {
            return Model::from_source(self.open(path)?);
        };
        let file = std::fs::File::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let link =
            crate::daemon::attach(&socket, &file, path, &self.inner.backend, &self.inner.stats);
        let mut s = Source::from_file(file, path, self.inner.config.reader.direct)?;
        match link {
            Ok(l) => s.set_daemon(l),
            Err(e) => self.inner.stats.fallback(format!(
                "llmstreamd at {} not used ({e}); streaming in-process",
                socket.display()
            )),
        }
        self.note_source(&s);
        Model::from_source(Arc::new(s))
    }

    /// Allocate a buffer of `bytes` bytes.
    pub fn alloc(&self, kind: BufferKind, bytes: usize) -> Result<Buffer> {
        let mem = self.inner.backend.alloc(kind, bytes)?;
        Ok(Buffer::from_memory(mem, kind, bytes))
    }

    /// Wrap caller-owned host memory.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be valid, writable host memory that the caller does not touch while
    /// reads into it are in flight and keeps alive as long as the buffer (and any read into it).
    pub unsafe fn wrap_host(&self, ptr: *mut u8, len: usize) -> Result<Buffer> {
        if ptr.is_null() {
            return Err(Error::InvalidArgument("null host pointer".into()));
        }
        Ok(Buffer::from_memory(
            Memory::ExternalHost { ptr },
            BufferKind::Host,
            len,
        ))
    }

    /// Wrap caller-owned device memory (a `CUdeviceptr` of this context's device).
    ///
    /// # Safety
    /// `ptr..ptr+len` must be device memory of this context's device, kept alive as long as the
    /// buffer and any read into it.
    pub unsafe fn wrap_device(&self, ptr: u64, len: usize) -> Result<Buffer> {
        if self.backend() != BackendKind::Cuda {
            return Err(Error::InvalidArgument(
                "device pointers need the cuda backend".into(),
            ));
        }
        if ptr == 0 {
            return Err(Error::InvalidArgument("null device pointer".into()));
        }
        Ok(Buffer::from_memory(
            Memory::ExternalDevice { ptr },
            BufferKind::Device,
            len,
        ))
    }

    fn send(&self, m: Msg) -> Result<()> {
        let tx = self
            .inner
            .tx
            .lock()
            .map_err(|_| Error::WorkerGone("poisoned".into()))?;
        tx.as_ref()
            .ok_or_else(|| Error::WorkerGone("context is shutting down".into()))?
            .send(m)
            .map_err(|_| Error::WorkerGone("the streaming worker exited".into()))
    }

    /// Start reading `len` bytes at `offset` of `src` into `dst` at `dst_offset`.
    pub fn read_async(
        &self,
        src: &Arc<Source>,
        offset: u64,
        len: u64,
        dst: &Buffer,
        dst_offset: usize,
    ) -> Result<ReadHandle> {
        src.check_range(offset, len)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(dst_offset))
            .ok_or_else(|| Error::InvalidArgument("destination range overflows".into()))?;
        if end > dst.len() {
            return Err(Error::InvalidArgument(format!(
                "destination buffer holds {} bytes; {len} at offset {dst_offset} do not fit",
                dst.len()
            )));
        }
        let state = Arc::new(JobState::default());
        self.send(Msg::Read {
            src: Arc::clone(src),
            offset,
            len,
            dest: Dest::Mem {
                dst: dst.mark_busy()?,
                offset: dst_offset,
            },
            state: Arc::clone(&state),
        })?;
        Ok(ReadHandle { state })
    }

    /// Read into the staging buffers only, discarding the bytes (measures storage alone).
    pub fn read_discard_async(
        &self,
        src: &Arc<Source>,
        offset: u64,
        len: u64,
    ) -> Result<ReadHandle> {
        src.check_range(offset, len)?;
        let state = Arc::new(JobState::default());
        self.send(Msg::Read {
            src: Arc::clone(src),
            offset,
            len,
            dest: Dest::Discard,
            state: Arc::clone(&state),
        })?;
        Ok(ReadHandle { state })
    }

    /// Blocking [`Context::read_async`].
    pub fn read(
        &self,
        src: &Arc<Source>,
        offset: u64,
        len: u64,
        dst: &Buffer,
        dst_offset: usize,
    ) -> Result<()> {
        self.read_async(src, offset, len, dst, dst_offset)?.wait()
    }

    /// Read a byte range into a new `Vec` (host memory).
    pub fn read_to_vec(&self, src: &Arc<Source>, offset: u64, len: u64) -> Result<Vec<u8>> {
        let n = usize::try_from(len).map_err(|_| Error::InvalidArgument("length".into()))?;
        let mut out = vec![0u8; n];
        // Read straight into the vector (one copy out of staging, not two).
        // SAFETY: `out` is n writable bytes; it is not touched or freed until the read has
        // finished (checked below before `out` is released on error).
        let buf = unsafe { self.wrap_host(out.as_mut_ptr(), n) }?;
        let r = self.read(src, offset, len, &buf, 0);
        if r.is_err() && buf.reads_in_flight() > 0 {
            // The wait failed without the request finishing: the worker may still write.
            std::mem::forget(out);
            return r.map(|()| Vec::new());
        }
        r?;
        drop(buf);
        Ok(out)
    }

    /// Copy `len` bytes from host (ideally pinned) buffer `src` to `dst` asynchronously: the
    /// RAM tier → VRAM path.
    pub fn copy_async(
        &self,
        src: &Buffer,
        src_offset: usize,
        dst: &Buffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<ReadHandle> {
        let fits = |b: &Buffer, off: usize| off.checked_add(len).is_some_and(|e| e <= b.len());
        if !fits(src, src_offset) || !fits(dst, dst_offset) {
            return Err(Error::InvalidArgument("copy range outside a buffer".into()));
        }
        if src.kind() == BufferKind::Device && self.backend() == BackendKind::Cuda {
            return Err(Error::InvalidArgument(
                "copy source must be host memory".into(),
            ));
        }
        if Arc::ptr_eq(&src.mem, &dst.mem) {
            let (a, b) = (src_offset, dst_offset);
            if a < b + len && b < a + len {
                return Err(Error::InvalidArgument("overlapping copy ranges".into()));
            }
        }
        let state = Arc::new(JobState::default());
        self.send(Msg::Copy {
            src: src.mark_busy()?,
            src_offset,
            dst: dst.mark_busy()?,
            dst_offset,
            len,
            state: Arc::clone(&state),
        })?;
        Ok(ReadHandle { state })
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.inner.stats.snapshot(self.backend().name())
    }
}

/// Memory owned by (or lent to) the library: device, host or pinned.
#[derive(Debug, Clone)]
pub struct Buffer {
    mem: Arc<Memory>,
    /// > 0: reads in flight; < 0: host borrows; 0: idle.
    state: Arc<AtomicIsize>,
    kind: BufferKind,
    len: usize,
}

impl Buffer {
    fn from_memory(mem: Memory, kind: BufferKind, len: usize) -> Self {
        Self {
            mem: Arc::new(mem),
            state: Arc::new(AtomicIsize::new(0)),
            kind,
            len,
        }
    }

    /// The memory, kept alive by whoever holds the `Arc` (cuFile buffer registrations).
    pub(crate) fn memory(&self) -> &Arc<Memory> {
        &self.mem
    }

    /// Mark a read in flight; refused while the bytes are borrowed.
    pub(crate) fn mark_busy(&self) -> Result<DestMem> {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur < 0 {
                return Err(Error::Busy(0));
            }
            match self.state.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Ok(DestMem {
                        mem: Arc::clone(&self.mem),
                        busy: Arc::clone(&self.state),
                    })
                }
                Err(v) => cur = v,
            }
        }
    }

    /// Usable length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What memory this is.
    pub fn kind(&self) -> BufferKind {
        self.kind
    }

    /// Device address (CUDA device buffers).
    pub fn device_ptr(&self) -> Option<u64> {
        self.mem.device_ptr()
    }

    /// Host address (host and pinned buffers, and every buffer on the host backend).
    pub fn host_ptr(&self) -> Option<*mut u8> {
        self.mem.host_ptr()
    }

    /// Reads into this buffer that have not completed.
    pub fn reads_in_flight(&self) -> usize {
        usize::try_from(self.state.load(Ordering::Acquire)).unwrap_or(0)
    }

    /// Copy `out.len()` bytes at `offset` out of the buffer (from the device if need be).
    pub fn copy_to_host(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        offset
            .checked_add(out.len())
            .filter(|e| *e <= self.len)
            .ok_or_else(|| Error::InvalidArgument("range outside the buffer".into()))?;
        let _guard = self.borrow()?;
        if let Some(hp) = self.mem.host_ptr() {
            // SAFETY: offset + out.len() <= len was checked; the borrow guard excludes reads
            // into this buffer, and `out` is a distinct allocation.
            unsafe { std::ptr::copy_nonoverlapping(hp.add(offset), out.as_mut_ptr(), out.len()) };
            return Ok(());
        }
        match &*self.mem {
            Memory::Device(d) => d.copy_to_host(offset, out),
            _ => Err(Error::InvalidArgument(
                "external device memory is read back by its owner, not the library".into(),
            )),
        }
    }

    /// Run `f` over the bytes of a host-addressable buffer. Reads into the buffer are refused
    /// (with [`Error::Busy`]) while `f` runs, and `f` is refused while reads are in flight.
    pub fn with_host_slice<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let hp = self.mem.host_ptr().ok_or_else(|| {
            Error::InvalidArgument("device memory is not host-addressable".into())
        })?;
        let _guard = self.borrow()?;
        // SAFETY: `hp..hp+len` is this buffer's memory, alive while `self` is; the borrow guard
        // guarantees no read writes it while the slice exists.
        let s = unsafe { std::slice::from_raw_parts(hp, self.len) };
        Ok(f(s))
    }

    /// Turn a host-addressable buffer into a read-only byte view that lives as long as it is
    /// held (reads into the buffer are refused meanwhile). Used to keep loaded weights.
    pub fn into_host_view(self) -> Result<HostView> {
        let ptr = self.mem.host_ptr().ok_or_else(|| {
            Error::InvalidArgument("device memory is not host-addressable".into())
        })?;
        std::mem::forget(self.borrow()?);
        Ok(HostView { ptr, buf: self })
    }

    /// Exclude reads into this buffer while the guard lives.
    fn borrow(&self) -> Result<BorrowGuard<'_>> {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur > 0 {
                return Err(Error::Busy(cur.unsigned_abs()));
            }
            match self.state.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(BorrowGuard(&self.state)),
                Err(v) => cur = v,
            }
        }
    }
}

/// A read-only view of a host buffer's bytes (see [`Buffer::into_host_view`]).
#[derive(Debug)]
pub struct HostView {
    ptr: *mut u8,
    buf: Buffer,
}

// SAFETY: the view only hands out `&[u8]`, and the borrow it holds keeps every writer out.
unsafe impl Send for HostView {}
// SAFETY: as above.
unsafe impl Sync for HostView {}

impl std::ops::Deref for HostView {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is the buffer's memory, kept alive by `buf`; the borrow taken in
        // `into_host_view` (released in Drop) excludes all writes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.buf.len) }
    }
}

impl Drop for HostView {
    fn drop(&mut self) {
        self.buf.state.fetch_add(1, Ordering::AcqRel);
    }
}

struct BorrowGuard<'a>(&'a AtomicIsize);

impl Drop for BorrowGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// A read (or copy) in flight.
#[derive(Debug)]
pub struct ReadHandle {
    state: Arc<JobState>,
}

impl ReadHandle {
    /// True once the request completed (successfully or not).
    pub fn is_done(&self) -> bool {
        self.state.is_done()
    }

    /// Block (sleeping) until the request completes; its result.
    pub fn wait(self) -> Result<()> {
        self.state.wait()
    }

    /// Like [`ReadHandle::wait`] without consuming the handle (a second call returns `Ok`).
    pub fn wait_ref(&self) -> Result<()> {
        self.state.wait()
    }
}

/// `Read` over a file by `pread` from a position of its own, leaving the file offset alone.
struct PositionalReader<'a> {
    file: &'a std::fs::File,
    pos: u64,
}

impl std::io::Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A GGUF model opened for streaming.
#[derive(Debug, Clone)]
pub struct Model {
    source: Arc<Source>,
    gguf: Arc<GgufFile>,
}

impl Model {
    /// Map a GGUF model from an opened source.
    pub fn from_source(source: Arc<Source>) -> Result<Self> {
        // Positional reads: the descriptor may be shared (passed by another process, or
        // dup'ed), so the header is read without using or moving the file offset.
        let reader = std::io::BufReader::with_capacity(
            1 << 20,
            PositionalReader {
                file: source.buffered_file(),
                pos: 0,
            },
        );
        let gguf = GgufFile::parse(reader, source.len()).map_err(|e| Error::Gguf {
            path: source.path().to_owned(),
            source: e,
        })?;
        Ok(Self {
            source,
            gguf: Arc::new(gguf),
        })
    }

    /// The parsed header.
    pub fn gguf(&self) -> &GgufFile {
        &self.gguf
    }

    /// The file.
    pub fn source(&self) -> &Arc<Source> {
        &self.source
    }

    /// Number of layers (`blk.N`).
    pub fn layer_count(&self) -> usize {
        self.gguf.layers.len()
    }

    /// Layer `i`.
    pub fn layer(&self, i: usize) -> Result<&Layer> {
        self.gguf.layers.get(i).ok_or_else(|| {
            Error::InvalidArgument(format!("layer {i} of {}", self.gguf.layers.len()))
        })
    }

    /// Bytes of layer `i` (its span).
    pub fn layer_bytes(&self, i: usize) -> Result<u64> {
        let l = self.layer(i)?;
        Ok(l.span.end - l.span.start)
    }

    /// Start loading layer `i` (one bulk read of its span) into `dst` at `dst_offset`. Tensor
    /// `t` of the layer then starts at `dst_offset + t.offset - layer.span.start`.
    pub fn load_layer_async(
        &self,
        ctx: &Context,
        i: usize,
        dst: &Buffer,
        dst_offset: usize,
    ) -> Result<ReadHandle> {
        let l = self.layer(i)?;
        ctx.read_async(
            &self.source,
            l.span.start,
            l.span.end - l.span.start,
            dst,
            dst_offset,
        )
    }

    /// Blocking [`Model::load_layer_async`].
    pub fn load_layer(
        &self,
        ctx: &Context,
        i: usize,
        dst: &Buffer,
        dst_offset: usize,
    ) -> Result<()> {
        self.load_layer_async(ctx, i, dst, dst_offset)?.wait()
    }

    /// Load layer `i` into a new buffer of `kind`.
    pub fn load_layer_owned(&self, ctx: &Context, i: usize, kind: BufferKind) -> Result<Buffer> {
        let n = usize::try_from(self.layer_bytes(i)?)
            .map_err(|_| Error::InvalidArgument("layer too large".into()))?;
        let buf = ctx.alloc(kind, n)?;
        self.load_layer(ctx, i, &buf, 0)?;
        Ok(buf)
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.gguf
            .tensor(name)
            .ok_or_else(|| Error::InvalidArgument(format!("no tensor named {name:?}")))
    }

    /// Read one tensor's bytes into host memory.
    pub fn read_tensor(&self, ctx: &Context, name: &str) -> Result<Vec<u8>> {
        let t = self.tensor(name)?;
        ctx.read_to_vec(&self.source, t.offset, t.size)
    }
}
