//! Weight matrices and their products with activations, multithreaded over weight rows.
//!
//! Work runs on one dedicated spinning pool ([`super::pool`]), sized by [`set_threads`] (default: the number of
//! CPUs). Activations are quantized once per call on the calling thread into a reusable
//! thread-local buffer, so a `matvec` allocates nothing once warm.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use super::pool::SpinPool;
use llmstream::gguf::GgmlType;

use super::dot::{
    kernel_for, llama_cpp_repacks, llama_cpp_tinyblas, rows_kernel_for, Backend, DotFn, Path,
    RowsFn,
};
use super::q8::{activation_bytes, quantize_activations};
use super::{dequantize, layout, vec_dot_type, QuantError};

/// A row-major weight matrix in GGUF layout: a tensor of ggml dims `[cols, rows]` is `rows`
/// rows of `cols` elements, each row `bytes_for(cols)` bytes.
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// Wraps `data` after checking that the type is supported, `cols` is a whole number of
    /// blocks and `data` holds exactly `rows` rows.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, QuantError> {
        let row_bytes = row_bytes(ty, cols)?;
        let expected = rows
            .checked_mul(row_bytes)
            .ok_or(QuantError::Overflow { what: "QMatrix" })?;
        if data.len() != expected {
            return Err(QuantError::bytes("QMatrix data", expected, data.len()));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            data,
        })
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        // `new` checked `rows * row_bytes == data.len()`; recompute from the data so a
        // hand-built value cannot make this disagree with the slice.
        self.data.len().checked_div(self.rows).unwrap_or(0)
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> Result<&'a [u8], QuantError> {
        if r >= self.rows {
            return Err(QuantError::RowOutOfRange {
                row: r,
                rows: self.rows,
            });
        }
        let rb = self.row_bytes();
        Ok(&self.data[r * rb..(r + 1) * rb])
    }

    /// Re-checks the invariants of [`QMatrix::new`] (the fields are public).
    fn validate(&self) -> Result<usize, QuantError> {
        let rb = row_bytes(self.ty, self.cols)?;
        let expected = self
            .rows
            .checked_mul(rb)
            .ok_or(QuantError::Overflow { what: "QMatrix" })?;
        if self.data.len() != expected {
            return Err(QuantError::bytes("QMatrix data", expected, self.data.len()));
        }
        Ok(rb)
    }
}

fn row_bytes(ty: GgmlType, cols: usize) -> Result<usize, QuantError> {
    let (block, size) = layout(ty, "QMatrix")?;
    if cols % block != 0 {
        return Err(QuantError::NotWholeBlocks {
            what: "QMatrix columns",
            ty,
            n: cols,
            block,
        });
    }
    (cols / block)
        .checked_mul(size)
        .ok_or(QuantError::Overflow {
            what: "QMatrix row",
        })
}

/// Row `r` of `w` dequantized into `out` (`out.len() == w.cols`): an embedding lookup.
pub fn dequantize_row(w: &QMatrix<'_>, r: usize, out: &mut [f32]) -> Result<(), QuantError> {
    w.validate()?;
    if out.len() != w.cols {
        return Err(QuantError::elements(
            "dequantize_row output",
            w.cols,
            out.len(),
        ));
    }
    dequantize(w.ty, w.row(r)?, out)
}

// ------------------------------------------------------------------------------ thread pool

static POOL: RwLock<Option<Arc<SpinPool>>> = RwLock::new(None);

/// Pin pool workers to CPUs: 0 = unset (then `LLMSTREAM_PIN_THREADS=1` turns it on), 1 = off,
/// 2 = on.
static PIN: AtomicU8 = AtomicU8::new(0);

/// Whether pools built from now on pin their worker threads to CPUs (worker `i` to the
/// `i`-th CPU of the process's affinity mask; no pinning when the mask has fewer CPUs than
/// threads). Off by default, or on with the environment variable `LLMSTREAM_PIN_THREADS=1`:
/// pinning helps on dedicated cores and hurts when other processes share them. Takes effect
/// at the next [`set_threads`].
pub fn set_pin_threads(on: bool) {
    PIN.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

fn pin_threads() -> bool {
    match PIN.load(Ordering::Relaxed) {
        0 => std::env::var("LLMSTREAM_PIN_THREADS").is_ok_and(|v| v == "1"),
        v => v == 2,
    }
}

fn build_pool(threads: usize) -> Result<Arc<SpinPool>, QuantError> {
    SpinPool::new(threads, pin_threads())
        .map(Arc::new)
        .map_err(|source| QuantError::ThreadPool { threads, source })
}

/// Sets the number of worker threads of the quant pool (at least 1). Calls already running
/// finish on the old pool.
pub fn set_threads(n: usize) -> Result<(), QuantError> {
    let pool = build_pool(n.max(1))?;
    let mut guard = POOL.write().unwrap_or_else(|e| e.into_inner());
    *guard = Some(pool);
    tracing::debug!(threads = n.max(1), "quant thread pool set");
    Ok(())
}

/// Keep the pool's idle workers spinning 5 ms before they sleep (200 µs otherwise) for as long
/// as the returned guard lives (`LLMSTREAM_POOL_SPIN_US` overrides both).
pub fn hold_long_pool_spin() -> super::pool::LongSpin {
    super::pool::LongSpin::hold()
}

/// `f(i, chunk_i)` for every `chunk`-sized piece of `data` on the quant pool (the calling
/// thread takes part); returns when all are done.
pub fn parallel_chunks_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) -> Result<(), QuantError> {
    pool()?.for_each_chunk_mut(data, chunk, f);
    Ok(())
}

/// The pool size used unless [`set_threads`] says otherwise: the count `llmstream calibrate`
/// chose on this CPU ([`Calibration::cached_threads`](crate::calibration::Calibration::cached_threads)),
/// else every logical CPU.
pub fn default_threads() -> usize {
    crate::calibration::Calibration::cached_threads()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The number of worker threads of the quant pool.
pub fn threads() -> Result<usize, QuantError> {
    Ok(pool()?.threads())
}

fn pool() -> Result<Arc<SpinPool>, QuantError> {
    if let Some(p) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(Arc::clone(p));
    }
    let mut guard = POOL.write().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.as_ref() {
        return Ok(Arc::clone(p));
    }
    let p = build_pool(default_threads())?;
    *guard = Some(Arc::clone(&p));
    Ok(p)
}

// ------------------------------------------------------------------------- scratch buffers

thread_local! {
    /// Quantized activations of the current call.
    static XQ: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Transposed output of `matmul`.
    static YT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer `key`, or with a fresh one when it is in use
/// (a call nested inside another on the same thread).
fn with_scratch<T, R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    f: impl FnOnce(&mut Vec<T>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

// ------------------------------------------------------------------- llama.cpp code paths

static REPACK: AtomicBool = AtomicBool::new(true);

/// Whether [`matvec`] and [`matmul`] reproduce llama.cpp's repacked kernels for the weights it
/// repacks (`Q4_0`, `Q4_K` with rows divisible by 8; see
/// [`llama_cpp_repacks`](super::dot::llama_cpp_repacks)). On by default, like llama.cpp's
/// CPU_REPACK buffer; turn it off to match a llama.cpp run without repacking
/// (`--no-repack`, `use_extra_bufts = false`), which uses `ggml_vec_dot` everywhere.
pub fn set_llama_cpp_repack(enabled: bool) {
    REPACK.store(enabled, Ordering::Relaxed);
}

/// How a product is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatOptions {
    /// Kernel implementation (same bits either way).
    pub backend: Backend,
    /// Reproduce llama.cpp's repacked kernels if it would repack this matrix. llama.cpp
    /// cannot repack a tensor that is also read by `get_rows` (an output matrix tied to
    /// `token_embd`): pass `false` for such a matrix.
    pub llama_cpp_repack: bool,
}

impl Default for MatOptions {
    /// The detected backend and the global [`set_llama_cpp_repack`] setting.
    fn default() -> Self {
        Self {
            backend: Backend::detect(),
            llama_cpp_repack: REPACK.load(Ordering::Relaxed),
        }
    }
}

/// The kernels llama.cpp would use for `w` times a batch of `n` activation rows:
/// `(single, group, grouped)`, `group` serving activation rows `0..grouped` and `single` the
/// others. Repacked weights: groups of four through `gemm`, the rest through `gemv`; float
/// weights in batches: all rows through `tinyBLAS`; everything else: `ggml_vec_dot`.
fn kernels(
    w: &QMatrix<'_>,
    opts: MatOptions,
    n: usize,
) -> Result<(DotFn, DotFn, usize), QuantError> {
    let backend = opts.backend;
    if opts.llama_cpp_repack && llama_cpp_repacks(w.ty, w.rows) {
        let grouped = if n > 3 { n - n % 4 } else { 0 };
        return Ok((
            kernel_for(w.ty, backend, Path::RepackGemv)?,
            kernel_for(w.ty, backend, Path::RepackGemm)?,
            grouped,
        ));
    }
    let vec_dot = kernel_for(w.ty, backend, Path::VecDot)?;
    if llama_cpp_tinyblas(w.ty, w.rows, w.cols, n) {
        return Ok((vec_dot, kernel_for(w.ty, backend, Path::Tinyblas)?, n));
    }
    Ok((vec_dot, vec_dot, 0))
}

// ------------------------------------------------------------------------------- products

/// Rows per parallel task: about four tasks per thread for load balance (another process
/// may hold a core), each of at least 16 KiB of weights to amortize the scheduling, in
/// multiples of 8 rows (the multi-row kernels' group), and evenly split so that no task is a
/// short remainder.
fn rows_per_task(rows: usize, row_bytes: usize, threads: usize) -> usize {
    let max_tasks = (rows * row_bytes / 16_384).max(1);
    let tasks = (threads.max(1) * 4).min(max_tasks).max(1);
    let per = rows.div_ceil(tasks).max(1);
    if per >= 8 {
        per.div_ceil(8) * 8
    } else {
        per
    }
}

/// The path llama.cpp takes for one activation row times `w`.
fn single_path(w: &QMatrix<'_>, opts: MatOptions) -> Path {
    if opts.llama_cpp_repack && llama_cpp_repacks(w.ty, w.rows) {
        Path::RepackGemv
    } else {
        Path::VecDot
    }
}

/// `y[r] = dot(W[r], x)` for one activation vector (`x.len() == w.cols`,
/// `y.len() == w.rows`), multithreaded over rows, on the fastest backend.
pub fn matvec(w: &QMatrix<'_>, x: &[f32], y: &mut [f32]) -> Result<(), QuantError> {
    matvec_opts(w, x, y, MatOptions::default())
}

/// [`matvec`] on a chosen backend.
pub fn matvec_with(
    backend: Backend,
    w: &QMatrix<'_>,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), QuantError> {
    let opts = MatOptions {
        backend,
        ..MatOptions::default()
    };
    matvec_opts(w, x, y, opts)
}

/// [`matvec`] with explicit options.
pub fn matvec_opts(
    w: &QMatrix<'_>,
    x: &[f32],
    y: &mut [f32],
    opts: MatOptions,
) -> Result<(), QuantError> {
    let rb = w.validate()?;
    if x.len() != w.cols {
        return Err(QuantError::elements("matvec input", w.cols, x.len()));
    }
    if y.len() != w.rows {
        return Err(QuantError::elements("matvec output", w.rows, y.len()));
    }
    let vty = vec_dot_type(w.ty)?;
    let (single, _, _) = kernels(w, opts, 1)?;
    let multi = rows_kernel_for(w.ty, opts.backend, single_path(w, opts));
    let xq_len = activation_bytes(vty, w.cols)?;
    let pool = pool()?;
    with_scratch(&XQ, |xq| {
        xq.resize(xq_len, 0);
        quantize_activations(vty, x, xq)?;
        let job = Job {
            single,
            multi,
            group: single,
            grouped: 0,
            data: w.data,
            rb,
            xq,
            xq_row: xq_len,
            n: 1,
        };
        job.run(&pool, y);
        Ok(())
    })
}

/// `Y (n x rows) = X (n x cols) . W^T` for a batch of `n` activation rows (`x` row-major,
/// `n * cols`; `y` row-major, `n * rows`). Each activation row is quantized once.
pub fn matmul(w: &QMatrix<'_>, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), QuantError> {
    matmul_opts(w, x, n, y, MatOptions::default())
}

/// [`matmul`] on a chosen backend.
pub fn matmul_with(
    backend: Backend,
    w: &QMatrix<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), QuantError> {
    let opts = MatOptions {
        backend,
        ..MatOptions::default()
    };
    matmul_opts(w, x, n, y, opts)
}

/// [`matmul`] with explicit options.
pub fn matmul_opts(
    w: &QMatrix<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    opts: MatOptions,
) -> Result<(), QuantError> {
    let rb = w.validate()?;
    let x_len = n
        .checked_mul(w.cols)
        .ok_or(QuantError::Overflow { what: "matmul" })?;
    let y_len = n
        .checked_mul(w.rows)
        .ok_or(QuantError::Overflow { what: "matmul" })?;
    if x.len() != x_len {
        return Err(QuantError::elements("matmul input", x_len, x.len()));
    }
    if y.len() != y_len {
        return Err(QuantError::elements("matmul output", y_len, y.len()));
    }
    if n == 0 || w.rows == 0 {
        return Ok(());
    }
    if n == 1 {
        return matvec_opts(w, x, y, opts);
    }
    let vty = vec_dot_type(w.ty)?;
    let (single, group, grouped) = kernels(w, opts, n)?;
    let xq_row = activation_bytes(vty, w.cols)?;
    let xq_len = n
        .checked_mul(xq_row)
        .ok_or(QuantError::Overflow { what: "matmul" })?;
    let pool = pool()?;
    with_scratch(&XQ, |xq| {
        xq.resize(xq_len, 0);
        for (xr, qr) in x.chunks_exact(w.cols).zip(xq.chunks_exact_mut(xq_row)) {
            quantize_activations(vty, xr, qr)?;
        }
        with_scratch(&YT, |yt| {
            // yt is W.X^T: row r holds the n outputs of weight row r
            yt.resize(y_len, 0.0);
            let job = Job {
                single,
                multi: None,
                group,
                grouped,
                data: w.data,
                rb,
                xq,
                xq_row,
                n,
            };
            job.run(&pool, yt);
            for (r, yr) in yt.chunks_exact(n).enumerate() {
                for (j, &v) in yr.iter().enumerate() {
                    y[j * w.rows + r] = v;
                }
            }
        });
        Ok(())
    })
}

/// One product: `out[r * n + j] = kernel(weight row r, activation row j)` for all rows, where
/// activation rows `j < grouped` use `group` and the others `single`.
struct Job<'a> {
    single: DotFn,
    /// The multi-row form of `single`, used when `n == 1`.
    multi: Option<RowsFn>,
    group: DotFn,
    grouped: usize,
    data: &'a [u8],
    rb: usize,
    xq: &'a [u8],
    xq_row: usize,
    n: usize,
}

impl Job<'_> {
    /// Rows `r0..` into `out` (`n` outputs per row).
    fn rows(&self, r0: usize, out: &mut [f32]) {
        if let (Some(k), 1, true) = (self.multi, self.n, self.rb > 0) {
            let end = (r0 + out.len()).min(self.data.len() / self.rb.max(1));
            if let Some(w) = self.data.get(r0 * self.rb..end * self.rb) {
                k(w, self.rb, self.xq, out);
                return;
            }
        }
        for (i, o) in out.chunks_exact_mut(self.n).enumerate() {
            let r = r0 + i;
            let wr = &self.data[r * self.rb..(r + 1) * self.rb];
            for (j, (slot, xr)) in o
                .iter_mut()
                .zip(self.xq.chunks_exact(self.xq_row))
                .enumerate()
            {
                let k = if j < self.grouped {
                    self.group
                } else {
                    self.single
                };
                *slot = k(wr, xr);
            }
        }
    }

    /// All rows, in parallel over chunks of rows on `pool`.
    fn run(&self, pool: &SpinPool, out: &mut [f32]) {
        let rows = out.len() / self.n.max(1);
        let threads = pool.threads();
        // Small products are not worth waking the pool for.
        if threads <= 1 || self.data.len() < 64 * 1024 {
            self.rows(0, out);
            return;
        }
        let per_task = rows_per_task(rows, self.rb, threads);
        pool.for_each_chunk_mut(out, per_task * self.n, &|c, part| {
            self.rows(c * per_task, part);
        });
    }
}
