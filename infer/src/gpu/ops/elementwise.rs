//! RMSNorm, RoPE, KV-cache stores and the element-wise ops.

use super::launch::{invalid, launch, product, stride_blocks, to_i32, to_u32, to_u64, Arg};
use crate::config::RopeMode;
use crate::gpu::{DevSpan, Gpu, Result};

const F32: usize = 4;
const F16: usize = 2;

/// `x` and `out` hold `rows` rows of `n` floats, `w` holds `n`.
fn check_norm(
    kernel: &'static str,
    x: DevSpan,
    w: DevSpan,
    out: DevSpan,
    rows: usize,
    n: usize,
) -> Result<()> {
    let bytes = product(kernel, "x", &[rows, n, F32])?;
    x.need(kernel, "x", bytes)?;
    out.need(kernel, "out", bytes)?;
    w.need(kernel, "w", n * F32)
}

/// RMSNorm of `rows` rows of `n` floats of `x` into `out` (which may be `x`), times `w`, as
/// [`crate::ops::rms_norm`]: sum of squares in `f64`, equal to the CPU except when the two
/// summation orders round the mean differently (about 1 row in 10^8).
pub fn rms_norm(
    gpu: &Gpu,
    x: DevSpan,
    w: DevSpan,
    out: DevSpan,
    rows: usize,
    n: usize,
    eps: f32,
) -> Result<()> {
    const K: &str = "ops_rms_norm";
    if n == 0 {
        return Err(invalid(K, "rows of width 0"));
    }
    check_norm(K, x, w, out, rows, n)?;
    if rows == 0 {
        return Ok(());
    }
    let grid = u32::try_from(rows)
        .ok()
        .filter(|&g| g <= 0x7fff_ffff)
        .ok_or_else(|| invalid(K, format!("{rows} rows exceed the grid")))?;
    let args = [
        Arg::Ptr(x.ptr()),
        Arg::Ptr(w.ptr()),
        Arg::Ptr(out.ptr()),
        Arg::I32(to_i32(K, "n", n)?),
        Arg::F32(eps),
    ];
    // SAFETY: (x, w, out, int n, float eps) as the kernel declares; block r reads x and writes
    // out at [r·n, (r+1)·n) for r < rows, both checked to hold rows·n floats, and reads n
    // floats of w, checked.
    unsafe { launch(gpu, K, (grid, 1, 1), 256, &args) }
}

/// [`rms_norm`] fused with the `Q8_K` quantization of its result ([`crate::gpu::quant::quantize`]
/// for a `Q4_K`/`Q6_K` weight): `out` gets exactly what [`rms_norm`] writes and `xq` exactly
/// what quantizing it writes (`n / 256` blocks per row of `xbs` bytes: 292, the layout of
/// [`crate::gpu::quant::quantize`], or 304, the decode products' layout with 16-byte aligned
/// quants); `n` a multiple of 256.
#[allow(clippy::too_many_arguments)] // rms_norm's arguments and the quantized output
pub fn rms_norm_q8k(
    gpu: &Gpu,
    x: DevSpan,
    w: DevSpan,
    out: DevSpan,
    (xq, xbs): (DevSpan, usize),
    rows: usize,
    n: usize,
    eps: f32,
) -> Result<()> {
    const K: &str = "ops_rms_norm_q8k";
    if n == 0 || n % 256 != 0 {
        return Err(invalid(
            K,
            format!("rows of width {n} (a multiple of 256 is needed)"),
        ));
    }
    check_norm(K, x, w, out, rows, n)?;
    let (align, xbs32) =
        crate::gpu::fast::x_layout(xbs).ok_or_else(|| invalid(K, format!("{xbs}-byte blocks")))?;
    xq.need(K, "xq", product(K, "xq", &[rows, n / 256, xbs])?)?;
    if xq.ptr() % align != 0 || x.ptr() == out.ptr() {
        return Err(invalid(
            K,
            "xq must be aligned for its blocks and out apart from x",
        ));
    }
    if rows == 0 {
        return Ok(());
    }
    let grid_y = u32::try_from(rows)
        .ok()
        .filter(|&g| g <= 65535)
        .ok_or_else(|| invalid(K, format!("{rows} rows exceed the grid")))?;
    let args = [
        Arg::Ptr(x.ptr()),
        Arg::Ptr(w.ptr()),
        Arg::Ptr(out.ptr()),
        Arg::Ptr(xq.ptr()),
        Arg::I32(to_i32(K, "n", n)?),
        Arg::F32(eps),
        Arg::U32(xbs32),
    ];
    let grid_x = to_u32(K, "blocks", n / 256)?;
    // SAFETY: (x, w, out, xq, int n, float eps, u32 xbs) as the kernel declares; block (b, r)
    // reads row r of x (n floats), writes out at r·n + 256b .. + 256 and xq block b of row r
    // (xbs bytes at (r·(n/256) + b)·xbs) for b < n/256, r < rows: x, out hold rows·n floats,
    // xq rows·(n/256) blocks, w n floats (all checked).
    unsafe { launch(gpu, K, (grid_x, grid_y, 1), 256, &args) }
}

/// Rotate in place the first `n_rot` dims of each `head_dim`-wide head of `x`
/// (`[n_tok][n_heads · head_dim]`), token `i` at position `pos0 + i`, as
/// [`crate::ops::rope_cache`] + [`crate::ops::rope_apply`]: theta in `f32`, multiplied by
/// `theta_scale` pair after pair; `factors` (llama3 `rope_freqs`, `n_rot / 2` floats) divide
/// theta. cos/sin are computed in `f64` and rounded, so results are within 1 ulp of the CPU's.
#[allow(clippy::too_many_arguments)] // the RoPE hyper-parameters, as the CPU op takes them
pub fn rope(
    gpu: &Gpu,
    x: DevSpan,
    n_tok: usize,
    n_heads: usize,
    head_dim: usize,
    n_rot: usize,
    pos0: usize,
    base: f32,
    freq_scale: f32,
    factors: Option<DevSpan>,
    mode: RopeMode,
) -> Result<()> {
    const K: &str = "ops_rope";
    if n_rot % 2 != 0 || n_rot > head_dim || n_rot > 256 {
        return Err(invalid(
            K,
            format!("n_rot {n_rot} must be even, ≤ head_dim {head_dim} and ≤ 256"),
        ));
    }
    x.need(K, "x", product(K, "x", &[n_tok, n_heads, head_dim, F32])?)?;
    if let Some(f) = factors {
        f.need(K, "rope factors", n_rot / 2 * F32)?;
    }
    if pos0
        .checked_add(n_tok)
        .and_then(|e| u32::try_from(e).ok())
        .is_none()
    {
        return Err(invalid(K, format!("positions {pos0}+{n_tok} exceed u32")));
    }
    if n_tok == 0 || n_heads == 0 || n_rot == 0 {
        return Ok(());
    }
    to_i32(
        K,
        "heads × head_dim",
        product(K, "heads", &[n_heads, head_dim])?,
    )?;
    let theta_scale = rope_theta_scale(base, n_rot);
    let args = [
        Arg::Ptr(x.ptr()),
        Arg::I32(to_i32(K, "n_heads", n_heads)?),
        Arg::I32(to_i32(K, "head_dim", head_dim)?),
        Arg::I32(to_i32(K, "n_rot", n_rot)?),
        Arg::U32(to_u32(K, "pos0", pos0)?),
        Arg::F32(theta_scale),
        Arg::F32(freq_scale),
        Arg::Ptr(factors.map_or(0, |f| f.ptr())),
        Arg::I32(i32::from(mode == RopeMode::Neox)),
    ];
    // SAFETY: (x, int n_heads, int head_dim, int n_rot, u32 pos0, float theta_scale, float
    // freq_scale, const float* factors, int neox) as declared; block t touches
    // x[t·n_heads·head_dim ..][< n_heads·head_dim] for t < n_tok (checked), factors[< n_rot/2]
    // when non-null (checked); n_rot/2 ≤ 128 fits the kernel's cos/sin arrays.
    unsafe { launch(gpu, K, (to_u32(K, "n_tok", n_tok)?, 1, 1), 1024, &args) }
}

/// Store rows `pos0..pos0 + n_tok` of the `f16` caches (`[n_ctx][width]`) from `f32` `k`, `v`
/// (`[n_tok][width]`), rounded to nearest even as `half::f16::from_f32`.
#[allow(clippy::too_many_arguments)] // two sources, two caches, their shape
pub fn kv_store(
    gpu: &Gpu,
    k: DevSpan,
    v: DevSpan,
    k_cache: DevSpan,
    v_cache: DevSpan,
    n_ctx: usize,
    width: usize,
    pos0: usize,
    n_tok: usize,
) -> Result<()> {
    const K: &str = "ops_kv_store";
    let end = pos0
        .checked_add(n_tok)
        .ok_or_else(|| invalid(K, "position overflow"))?;
    if end > n_ctx {
        return Err(invalid(
            K,
            format!("positions {pos0}..{end} past the cache's {n_ctx}"),
        ));
    }
    let src = product(K, "k", &[n_tok, width, F32])?;
    k.need(K, "k", src)?;
    v.need(K, "v", src)?;
    let cache = product(K, "cache", &[n_ctx, width, F16])?;
    k_cache.need(K, "k cache", cache)?;
    v_cache.need(K, "v cache", cache)?;
    let total = n_tok * width;
    if total == 0 {
        return Ok(());
    }
    let args = [
        Arg::Ptr(k.ptr()),
        Arg::Ptr(v.ptr()),
        Arg::Ptr(k_cache.ptr()),
        Arg::Ptr(v_cache.ptr()),
        Arg::U64(to_u64(pos0 * width)),
        Arg::U64(to_u64(total)),
    ];
    // SAFETY: (k, v, kc, vc, u64 dst0, u64 total) as declared; reads k, v at [0, total) (checked:
    // n_tok·width floats), writes the caches at [pos0·width, end·width) ⊆ [0, n_ctx·width)
    // halves (checked).
    unsafe { launch(gpu, K, (stride_blocks(total, 256), 1, 1), 256, &args) }
}

/// The factor between the angles of successive rotation pairs, `base^(-2 / n_rot)`, as
/// `ops::rope_cache` computes it (the kernels take it from the host).
pub(crate) fn rope_theta_scale(base: f32, n_rot: usize) -> f32 {
    #[allow(clippy::cast_precision_loss)] // exactly as ops::rope_cache computes it
    base.powf(-2.0 / n_rot as f32)
}

/// [`rope`] of the query heads (`q`, `[n_tok][n_head · head_dim]`) and key heads (`k`,
/// `[n_tok][n_head_kv · head_dim]`) fused with [`kv_store`] of the rotated `k` and of `v` at
/// rows `pos0..pos0 + n_tok` of the `f16` caches (`[n_ctx][n_head_kv · head_dim]`): the same
/// arithmetic, so the same bits as the three separate launches.
#[allow(clippy::too_many_arguments)] // the RoPE hyper-parameters and the cache
pub fn rope_kv(
    gpu: &Gpu,
    (q, k, v): (DevSpan, DevSpan, DevSpan),
    (k_cache, v_cache): (DevSpan, DevSpan),
    n_ctx: usize,
    n_tok: usize,
    (n_head, n_head_kv, head_dim, n_rot): (usize, usize, usize, usize),
    pos0: usize,
    (base, freq_scale): (f32, f32),
    factors: Option<DevSpan>,
    mode: RopeMode,
) -> Result<()> {
    const K: &str = "ops_rope_kv";
    if n_rot % 2 != 0 || n_rot > head_dim || n_rot > 256 || n_rot == 0 {
        return Err(invalid(
            K,
            format!("n_rot {n_rot} must be even, > 0, ≤ head_dim {head_dim} and ≤ 256"),
        ));
    }
    let end = pos0
        .checked_add(n_tok)
        .filter(|&e| u32::try_from(e).is_ok())
        .ok_or_else(|| invalid(K, "position overflow"))?;
    if end > n_ctx {
        return Err(invalid(
            K,
            format!("positions {pos0}..{end} past the cache's {n_ctx}"),
        ));
    }
    let kvw = product(K, "kv width", &[n_head_kv, head_dim])?;
    q.need(K, "q", product(K, "q", &[n_tok, n_head, head_dim, F32])?)?;
    k.need(K, "k", product(K, "k", &[n_tok, kvw, F32])?)?;
    v.need(K, "v", product(K, "v", &[n_tok, kvw, F32])?)?;
    let cache = product(K, "cache", &[n_ctx, kvw, F16])?;
    k_cache.need(K, "k cache", cache)?;
    v_cache.need(K, "v cache", cache)?;
    if let Some(f) = factors {
        f.need(K, "rope factors", n_rot / 2 * F32)?;
    }
    to_i32(K, "q width", product(K, "q width", &[n_head, head_dim])?)?;
    if n_tok == 0 {
        return Ok(());
    }
    let theta_scale = rope_theta_scale(base, n_rot);
    let args = [
        Arg::Ptr(q.ptr()),
        Arg::Ptr(k.ptr()),
        Arg::Ptr(v.ptr()),
        Arg::Ptr(k_cache.ptr()),
        Arg::Ptr(v_cache.ptr()),
        Arg::I32(to_i32(K, "n_head", n_head)?),
        Arg::I32(to_i32(K, "n_head_kv", n_head_kv)?),
        Arg::I32(to_i32(K, "head_dim", head_dim)?),
        Arg::I32(to_i32(K, "n_rot", n_rot)?),
        Arg::U32(to_u32(K, "pos0", pos0)?),
        Arg::F32(theta_scale),
        Arg::F32(freq_scale),
        Arg::Ptr(factors.map_or(0, |f| f.ptr())),
        Arg::I32(i32::from(mode == RopeMode::Neox)),
    ];
    let heads = to_u32(K, "heads", n_head + n_head_kv)?;
    let toks = to_u32(K, "n_tok", n_tok)?;
    if toks > 65535 {
        return Err(invalid(K, format!("{n_tok} tokens exceed the grid")));
    }
    // SAFETY: (q, k, v, kc, vc, int n_head, int n_head_kv, int head_dim, int n_rot, u32 pos0,
    // float theta_scale, float freq_scale, const float* factors, int neox) as declared; block
    // (h, t) touches head h of token t of q (h < n_head) or of k and v (h - n_head <
    // n_head_kv), all checked to hold n_tok rows, cache row pos0 + t < n_ctx (checked), and
    // factors[< n_rot/2] when non-null (checked); n_rot/2 ≤ 128 fits the cos/sin arrays.
    unsafe { launch(gpu, K, (heads, toks, 1), 128, &args) }
}

/// Check an element-wise launch: `n` floats at `a`, `b_len` at `b`.
fn check_pair(kernel: &'static str, a: DevSpan, b: DevSpan, n: usize, b_len: usize) -> Result<()> {
    let bytes = product(kernel, "n", &[n, F32])?;
    a.need(kernel, "destination", bytes)?;
    b.need(kernel, "operand", b_len * F32)?;
    Ok(())
}

/// `g ← silu(g) · u` over `n` floats, as [`crate::ops::swiglu`] (`expf` within 2 ulp of the CPU's
/// `exp`).
pub fn swiglu(gpu: &Gpu, g: DevSpan, u: DevSpan, n: usize) -> Result<()> {
    const K: &str = "ops_swiglu";
    check_pair(K, g, u, n, n)?;
    if n == 0 {
        return Ok(());
    }
    let args = [Arg::Ptr(g.ptr()), Arg::Ptr(u.ptr()), Arg::U64(to_u64(n))];
    // SAFETY: (g, u, u64 n) as declared; both hold n floats (checked).
    unsafe { launch(gpu, K, (stride_blocks(n, 256), 1, 1), 256, &args) }
}

/// `x += y` over `n` floats.
pub fn add(gpu: &Gpu, x: DevSpan, y: DevSpan, n: usize) -> Result<()> {
    const K: &str = "ops_add";
    check_pair(K, x, y, n, n)?;
    if n == 0 {
        return Ok(());
    }
    let args = [Arg::Ptr(x.ptr()), Arg::Ptr(y.ptr()), Arg::U64(to_u64(n))];
    // SAFETY: (x, y, u64 n) as declared; both hold n floats (checked).
    unsafe { launch(gpu, K, (stride_blocks(n, 256), 1, 1), 256, &args) }
}

/// `dst[i] = src[i]` for `n` 4-byte words, by the SMs (no copy engine): the hidden state's hop
/// through page-locked host memory mapped into the device (see `GpuEngine`'s CPU layers).
pub fn copy_words(gpu: &Gpu, dst: DevSpan, src: DevSpan, n: usize) -> Result<()> {
    const K: &str = "ops_copy";
    check_pair(K, dst, src, n, n)?;
    if n == 0 {
        return Ok(());
    }
    let args = [
        Arg::Ptr(dst.ptr()),
        Arg::Ptr(src.ptr()),
        Arg::U64(to_u64(n)),
    ];
    // SAFETY: (dst, src, u64 n) as declared; both hold n 4-byte words (checked).
    unsafe { launch(gpu, K, (stride_blocks(n, 256), 1, 1), 256, &args) }
}

/// `x[r] += b` for each of `rows` rows of `n` floats.
pub fn add_bias(gpu: &Gpu, x: DevSpan, b: DevSpan, rows: usize, n: usize) -> Result<()> {
    const K: &str = "ops_add_bias";
    let total = product(K, "x", &[rows, n])?;
    check_pair(K, x, b, total, n)?;
    if total == 0 {
        return Ok(());
    }
    let args = [
        Arg::Ptr(x.ptr()),
        Arg::Ptr(b.ptr()),
        Arg::U64(to_u64(n)),
        Arg::U64(to_u64(total)),
    ];
    // SAFETY: (x, b, u64 n, u64 total) as declared; x holds rows·n floats, b holds n (checked).
    unsafe { launch(gpu, K, (stride_blocks(total, 256), 1, 1), 256, &args) }
}
