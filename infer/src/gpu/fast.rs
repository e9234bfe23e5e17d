//! Launch wrappers for `kernels/fast.cu`: the decode (one-token) products for `Q4_K` and
//! `Q6_K` weights (most of a `Q4_K_M` model), one warp per row (two, 16 lanes each, where that
//! puts a launch in one wave of blocks: [`two_rows`]) and four lanes per super-block
//! (64 weights a lane), 16-byte (`Q4_K`) or aligned 4-byte (`Q6_K`, 210-byte blocks) loads
//! straight from global memory, the first super-block's before the wait for the earlier kernel
//! (programmatic dependent launch), and the fused forms the engine uses per layer: up to three
//! products with the same activations in one launch (Q, K, V) with RoPE and the KV-cache store
//! in its epilogue ([`RopeKv`]), products added to the residual stream, and gate/up products
//! with SwiGLU in one launch. The activations are `Q8_K` blocks in the CPU's layout
//! ([`XBS_CPU`]) or the decode layout ([`XBS_DECODE`], 16-byte aligned quants, which the fused
//! layer writes).
//! [`crate::gpu::quant::matvec`] takes this path for one activation row unless
//! `LLMSTREAM_FAST_MV=0`. Per-kernel times (`scripts/gpu/kernel-times.sh`,
//! `scripts/gpu/timeline.sh`) and the variants measured and not kept (shared-memory streaming
//! by bulk copies, L2 prefetch, last-block tails, restaged activations, batched loads, several
//! warps per row): docs/gpu-inference.md.

use super::mem::DevSpan;
use super::ops::launch::{invalid, launch, Arg};
use super::{Gpu, Result};
use llmstream::gguf::GgmlType;
use std::sync::OnceLock;

/// Kernel names defined in `kernels/fast.cu`.
pub(crate) const KERNELS: &[&str] = &["fast_mv", "fast_mv2", "fast_gate_up", "quant_act_q8_k16"];

/// Warps per block (`FAST_WARPS`).
const WARPS: u32 = 8;

/// Whether the fast kernels are on (`LLMSTREAM_FAST_MV=0` turns them off).
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("LLMSTREAM_FAST_MV").map_or(true, |v| v != "0"))
}

/// Type code and super-block bytes of a weight type the fast kernels take.
fn code(ty: GgmlType) -> Option<(u32, usize)> {
    match ty {
        GgmlType::Q4_K => Some((0, 144)),
        GgmlType::Q6_K => Some((1, 210)),
        _ => None,
    }
}

/// Whether weights of `ty` at `addr` are aligned for the fast kernels: 16 bytes for `Q4_K`
/// (16-byte loads), 4 for `Q6_K` (aligned 4-byte loads, which stay inside the matrix when it
/// starts on a 4-byte boundary: a super-block starts 0 or 2 bytes past one).
pub(crate) fn aligned(ty: GgmlType, addr: u64) -> bool {
    match code(ty) {
        Some((0, _)) => addr % 16 == 0,
        Some(_) => addr % 4 == 0,
        None => false,
    }
}

/// Whether a `rows x cols` matrix of `ty` has a fast kernel (`Q4_K`/`Q6_K`, whole
/// super-blocks per row), and the fast kernels are on.
pub(crate) fn supports(ty: GgmlType, cols: usize) -> bool {
    enabled() && code(ty).is_some() && cols % 256 == 0 && cols > 0
}

/// One product of a fused launch: `y (+)= W x`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Product {
    /// Weight type (`Q4_K` or `Q6_K`).
    pub ty: GgmlType,
    /// Weights, `rows` rows of `cols / 256` super-blocks.
    pub w: DevSpan,
    /// Rows.
    pub rows: usize,
    /// Output, `rows` floats.
    pub y: DevSpan,
    /// Add to `y` instead of storing.
    pub accumulate: bool,
}

/// RoPE (normal mode: pairs of adjacent elements) and the `f16` KV-cache store of one token in
/// the epilogue of its Q, K, V products: what [`crate::gpu::ops::rope_kv`] does after them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RopeKv {
    /// The layer's caches, `[n_ctx][n_head_kv · head_dim]` halves each.
    pub k_cache: DevSpan,
    pub v_cache: DevSpan,
    pub n_ctx: usize,
    /// The token's position.
    pub pos: usize,
    pub head_dim: usize,
    pub n_rot: usize,
    /// `rope_freq_base`, `rope_freq_scale`.
    pub base: f32,
    pub freq_scale: f32,
    /// llama3 frequency factors (`n_rot / 2` floats).
    pub factors: Option<DevSpan>,
}

/// Check one product against `cols` columns; its type code.
fn check(kernel: &'static str, p: &Product, cols: usize) -> Result<u32> {
    let (c, block) = code(p.ty).ok_or_else(|| invalid(kernel, format!("type {:?}", p.ty)))?;
    if cols % 256 != 0 || cols == 0 {
        return Err(invalid(kernel, format!("{cols} columns")));
    }
    p.w.need(kernel, "weights", p.rows * (cols / 256) * block)?;
    p.y.need(kernel, "output", p.rows * 4)?;
    if !aligned(p.ty, p.w.ptr()) || p.y.ptr() % 4 != 0 {
        return Err(invalid(kernel, "misaligned span"));
    }
    u32::try_from(p.rows).map_err(|_| invalid(kernel, format!("{} rows", p.rows)))?;
    Ok(c)
}

/// Bytes of a `Q8_K` activation block in the CPU's layout (f32 scale, 256 quants, 16 block
/// sums): what [`crate::gpu::quant::quantize`] writes.
pub(crate) const XBS_CPU: usize = 292;
/// Bytes of a `Q8_K` activation block in the decode layout: the scale, 12 zero bytes, then the
/// quants (16-byte aligned, so the products load them 16 bytes at a time) and the sums. What
/// [`quantize_decode`] and the fused normalisation write.
pub(crate) const XBS_DECODE: usize = 304;

/// The alignment a `Q8_K` activation row of `xbs`-byte blocks needs, and `xbs` as the
/// kernels take it; `None` for a size that is neither layout.
pub(crate) fn x_layout(xbs: usize) -> Option<(u64, u32)> {
    match xbs {
        XBS_CPU => Some((4, 292)),
        XBS_DECODE => Some((16, 304)),
        _ => None,
    }
}

/// Check a `Q8_K` activation row of `nsb` blocks of `xbs` bytes.
fn check_x(kernel: &'static str, xq: DevSpan, nsb: usize, xbs: usize) -> Result<u32> {
    let (align, xbs32) =
        x_layout(xbs).ok_or_else(|| invalid(kernel, format!("{xbs}-byte activation blocks")))?;
    xq.need(kernel, "activations", nsb * xbs)?;
    if xq.ptr() % align != 0 {
        return Err(invalid(kernel, "misaligned activations"));
    }
    Ok(xbs32)
}

/// Up to three products with the same Q8_K activation row `xq` (`cols / 256` blocks of `xbs`
/// bytes: [`XBS_CPU`] or [`XBS_DECODE`]) in one launch.
pub(crate) fn matvecs(
    gpu: &Gpu,
    xq: DevSpan,
    xbs: usize,
    cols: usize,
    products: &[Product],
) -> Result<()> {
    self::products(gpu, xq, xbs, cols, products, None)
}

/// The rope arguments of `fast_mv` (kc, vc, pos, hd | n_rot << 16, theta_scale,
/// freq_scale, factors): zeros without `rope`, else checked against the three products (Q, K,
/// V: whole heads, none added to its output).
fn rope_args(k: &'static str, rope: Option<&RopeKv>, products: &[Product]) -> Result<[Arg; 7]> {
    let Some(r) = rope else {
        return Ok([
            Arg::Ptr(0),
            Arg::Ptr(0),
            Arg::U32(0),
            Arg::U32(0),
            Arg::F32(0.0),
            Arg::F32(0.0),
            Arg::Ptr(0),
        ]);
    };
    let hd = r.head_dim;
    let [q, kp, v] = products else {
        return Err(invalid(k, format!("RoPE with {} products", products.len())));
    };
    let whole = |p: &Product| hd > 0 && p.rows % hd == 0 && !p.accumulate;
    if hd % 2 != 0
        || hd >= 1 << 15
        || r.n_rot == 0
        || r.n_rot % 2 != 0
        || r.n_rot > hd
        || !(whole(q) && whole(kp) && whole(v))
        || kp.rows != v.rows
    {
        return Err(invalid(
            k,
            format!(
                "RoPE of head_dim {hd}, n_rot {} over {}/{}/{} rows",
                r.n_rot, q.rows, kp.rows, v.rows
            ),
        ));
    }
    let pos = u32::try_from(r.pos)
        .ok()
        .filter(|_| r.pos < r.n_ctx)
        .ok_or_else(|| {
            invalid(
                k,
                format!("position {} past the cache's {}", r.pos, r.n_ctx),
            )
        })?;
    let dims = u32::try_from(hd | r.n_rot << 16).map_err(|_| invalid(k, "head_dim"))?;
    let cache = r
        .n_ctx
        .checked_mul(kp.rows * 2)
        .ok_or_else(|| invalid(k, "cache size overflow"))?;
    r.k_cache.need(k, "k cache", cache)?;
    r.v_cache.need(k, "v cache", cache)?;
    if r.k_cache.ptr() % 2 != 0 || r.v_cache.ptr() % 2 != 0 {
        return Err(invalid(k, "misaligned cache"));
    }
    if let Some(f) = r.factors {
        f.need(k, "rope factors", r.n_rot / 2 * 4)?;
    }
    Ok([
        Arg::Ptr(r.k_cache.ptr()),
        Arg::Ptr(r.v_cache.ptr()),
        Arg::U32(pos),
        Arg::U32(dims),
        Arg::F32(crate::gpu::ops::rope_theta_scale(r.base, r.n_rot)),
        Arg::F32(r.freq_scale),
        Arg::Ptr(r.factors.map_or(0, |f| f.ptr())),
    ])
}

/// Up to three products with the same Q8_K activation row `xq` (`cols / 256` blocks of `xbs`
/// bytes) in one launch, with RoPE and the KV-cache store of [`RopeKv`] in its epilogue when
/// given (then the products are Q, K and V).
pub(crate) fn products(
    gpu: &Gpu,
    xq: DevSpan,
    xbs: usize,
    cols: usize,
    products: &[Product],
    rope: Option<&RopeKv>,
) -> Result<()> {
    const K: &str = "fast_mv";
    if products.is_empty() || products.len() > 3 {
        return Err(invalid(K, format!("{} products", products.len())));
    }
    let nsb = cols / 256;
    let xbs32 = check_x(K, xq, nsb, xbs)?;
    let mut segs = [Arg::Ptr(0), Arg::Ptr(0), Arg::U32(0)].repeat(3);
    let mut flags = 0u32;
    let mut total = 0u64;
    for (i, p) in products.iter().enumerate() {
        let c = check(K, p, cols)?;
        let rows = u32::try_from(p.rows).map_err(|_| invalid(K, format!("{} rows", p.rows)))?;
        segs[3 * i] = Arg::Ptr(p.w.ptr());
        segs[3 * i + 1] = Arg::Ptr(p.y.ptr());
        segs[3 * i + 2] = Arg::U32(rows);
        flags |= c << (2 * i);
        if p.accumulate {
            flags |= 1 << (8 + i);
        }
        total += u64::from(rows);
    }
    let total = u32::try_from(total).map_err(|_| invalid(K, format!("{total} rows")))?;
    let rope = rope_args(K, rope, products)?;
    if total == 0 {
        return Ok(());
    }
    let two = two_rows(gpu, u64::from(total))?;
    let name = if two { "fast_mv2" } else { K };
    let rpb = if two { 2 * WARPS } else { WARPS };
    let nsb32 = u32::try_from(nsb).map_err(|_| invalid(K, format!("{nsb} blocks")))?;
    let mut args = Vec::with_capacity(21);
    args.extend([Arg::Ptr(xq.ptr()), Arg::U32(nsb32)]);
    args.extend_from_slice(&segs);
    args.extend([Arg::U32(flags), Arg::U32(xbs32)]);
    args.extend(rope);
    // SAFETY: the arguments are the kernel's parameters in order (x, u32 nsb, three (weights,
    // output, u32 rows) triples, u32 flags, u32 xbs, then u16* kc, u16* vc, u32 pos, u32 rope,
    // f32 theta_scale, f32 freq_scale, const float* factors). Each used segment's weights hold
    // `rows` rows of `nsb` blocks of its type and its output `rows` floats, aligned; x holds
    // `nsb` Q8_K blocks of xbs bytes, aligned for them (all checked above); unused segments
    // have 0 rows and are never touched. With the rope arguments the caches hold `n_ctx` rows
    // of the K/V width and pos < n_ctx, the factors n_rot/2 floats, and every segment is whole
    // heads of an even head_dim (rope_args); kc null otherwise. Block b takes rows rpb b ..
    // rpb (b + 1) of the concatenated segments (rpb: 8 for fast_mv, 16 for fast_mv2, whose
    // parameters are fast_mv's). The spans outlive the launch (their owners' contract).
    unsafe { launch(gpu, name, (total.div_ceil(rpb), 1, 1), WARPS * 32, &args) }
}

/// Whether the fast kernels may take two rows a warp (`LLMSTREAM_FAST_TWO=0` keeps one).
fn two_rows_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("LLMSTREAM_FAST_TWO").map_or(true, |v| v != "0"))
}

/// Whether a launch of `rows` rows takes two rows a warp (`fast_mv2`, the same bits as
/// `fast_mv`): when one row a warp needs more than one wave of blocks on this GPU and two rows
/// a warp fit in one (the Q, K and V products of the 8B shape: 768 blocks of 8 rows where an
/// H100 holds 528, 384 of 16).
fn two_rows(gpu: &Gpu, rows: u64) -> Result<bool> {
    if !two_rows_enabled() {
        return Ok(false);
    }
    let sms = u64::from(crate::gpu::quant::sm_count(gpu)?);
    let wave = |k: &'static str| -> Result<u64> {
        Ok(sms
            * u64::from(crate::gpu::quant::occupancy(
                gpu.function(k)?,
                WARPS * 32,
                0,
            )?))
    };
    Ok(rows.div_ceil(u64::from(WARPS)) > wave("fast_mv")?
        && rows.div_ceil(u64::from(2 * WARPS)) <= wave("fast_mv2")?)
}

/// `out = silu(G x) * (U x)` for `G`, `U` of `rows x cols` and one Q8_K activation row `xq`
/// (blocks of `xbs` bytes, as [`matvecs`]), in one launch.
#[allow(clippy::too_many_arguments)] // two matrices with their types, the activations, out
pub(crate) fn gate_up(
    gpu: &Gpu,
    xq: DevSpan,
    xbs: usize,
    cols: usize,
    gate: (GgmlType, DevSpan),
    up: (GgmlType, DevSpan),
    rows: usize,
    out: DevSpan,
) -> Result<()> {
    const K: &str = "fast_gate_up";
    let pg = Product {
        ty: gate.0,
        w: gate.1,
        rows,
        y: out,
        accumulate: false,
    };
    let pu = Product {
        ty: up.0,
        w: up.1,
        ..pg
    };
    let flags = check(K, &pg, cols)? | (check(K, &pu, cols)? << 2);
    let nsb = cols / 256;
    let xbs32 = check_x(K, xq, nsb, xbs)?;
    let rows32 = u32::try_from(rows).map_err(|_| invalid(K, format!("{rows} rows")))?;
    let nsb32 = u32::try_from(nsb).map_err(|_| invalid(K, format!("{nsb} blocks")))?;
    if rows32 == 0 {
        return Ok(());
    }
    let args = [
        Arg::Ptr(xq.ptr()),
        Arg::U32(nsb32),
        Arg::Ptr(gate.1.ptr()),
        Arg::Ptr(up.1.ptr()),
        Arg::U32(rows32),
        Arg::U32(flags),
        Arg::Ptr(out.ptr()),
        Arg::U32(xbs32),
    ];
    // SAFETY: the arguments are the kernel's parameters in order (x, u32 nsb, gate, up, u32
    // rows, u32 flags, out, u32 xbs); both matrices hold `rows` rows of `nsb` blocks of their
    // types, out holds `rows` floats and x `nsb` Q8_K blocks of xbs bytes, aligned for them
    // (checked above); block i takes rows 4i..4i+4 below `rows`. The spans outlive the launch
    // (their owners' contract).
    unsafe {
        launch(
            gpu,
            K,
            (rows32.div_ceil(WARPS / 2), 1, 1),
            WARPS * 32,
            &args,
        )
    }
}

/// `y = W x` for one Q8_K activation row when `wty` has a fast kernel; `Ok(false)` when not
/// (the caller takes the general path).
pub(crate) fn try_matvec_n1(
    gpu: &Gpu,
    wty: GgmlType,
    w: DevSpan,
    rows: usize,
    cols: usize,
    xq: DevSpan,
    y: DevSpan,
) -> Result<bool> {
    if !supports(wty, cols) || !aligned(wty, w.ptr()) {
        return Ok(false);
    }
    let p = Product {
        ty: wty,
        w,
        rows,
        y,
        accumulate: false,
    };
    matvecs(gpu, xq, XBS_CPU, cols, &[p])?;
    Ok(true)
}

/// `Q8_K` quantization of `cols` floats `x` (a multiple of 256) into `out` in the decode layout
/// ([`XBS_DECODE`]): the values of [`crate::gpu::quant::quantize`], 16-byte aligned quants.
pub(crate) fn quantize_decode(gpu: &Gpu, x: DevSpan, cols: usize, out: DevSpan) -> Result<()> {
    const K: &str = "quant_act_q8_k16";
    if cols % 256 != 0 || cols == 0 {
        return Err(invalid(K, format!("{cols} columns")));
    }
    let nblk = cols / 256;
    x.need(K, "x", cols * 4)?;
    out.need(K, "out", nblk * XBS_DECODE)?;
    if x.ptr() % 4 != 0 || out.ptr() % 16 != 0 {
        return Err(invalid(K, "misaligned span"));
    }
    let grid =
        u32::try_from(nblk.div_ceil(8)).map_err(|_| invalid(K, format!("{cols} columns")))?;
    let args = [
        Arg::Ptr(x.ptr()),
        Arg::Ptr(out.ptr()),
        Arg::U64(nblk as u64),
    ];
    // SAFETY: (x, out, u64 nblk) as the kernel declares; warp w of block b quantizes the 256
    // floats of block 8b + w < nblk into the 304 bytes at out + 304 (8b + w): x holds nblk·256
    // floats and out nblk blocks (checked above).
    unsafe { launch(gpu, K, (grid, 1, 1), 256, &args) }
}
