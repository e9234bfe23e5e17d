//! Weight matrices and their products with activations, multithreaded over weight rows.
//!
//! Work runs on one dedicated rayon pool, sized by [`set_threads`] (default: the number of
//! CPUs). Activations are quantized once per call on the calling thread into a reusable
//! thread-local buffer, so a `matvec` allocates nothing once warm.

use std::cell::RefCell;
use std::sync::{Arc, RwLock};

use llmstream::gguf::GgmlType;
use rayon::prelude::*;
use rayon::ThreadPool;

use super::dot::{kernel, Backend, DotFn};
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

static POOL: RwLock<Option<Arc<ThreadPool>>> = RwLock::new(None);

fn build_pool(threads: usize) -> Result<Arc<ThreadPool>, QuantError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("llmstream-quant-{i}"))
        .build()
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

/// The number of worker threads of the quant pool.
pub fn threads() -> Result<usize, QuantError> {
    Ok(pool()?.current_num_threads())
}

fn pool() -> Result<Arc<ThreadPool>, QuantError> {
    if let Some(p) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(Arc::clone(p));
    }
    let mut guard = POOL.write().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.as_ref() {
        return Ok(Arc::clone(p));
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let p = build_pool(n)?;
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

// ------------------------------------------------------------------------------- products

/// Rows per parallel task: enough tasks for load balance, each big enough to amortize the
/// scheduling (about 64 KiB of weights at least).
fn rows_per_task(rows: usize, row_bytes: usize, threads: usize) -> usize {
    let min_rows = (65_536 / row_bytes.max(1)).max(1);
    let balanced = rows.div_ceil(threads.max(1) * 4).max(1);
    balanced.max(min_rows)
}

/// `y[r] = dot(W[r], x)` for one activation vector (`x.len() == w.cols`,
/// `y.len() == w.rows`), multithreaded over rows, on the fastest backend.
pub fn matvec(w: &QMatrix<'_>, x: &[f32], y: &mut [f32]) -> Result<(), QuantError> {
    matvec_with(Backend::detect(), w, x, y)
}

/// [`matvec`] on a chosen backend.
pub fn matvec_with(
    backend: Backend,
    w: &QMatrix<'_>,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), QuantError> {
    let rb = w.validate()?;
    if x.len() != w.cols {
        return Err(QuantError::elements("matvec input", w.cols, x.len()));
    }
    if y.len() != w.rows {
        return Err(QuantError::elements("matvec output", w.rows, y.len()));
    }
    let vty = vec_dot_type(w.ty)?;
    let k = kernel(w.ty, backend)?;
    let xq_len = activation_bytes(vty, w.cols)?;
    let pool = pool()?;
    with_scratch(&XQ, |xq| {
        xq.resize(xq_len, 0);
        quantize_activations(vty, x, xq)?;
        run_rows(&pool, k, w.data, rb, xq, xq_len, 1, y);
        Ok(())
    })
}

/// `Y (n x rows) = X (n x cols) . W^T` for a batch of `n` activation rows (`x` row-major,
/// `n * cols`; `y` row-major, `n * rows`). Each activation row is quantized once.
pub fn matmul(w: &QMatrix<'_>, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), QuantError> {
    matmul_with(Backend::detect(), w, x, n, y)
}

/// [`matmul`] on a chosen backend.
pub fn matmul_with(
    backend: Backend,
    w: &QMatrix<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
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
        return matvec_with(backend, w, x, y);
    }
    let vty = vec_dot_type(w.ty)?;
    let k = kernel(w.ty, backend)?;
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
            run_rows(&pool, k, w.data, rb, xq, xq_row, n, yt);
            for (r, yr) in yt.chunks_exact(n).enumerate() {
                for (j, &v) in yr.iter().enumerate() {
                    y[j * w.rows + r] = v;
                }
            }
        });
        Ok(())
    })
}

/// `out[r * n + j] = k(row r of data, activation row j of xq)` for all weight rows, in
/// parallel over chunks of rows.
#[allow(clippy::too_many_arguments)]
fn run_rows(
    pool: &ThreadPool,
    k: DotFn,
    data: &[u8],
    rb: usize,
    xq: &[u8],
    xq_row: usize,
    n: usize,
    out: &mut [f32],
) {
    let rows = out.len() / n.max(1);
    let work = |(chunk_i, out_chunk): (usize, &mut [f32]), per_task: usize| {
        let r0 = chunk_i * per_task;
        for (i, o) in out_chunk.chunks_exact_mut(n).enumerate() {
            let r = r0 + i;
            let wr = &data[r * rb..(r + 1) * rb];
            for (slot, xr) in o.iter_mut().zip(xq.chunks_exact(xq_row)) {
                *slot = k(wr, xr);
            }
        }
    };
    let threads = pool.current_num_threads();
    // Small products are not worth waking the pool for.
    if threads <= 1 || data.len() < 64 * 1024 {
        work((0, out), rows.max(1));
        return;
    }
    let per_task = rows_per_task(rows, rb, threads);
    pool.install(|| {
        out.par_chunks_mut(per_task * n)
            .enumerate()
            .for_each(|c| work(c, per_task));
    });
}
