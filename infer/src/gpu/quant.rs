//! Launch wrappers for `kernels/quant.cu`: activation quantization, dequant-fused
//! matrix-vector products and row lookups, matched to the CPU engine ([`crate::quant`]).
//!
//! - [`quantize`]: `f32` activation rows to a weight type's `vec_dot_type`, byte-identical to
//!   [`crate::quant::quantize_activations`].
//! - [`matvec`]: `y[t][r] = dot(W[r], x[t])` for the 11 weight types the CPU engine supports,
//!   with the CPU kernels' exact integer block sums (dp4a); only the `f32` summation order
//!   across blocks differs from [`crate::quant::matvec`] / [`crate::quant::matmul`].
//! - [`get_rows`]: embedding lookup, bit-identical to [`crate::quant::dequantize`] of the rows.
//! - [`dequantize`]: a run of blocks to `f32` or `f16` (for a future cuBLAS prefill path).
//!
//! Every wrapper checks its sizes and spans before launching and returns
//! [`GpuError::Invalid`] (never launches) when something does not fit. Launches are
//! asynchronous on [`Gpu::stream`].
//!
//! # Alignment
//! Quantized weights (`w`) and quantized activations (`xq`) of [`matvec`] must start on a
//! 16-byte boundary (GGUF aligns tensor data to 32 bytes; [`DevBuf`](super::DevBuf)s are
//! 256-byte aligned): the kernels copy them with aligned 16-byte loads. Float weights and
//! activations need their element alignment; `f32` outputs and `i32` ids 4 bytes.

mod launch;
mod names;

use std::sync::atomic::{AtomicU32, Ordering};

use cudarc::driver::LaunchConfig;
use llmstream::gguf::GgmlType;

use super::{DevSpan, Gpu, GpuError, Result};
use crate::quant as cpu;
use launch::{grid_for, launch};
pub(crate) use launch::{occupancy, sm_count};
pub(crate) use names::KERNELS;

/// Warps per CTA of the quantized matvec (`lsq::WARPS` in `kernels/quant.cu`).
const MV_WARPS: u32 = 4;
/// Bytes of one weight window, two per warp (`lsq::WIN`).
const MV_WIN: usize = 2048;
/// Bytes of an activation slot kept free for alignment and over-read (`lsq::SLACK`).
const MV_SLACK: usize = 48;
/// Shared memory for the staged activation rows of one CTA.
const MV_ACT_CAP: usize = 32 * 1024;
/// Most activation rows one launch takes.
pub const MAX_ROWS_PER_LAUNCH: usize = 8;

static CTAS_PER_SM: AtomicU32 = AtomicU32::new(4);

/// Tuning knob: how many CTAs of 4 warps the quantized matvec keeps per SM (1..=16, default 4,
/// and never more than fit). Each CTA stages the activations once, so fewer CTAs copy less;
/// more CTAs hide more latency. For benchmarks.
pub fn set_matvec_ctas_per_sm(n: u32) {
    CTAS_PER_SM.store(n.clamp(1, 16), Ordering::Relaxed);
}

/// The current [`set_matvec_ctas_per_sm`] setting.
pub fn matvec_ctas_per_sm() -> u32 {
    CTAS_PER_SM.load(Ordering::Relaxed)
}

fn invalid(kernel: &'static str, why: impl Into<String>) -> GpuError {
    GpuError::Invalid {
        kernel,
        why: why.into(),
    }
}

fn to_u32(kernel: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| invalid(kernel, format!("{what} = {v} exceeds u32")))
}

fn to_u64(v: usize) -> u64 {
    // usize is at most 64 bits on every target CUDA supports.
    u64::try_from(v).unwrap_or(u64::MAX)
}

fn mul(kernel: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| invalid(kernel, format!("{a} * {b} overflows")))
}

fn aligned(kernel: &'static str, what: &str, span: DevSpan, align: u64) -> Result<()> {
    if span.ptr() % align != 0 {
        return Err(invalid(
            kernel,
            format!("{what} at {:#x} is not {align}-byte aligned", span.ptr()),
        ));
    }
    Ok(())
}

fn nonzero(kernel: &'static str, what: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(invalid(kernel, format!("{what} is 0")));
    }
    Ok(())
}

/// `(elements, bytes)` of one block of `ty`.
fn layout(kernel: &'static str, ty: GgmlType) -> Result<(usize, usize)> {
    let block = usize::try_from(ty.block_size()).map_err(|_| invalid(kernel, "block size"))?;
    let size = usize::try_from(ty.type_size()).map_err(|_| invalid(kernel, "block bytes"))?;
    Ok((block, size))
}

/// Bytes of `cols` elements of `ty`; `cols` must be a whole number of blocks.
fn row_bytes(kernel: &'static str, ty: GgmlType, cols: usize) -> Result<usize> {
    let (block, size) = layout(kernel, ty)?;
    if cols % block != 0 {
        return Err(invalid(
            kernel,
            format!("{cols} columns are not whole {ty:?} blocks of {block}"),
        ));
    }
    mul(kernel, cols / block, size)
}

fn vec_dot_type(ty: GgmlType) -> Result<GgmlType> {
    cpu::vec_dot_type(ty).map_err(|_| GpuError::Unsupported(format!("{ty:?} weights")))
}

/// Bytes of one activation row of `cols` elements quantized to `vec_dot_type(wty)`: `F32` for
/// `F32` weights, `F16` for `F16`, `BF16` for `BF16`, `Q8_0` for `Q4_0`/`Q5_0`/`Q8_0`, `Q8_1`
/// for `Q4_1`/`Q5_1`, `Q8_K` for `Q4_K`/`Q5_K`/`Q6_K`.
pub fn activation_row_bytes(wty: GgmlType, cols: usize) -> Result<usize> {
    let vty = vec_dot_type(wty)?;
    row_bytes("activation_row_bytes", vty, cols)
}

/// Quantizes `n_tok` rows of `cols` `f32` activations (`x`, row-major) to
/// `vec_dot_type(wty)` into `out` (`n_tok` rows of [`activation_row_bytes`]), byte-identical to
/// [`crate::quant::quantize_activations`] of each row, NaNs and infinities included.
pub fn quantize(
    gpu: &Gpu,
    wty: GgmlType,
    x: DevSpan,
    cols: usize,
    n_tok: usize,
    out: DevSpan,
) -> Result<()> {
    const K: &str = "quantize";
    nonzero(K, "n_tok", n_tok)?;
    nonzero(K, "cols", cols)?;
    let vty = vec_dot_type(wty)?;
    let xrow = row_bytes(K, vty, cols)?;
    let n = mul(K, n_tok, cols)?;
    x.need(K, "f32 activations", mul(K, n, 4)?)?;
    out.need(K, "quantized activations", mul(K, n_tok, xrow)?)?;
    aligned(K, "x", x, 4)?;
    aligned(K, "out", out, 4)?;
    let name = names::quantize(vty).ok_or_else(|| GpuError::Unsupported(format!("{vty:?}")))?;
    let (block, _) = layout(K, vty)?;
    let units = to_u64(n / block);
    let sms = sm_count(gpu)?;
    // quantized types: a warp (8 per CTA) per block; float types: a thread per element
    let per_cta = if block > 1 { 8 } else { 256 };
    let cfg = LaunchConfig {
        grid_dim: (grid_for(units, per_cta, sms * 16), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (xp, op) = (x.ptr(), out.ptr());
    launch!(gpu, name, cfg, xp, op, units)
}

/// How a [`matvec`] of a quantized matrix is launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatvecPlan {
    /// CTAs (of 128 threads; rows are strided over their warps).
    pub grid: u32,
    /// Dynamic shared memory per CTA.
    pub shared_bytes: u32,
    /// Activation blocks staged per tile (the whole row when it fits).
    pub tile_blocks: u32,
    /// Bytes of one activation row's slot in shared memory.
    pub slot_bytes: u32,
}

/// The activation tile for `nt` rows of `nb` blocks of `xbs` bytes: `(blocks, slot bytes)`.
fn tile(nt: usize, nb: usize, xbs: usize) -> (usize, usize) {
    let slot_for = |tb: usize| (tb * xbs + MV_SLACK).div_ceil(16) * 16;
    let cap = MV_ACT_CAP / nt / 16 * 16;
    if slot_for(nb) <= cap {
        return (nb, slot_for(nb));
    }
    let tb = ((cap - MV_SLACK) / xbs).max(1);
    (tb, slot_for(tb))
}

/// The launch [`matvec`] uses for `rows x cols` weights of a quantized type and `nt`
/// (1..=8) activation rows.
pub fn matvec_plan(
    gpu: &Gpu,
    wty: GgmlType,
    rows: usize,
    cols: usize,
    nt: usize,
) -> Result<MatvecPlan> {
    const K: &str = "matvec";
    let Some(names) = names::matvec_quant(wty) else {
        return Err(GpuError::Unsupported(format!(
            "{wty:?} has no fused quantized matvec"
        )));
    };
    if !(1..=MAX_ROWS_PER_LAUNCH).contains(&nt) {
        return Err(invalid(K, format!("{nt} activation rows per launch")));
    }
    nonzero(K, "rows", rows)?;
    let (block, _) = layout(K, wty)?;
    let (_, xbs) = layout(K, vec_dot_type(wty)?)?;
    let nb = cols / block;
    nonzero(K, "blocks per row", nb)?;
    let (tb, slot) = tile(nt, nb, xbs);
    let shared = nt * slot + MV_WARPS as usize * 2 * MV_WIN;
    let shared_bytes = to_u32(K, "shared memory", shared)?;
    let f = gpu.function(names[nt - 1])?;
    let fit = launch::occupancy(f, MV_WARPS * 32, shared_bytes)?;
    if fit == 0 {
        return Err(invalid(
            names[nt - 1],
            format!("a CTA with {shared} bytes of shared memory does not fit an SM"),
        ));
    }
    let per_sm = fit.min(matvec_ctas_per_sm());
    let grid = grid_for(to_u64(rows), MV_WARPS, sm_count(gpu)? * per_sm);
    Ok(MatvecPlan {
        grid,
        shared_bytes,
        tile_blocks: to_u32(K, "tile", tb)?,
        slot_bytes: to_u32(K, "slot", slot)?,
    })
}

/// `y[t][r] = dot(W[r], x[t])` for `t < n_tok`, `r < rows`: `w` is a `rows x cols` GGUF matrix
/// of type `wty`, `xq` the `n_tok` activation rows as [`quantize`] wrote them, `y` `f32`
/// `[n_tok][rows]`. Up to 8 activation rows share one pass over the weights; more are done
/// in groups of 8.
///
/// Matches [`crate::quant::matmul`] up to the `f32` rounding of the sum across blocks (the
/// integer block sums are the CPU's).
#[allow(clippy::too_many_arguments)]
pub fn matvec(
    gpu: &Gpu,
    wty: GgmlType,
    w: DevSpan,
    rows: usize,
    cols: usize,
    xq: DevSpan,
    n_tok: usize,
    y: DevSpan,
) -> Result<()> {
    const K: &str = "matvec";
    nonzero(K, "rows", rows)?;
    nonzero(K, "cols", cols)?;
    nonzero(K, "n_tok", n_tok)?;
    let xrow = activation_row_bytes(wty, cols)?;
    let rb = row_bytes(K, wty, cols)?;
    let w_bytes = mul(K, rows, rb)?;
    w.need(K, "weights", w_bytes)?;
    xq.need(K, "activations", mul(K, n_tok, xrow)?)?;
    let y_row = mul(K, rows, 4)?;
    y.need(K, "output", mul(K, n_tok, y_row)?)?;
    aligned(K, "y", y, 4)?;
    let rows32 = to_u32(K, "rows", rows)?;
    let cols32 = to_u32(K, "cols", cols)?;
    let quantized = names::matvec_quant(wty).is_some();
    if quantized {
        aligned(K, "w", w, 16)?;
        aligned(K, "xq", xq, 16)?;
    } else {
        let (_, es) = layout(K, wty)?;
        aligned(K, "w", w, to_u64(es))?;
        aligned(K, "xq", xq, to_u64(es))?;
    }
    if quantized && n_tok == 1 && super::fast::try_matvec_n1(gpu, wty, w, rows, cols, xq, y)? {
        return Ok(());
    }
    let mut t0 = 0;
    while t0 < n_tok {
        let nt = (n_tok - t0).min(MAX_ROWS_PER_LAUNCH);
        let xs = xq.sub(t0 * xrow, nt * xrow)?;
        let ys = y.sub(t0 * y_row, nt * y_row)?;
        if quantized {
            matvec_quant(gpu, wty, w, w_bytes, rows, cols, xs, nt, ys)?;
        } else {
            matvec_float(gpu, wty, w, rows32, cols32, xs, nt, ys)?;
        }
        t0 += nt;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn matvec_quant(
    gpu: &Gpu,
    wty: GgmlType,
    w: DevSpan,
    w_bytes: usize,
    rows: usize,
    cols: usize,
    xq: DevSpan,
    nt: usize,
    y: DevSpan,
) -> Result<()> {
    const K: &str = "matvec";
    let plan = matvec_plan(gpu, wty, rows, cols, nt)?;
    let names =
        names::matvec_quant(wty).ok_or_else(|| GpuError::Unsupported(format!("{wty:?}")))?;
    let (block, _) = layout(K, wty)?;
    let cfg = LaunchConfig {
        grid_dim: (plan.grid, 1, 1),
        block_dim: (MV_WARPS * 32, 1, 1),
        shared_mem_bytes: plan.shared_bytes,
    };
    let (wp, w_len) = (w.ptr(), to_u64(w_bytes));
    let rows32 = to_u32(K, "rows", rows)?;
    let nb = to_u32(K, "blocks per row", cols / block)?;
    let (xp, x_len) = (xq.ptr(), to_u64(xq.len()));
    let x_row = to_u64(xq.len() / nt);
    let yp = y.ptr();
    let (tb, slot) = (plan.tile_blocks, plan.slot_bytes);
    launch!(
        gpu,
        names[nt - 1],
        cfg,
        wp,
        w_len,
        rows32,
        nb,
        xp,
        x_len,
        x_row,
        yp,
        tb,
        slot
    )
}

#[allow(clippy::too_many_arguments)]
fn matvec_float(
    gpu: &Gpu,
    wty: GgmlType,
    w: DevSpan,
    rows: u32,
    cols: u32,
    x: DevSpan,
    nt: usize,
    y: DevSpan,
) -> Result<()> {
    let (_, es) = layout("matvec", wty)?;
    let vec = 16 / es;
    // 16-byte loads need 16-byte aligned rows
    let wide = cols as usize % vec == 0 && w.ptr() % 16 == 0 && x.ptr() % 16 == 0;
    let names = names::matvec_float(wty, wide)
        .ok_or_else(|| GpuError::Unsupported(format!("{wty:?} has no matvec")))?;
    let cfg = LaunchConfig {
        grid_dim: (grid_for(u64::from(rows), 4, sm_count(gpu)? * 16), 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let (wp, xp, yp) = (w.ptr(), x.ptr(), y.ptr());
    launch!(gpu, names[nt - 1], cfg, wp, rows, cols, xp, yp)
}

/// Whether [`get_rows`] looks up rows of `ty` on the GPU.
pub fn rows_supported(ty: GgmlType) -> bool {
    names::dequant(ty).is_some()
}

/// `out[i] = ` row `ids[i]` of the `rows x cols` table of type `wty`, dequantized to `f32`
/// (`out` is `[n][cols]`), bit-identical to [`crate::quant::dequantize`] of that row (NaN
/// payloads included). Ids are `i32`; an id outside `0..rows` reads nothing and yields a row of
/// zeros (the CPU engine rejects such ids before the lookup).
#[allow(clippy::too_many_arguments)]
pub fn get_rows(
    gpu: &Gpu,
    wty: GgmlType,
    table: DevSpan,
    rows: usize,
    cols: usize,
    ids: DevSpan,
    n: usize,
    out: DevSpan,
) -> Result<()> {
    const K: &str = "get_rows";
    nonzero(K, "rows", rows)?;
    nonzero(K, "cols", cols)?;
    nonzero(K, "n", n)?;
    let (name, _) =
        names::dequant(wty).ok_or_else(|| GpuError::Unsupported(format!("{wty:?} row lookup")))?;
    let rb = row_bytes(K, wty, cols)?;
    table.need(K, "table", mul(K, rows, rb)?)?;
    ids.need(K, "ids", mul(K, n, 4)?)?;
    let total = mul(K, n, cols)?;
    out.need(K, "output", mul(K, total, 4)?)?;
    aligned(K, "ids", ids, 4)?;
    aligned(K, "out", out, 4)?;
    let rows32 = to_u32(K, "rows", rows)?;
    let cols32 = to_u32(K, "cols", cols)?;
    let n32 = to_u32(K, "n", n)?;
    let cfg = LaunchConfig {
        grid_dim: (grid_for(to_u64(total), 256, sm_count(gpu)? * 16), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (tp, ip, op) = (table.ptr(), ids.ptr(), out.ptr());
    launch!(gpu, name, cfg, tp, rows32, cols32, ip, n32, op)
}

/// Dequantizes `n_elems` elements of type `ty` (whole blocks) from `src` into `out` as `F32`
/// or `F16` (`out_ty`; `F16` rounds to nearest even). `F32` output is bit-identical to
/// [`crate::quant::dequantize`].
pub fn dequantize(
    gpu: &Gpu,
    ty: GgmlType,
    src: DevSpan,
    n_elems: usize,
    out: DevSpan,
    out_ty: GgmlType,
) -> Result<()> {
    const K: &str = "dequantize";
    nonzero(K, "n_elems", n_elems)?;
    let (_, name) =
        names::dequant(ty).ok_or_else(|| GpuError::Unsupported(format!("{ty:?} dequantize")))?;
    let (es, f16) = match out_ty {
        GgmlType::F32 => (4, 0u32),
        GgmlType::F16 => (2, 1u32),
        other => return Err(invalid(K, format!("output type {other:?} (F32 or F16)"))),
    };
    src.need(K, "source", row_bytes(K, ty, n_elems)?)?;
    out.need(K, "output", mul(K, n_elems, es)?)?;
    aligned(K, "out", out, to_u64(es))?;
    let n = to_u64(n_elems);
    let cfg = LaunchConfig {
        grid_dim: (grid_for(n, 256, sm_count(gpu)? * 16), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (sp, op) = (src.ptr(), out.ptr());
    launch!(gpu, name, cfg, sp, n, op, f16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The activation tile always fits its shared memory, leaves the slack the kernels
    /// over-read into, and covers whole rows whenever one token's row fits.
    #[test]
    fn tiles_fit_shared_memory() {
        for xbs in [34usize, 36, 292] {
            let block = if xbs == 292 { 256 } else { 32 };
            for nt in 1..=MAX_ROWS_PER_LAUNCH {
                for cols in (block..=65536).step_by(block * 7) {
                    let nb = cols / block;
                    let (tb, slot) = tile(nt, nb, xbs);
                    assert!(tb >= 1 && tb <= nb, "{xbs} {nt} {cols}: {tb}");
                    assert_eq!(slot % 16, 0);
                    assert!(tb * xbs + 30 + 4 <= slot, "{xbs} {nt} {cols}");
                    assert!(nt * slot <= MV_ACT_CAP, "{xbs} {nt} {cols}");
                    let shared = nt * slot + MV_WARPS as usize * 2 * MV_WIN;
                    assert!(shared <= 48 * 1024, "{shared}");
                }
            }
        }
        // decode of the largest matrices of the target models: one tile
        for xbs in [34usize, 36, 292] {
            let block = if xbs == 292 { 256 } else { 32 };
            let nb = 28672 / block;
            assert_eq!(tile(1, nb, xbs).0, nb, "{xbs}");
        }
    }
}
