//! Causal attention over the `f16` KV cache, split into chunks of positions (flash-decoding):
//! `ops_attn_partial` computes per (chunk, head, token) the max of the scaled scores, the sum of
//! their exponentials and the exponential-weighted sum of V; `ops_attn_combine` merges the
//! chunks. No shared-memory bound on the context: any length works.

use super::launch::{invalid, launch, product, to_i32, to_u32, Arg};
use crate::gpu::fast::{quantize_decode, XBS_DECODE};
use crate::gpu::{DevSpan, Gpu, Result};

/// Most positions per chunk (`OP_ATT_CHUNK` in `kernels/ops.cu`): the chunk of a
/// several-token call.
pub const ATTENTION_CHUNK: usize = 256;
/// Chunks a one-token call aims at: its chunk is the smallest multiple of 16 that splits
/// the positions into at most this many (within 16..=256), so a short context still spreads
/// over many blocks.
const DECODE_CHUNKS: usize = 128;

/// Positions per chunk for `n_tok` queries whose last one sees `n_kv` positions.
fn chunk_len(n_tok: usize, n_kv: usize) -> usize {
    if n_tok == 1 {
        (n_kv.div_ceil(DECODE_CHUNKS).div_ceil(16) * 16).clamp(16, ATTENTION_CHUNK)
    } else {
        ATTENTION_CHUNK
    }
}
/// Largest head width the kernels take (`OP_ATT_HDMAX`); it must also be a multiple of 8.
pub const ATTENTION_MAX_HEAD_DIM: usize = 256;
/// Query heads per block (`OP_ATT_GMAX`).
const HEADS_PER_BLOCK: usize = 8;
const THREADS: u32 = 128;

/// Bytes of workspace [`attention`] needs for `n_tok` queries whose last one sees `n_kv`
/// positions (`pos0 + n_tok`): per (token, head, chunk) `head_dim + 2` floats. A workspace
/// sized for the largest `n_tok` and `n_kv` serves every smaller call. `usize::MAX` on
/// overflow.
pub fn attention_workspace_bytes(
    n_tok: usize,
    n_kv: usize,
    n_head: usize,
    head_dim: usize,
) -> usize {
    // several tokens: chunks of 256; one token at any n <= n_kv: at most DECODE_CHUNKS chunks
    // while n <= 128 · 256, ceil(n / 256) beyond, never more than ceil(n / 16)
    let decode = n_kv
        .div_ceil(16)
        .min(DECODE_CHUNKS.max(n_kv.div_ceil(ATTENTION_CHUNK)));
    let rows = n_tok
        .checked_mul(n_kv.div_ceil(ATTENTION_CHUNK))
        .map(|r| r.max(decode));
    [rows.unwrap_or(usize::MAX), n_head, head_dim + 2, 4]
        .iter()
        .try_fold(1usize, |a, &f| a.checked_mul(f))
        .unwrap_or(usize::MAX)
}

/// Causal multi-head attention with grouped KV heads, as the CPU engine's `f16` path
/// ([`crate::forward`]): query `i` (`[n_tok][n_head · head_dim]` in `q`) sees positions
/// `0..=pos0 + i` of the caches (`f16`, `[n_ctx][n_head_kv · head_dim]`, already holding those
/// positions), head `h` uses kv head `h / (n_head / n_head_kv)`; Q is rounded to `f16` for the
/// dot with K, softmax of `score · scale`, weights rounded to `f16` before multiplying V.
/// Results go to `out` (`[n_tok][n_head · head_dim]`).
///
/// Tolerance against the CPU: accumulation is in `f32`, and the weights rounded to `f16` are
/// `exp(s - max of the chunk)` where the CPU rounds the normalised `p`; the two roundings of a
/// weight differ by at most 2^-10 of it, so each output is within about `1e-3 · Σ_t p_t·|v_t|`
/// of the CPU's (measured on random data: 1e-5..4e-4 of that sum; relative to the largest
/// output up to ~7e-4 at 40000 positions, where the CPU's normalised weights are `f16`
/// subnormals and it is the less precise of the two).
#[allow(clippy::too_many_arguments)] // the attention shape, as the engine has it
pub fn attention(
    gpu: &Gpu,
    q: DevSpan,
    k_cache: DevSpan,
    v_cache: DevSpan,
    out: DevSpan,
    workspace: DevSpan,
    n_tok: usize,
    pos0: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    scale: f32,
) -> Result<()> {
    attend(
        gpu,
        (q, k_cache, v_cache, out, workspace),
        n_tok,
        pos0,
        (n_head, n_head_kv, head_dim),
        scale,
        None,
    )
}

/// Whether the merge can quantize `n_head` heads of `head_dim` itself: runs of 256 outputs
/// made of whole heads.
fn can_quantize(n_head: usize, head_dim: usize) -> bool {
    head_dim > 0 && 256 % head_dim == 0 && n_head * head_dim % 256 == 0
}

/// [`attention`] of one token (position `pos0`) with its output also quantized into `xq`:
/// `Q8_K` blocks in the decode layout, what [`quantize_decode`] of `out` writes. Where heads
/// make whole runs of 256 outputs the merge launch quantizes them (one launch fewer), else
/// [`quantize_decode`] follows the merge.
pub(crate) fn attention_q8k(
    gpu: &Gpu,
    spans: (DevSpan, DevSpan, DevSpan, DevSpan, DevSpan),
    pos0: usize,
    (n_head, n_head_kv, head_dim): (usize, usize, usize),
    scale: f32,
    xq: DevSpan,
) -> Result<()> {
    let heads = (n_head, n_head_kv, head_dim);
    if can_quantize(n_head, head_dim) {
        return attend(gpu, spans, 1, pos0, heads, scale, Some(xq));
    }
    attend(gpu, spans, 1, pos0, heads, scale, None)?;
    let width = n_head * head_dim;
    quantize_decode(gpu, spans.3.sub(0, 4 * width)?, width, xq)
}

/// The partial and merge launches; with `xq`, the merge that quantizes (one token).
fn attend(
    gpu: &Gpu,
    (q, k_cache, v_cache, out, workspace): (DevSpan, DevSpan, DevSpan, DevSpan, DevSpan),
    n_tok: usize,
    pos0: usize,
    (n_head, n_head_kv, head_dim): (usize, usize, usize),
    scale: f32,
    xq: Option<DevSpan>,
) -> Result<()> {
    const K: &str = "ops_attn_partial";
    if n_tok == 0 || n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(invalid(
            K,
            format!("{n_tok} tokens, {n_head} heads, {n_head_kv} kv heads"),
        ));
    }
    if head_dim == 0 || head_dim % 8 != 0 || head_dim > ATTENTION_MAX_HEAD_DIM {
        return Err(invalid(
            K,
            format!("head_dim {head_dim} must be a multiple of 8 up to {ATTENTION_MAX_HEAD_DIM}"),
        ));
    }
    if !scale.is_finite() {
        return Err(invalid(K, format!("scale {scale}")));
    }
    let n_kv = pos0
        .checked_add(n_tok)
        .filter(|&e| i32::try_from(e).is_ok())
        .ok_or_else(|| invalid(K, format!("positions {pos0}+{n_tok} exceed i32")))?;
    let qo = product(K, "q", &[n_tok, n_head, head_dim, 4])?;
    q.need(K, "q", qo)?;
    out.need(K, "out", qo)?;
    let cache = product(K, "cache", &[n_kv, n_head_kv, head_dim, 2])?;
    k_cache.need(K, "k cache", cache)?;
    v_cache.need(K, "v cache", cache)?;
    if k_cache.ptr() % 16 != 0 || v_cache.ptr() % 16 != 0 {
        return Err(invalid(K, "caches must be 16-byte aligned"));
    }
    if n_tok == 1 && one_pass(n_kv, n_head, n_head_kv, head_dim) {
        return attend_one(
            gpu,
            (q, k_cache, v_cache, out),
            pos0,
            (n_head, n_head_kv, head_dim),
            scale,
            xq,
        );
    }
    let chunk = chunk_len(n_tok, n_kv);
    let chunks = n_kv.div_ceil(chunk);
    let acc_bytes = product(K, "workspace", &[n_tok, n_head, chunks, head_dim, 4])?;
    let ml_bytes = product(K, "workspace", &[n_tok, n_head, chunks, 2, 4])?;
    workspace.need(
        K,
        "workspace",
        attention_workspace_bytes(n_tok, n_kv, n_head, head_dim),
    )?;
    let acc = workspace.sub(0, acc_bytes)?;
    let ml = workspace.sub(acc_bytes, ml_bytes)?;
    let head_blocks = (n_head / n_head_kv).div_ceil(HEADS_PER_BLOCK);
    let grid_y = product(K, "grid", &[n_head_kv, head_blocks])?;
    if grid_y > 65535 || n_tok > 65535 {
        return Err(invalid(
            K,
            format!("grid ({chunks}, {grid_y}, {n_tok}) exceeds 65535 in y or z"),
        ));
    }
    let pos0_u = to_u32(K, "pos0", pos0)?;
    let args = [
        Arg::Ptr(q.ptr()),
        Arg::Ptr(k_cache.ptr()),
        Arg::Ptr(v_cache.ptr()),
        Arg::Ptr(acc.ptr()),
        Arg::Ptr(ml.ptr()),
        Arg::U32(pos0_u),
        Arg::I32(to_i32(K, "n_head", n_head)?),
        Arg::I32(to_i32(K, "n_head_kv", n_head_kv)?),
        Arg::I32(to_i32(K, "head_dim", head_dim)?),
        Arg::F32(scale),
        Arg::I32(to_i32(K, "chunks", chunks)?),
        Arg::I32(to_i32(K, "head blocks", head_blocks)?),
        Arg::I32(to_i32(K, "chunk", chunk)?),
    ];
    let grid = (
        to_u32(K, "chunks", chunks)?,
        to_u32(K, "grid y", grid_y)?,
        to_u32(K, "n_tok", n_tok)?,
    );
    // SAFETY: (q, kc, vc, part_acc, part_ml, u32 pos0, int n_head, int n_head_kv, int hd, float
    // scale, int n_chunks, int head_blocks, int chunk) as declared. Block (c, y, t) reads q row t (n_head·hd
    // floats, checked), cache rows < pos0 + t + 1 ≤ n_kv (n_kv rows checked, 16-byte aligned for
    // its uint4 loads; hd is a multiple of 8), and writes (t, head, c) entries of part_acc and
    // part_ml, [n_tok][n_head][chunks][hd] and [..][2] floats, the two sub-spans checked above;
    // heads stay below n_head since y < n_head_kv·head_blocks and the kernel clips its batch
    // to the group.
    unsafe { launch(gpu, K, grid, THREADS, &args) }?;

    merge(
        gpu,
        (acc, ml, out, xq),
        pos0_u,
        n_tok,
        (n_head, head_dim),
        (chunks, chunk),
    )
}

/// Most positions [`attend_one`] takes (`OP_ATT1_MAX`).
const ONE_PASS_MAX: usize = 512;

/// Whether one token's attention over `n_kv` positions takes the one-launch kernel: a short
/// context, and heads in runs of 256 outputs (64, 128 or 256 wide). `LLMSTREAM_ATT_ONE=0`
/// turns it off (a measuring knob).
fn one_pass(n_kv: usize, n_head: usize, n_head_kv: usize, head_dim: usize) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("LLMSTREAM_ATT_ONE").map_or(true, |v| v != "0"));
    on && n_kv <= ONE_PASS_MAX
        && matches!(head_dim, 64 | 128 | 256)
        && n_head % n_head_kv == 0
        && (n_head * head_dim) % 256 == 0
}

/// One token's attention (position `pos0`, the checks of [`attend`] done) in one launch of
/// `ops_attn_one`; with `xq` its output also quantized, as [`merge`].
fn attend_one(
    gpu: &Gpu,
    (q, k_cache, v_cache, out): (DevSpan, DevSpan, DevSpan, DevSpan),
    pos0: usize,
    (n_head, n_head_kv, head_dim): (usize, usize, usize),
    scale: f32,
    xq: Option<DevSpan>,
) -> Result<()> {
    const K: &str = "ops_attn_one";
    let blocks = n_head * head_dim / 256;
    if let Some(xq) = xq {
        xq.need(K, "xq", blocks * XBS_DECODE)?;
        if xq.ptr() % 16 != 0 {
            return Err(invalid(K, "misaligned xq"));
        }
    }
    let args = [
        Arg::Ptr(q.ptr()),
        Arg::Ptr(k_cache.ptr()),
        Arg::Ptr(v_cache.ptr()),
        Arg::Ptr(out.ptr()),
        Arg::Ptr(xq.map_or(0, |x| x.ptr())),
        Arg::U32(to_u32(K, "pos0", pos0)?),
        Arg::I32(to_i32(K, "n_head", n_head)?),
        Arg::I32(to_i32(K, "n_head_kv", n_head_kv)?),
        Arg::I32(to_i32(K, "head_dim", head_dim)?),
        Arg::F32(scale),
    ];
    // SAFETY: (q, kc, vc, out, xq or null, u32 pos0, int n_head, int n_head_kv, int hd, float
    // scale) as declared. Block b reads q and writes out at heads G b .. G b + G (G = 256 / hd;
    // n_head · hd floats checked by `attend`), reads cache rows ≤ pos0 < n_kv ≤ OP_ATT1_MAX of
    // their kv heads (n_kv rows checked, 16-byte aligned, hd a multiple of 8), and writes the
    // 304-byte block b of xq (checked above); `one_pass` holds, so its shared arrays fit.
    unsafe { launch(gpu, K, (to_u32(K, "blocks", blocks)?, 1, 1), 1024, &args) }
}

/// The merge of the chunks (`ops_attn_combine`, block per head and token), or with `xq` for one
/// token, the merge fused with the `Q8_K` quantization of the output (`ops_attn_combine_q8k`,
/// block per run of 256 outputs). The two kernels take the same arguments, `xq` fourth.
fn merge(
    gpu: &Gpu,
    (acc, ml, out, xq): (DevSpan, DevSpan, DevSpan, Option<DevSpan>),
    pos0: u32,
    n_tok: usize,
    (n_head, head_dim): (usize, usize),
    (chunks, chunk): (usize, usize),
) -> Result<()> {
    let (k, grid, block) = match xq {
        None => {
            const K: &str = "ops_attn_combine";
            let grid = (to_u32(K, "n_head", n_head)?, to_u32(K, "n_tok", n_tok)?, 1);
            (K, grid, THREADS)
        }
        Some(xq) => {
            const K: &str = "ops_attn_combine_q8k";
            if n_tok != 1 || !can_quantize(n_head, head_dim) {
                return Err(invalid(
                    K,
                    format!("{n_tok} tokens, {n_head} heads of {head_dim}"),
                ));
            }
            let runs = n_head * head_dim / 256;
            xq.need(K, "xq", runs * XBS_DECODE)?;
            if xq.ptr() % 16 != 0 {
                return Err(invalid(K, "misaligned xq"));
            }
            (K, (to_u32(K, "runs", runs)?, 1, 1), 256)
        }
    };
    let mut args = vec![Arg::Ptr(acc.ptr()), Arg::Ptr(ml.ptr()), Arg::Ptr(out.ptr())];
    if let Some(xq) = xq {
        args.push(Arg::Ptr(xq.ptr()));
    }
    args.extend([
        Arg::U32(pos0),
        Arg::I32(to_i32(k, "n_head", n_head)?),
        Arg::I32(to_i32(k, "head_dim", head_dim)?),
        Arg::I32(to_i32(k, "chunks", chunks)?),
        Arg::I32(to_i32(k, "chunk", chunk)?),
    ]);
    // SAFETY: (part_acc, part_ml, out, [xq,] u32 pos0, int n_head, int hd, int n_chunks, int
    // chunk) as each kernel declares. ops_attn_combine: block (h, t) reads the chunks
    // c < ceil((pos0 + t + 1) / chunk) ≤ chunks of (t, h) and writes out row t, head h.
    // ops_attn_combine_q8k (one token): block b reads the chunks of the heads of outputs
    // 256b .. 256b + 256 and writes those outputs and Q8_K block b of xq (runs blocks, checked
    // above). The chunks were written by the partial launch before it on the same stream, in
    // spans the caller checked for this shape, and out holds n_tok·n_head·hd floats (checked
    // by the caller).
    unsafe { launch(gpu, k, grid, block, &args) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_kernel_source() {
        let src = crate::gpu::nvrtc::source();
        for (name, v) in [
            ("OP_ATT_CHUNK", ATTENTION_CHUNK),
            ("OP_ATT_HDMAX", ATTENTION_MAX_HEAD_DIM),
            ("OP_ATT_GMAX", HEADS_PER_BLOCK),
            ("OP_ATT_THREADS", THREADS as usize),
            ("OP_SMP_THREADS", 1024),
            ("OP_SMP_CAP", 2048),
        ] {
            assert!(
                src.contains(&format!("#define {name} {v}\n")),
                "{name} is not {v}"
            );
        }
    }

    #[test]
    fn workspace_grows_with_every_dimension() {
        assert_eq!(attention_workspace_bytes(1, 1, 1, 64), 66 * 4);
        assert_eq!(attention_workspace_bytes(1, 257, 2, 64), 17 * 2 * 66 * 4);
        assert_eq!(
            attention_workspace_bytes(1, 4096, 32, 128),
            128 * 32 * 130 * 4
        );
        assert_eq!(attention_workspace_bytes(1, 65536, 1, 64), 256 * 66 * 4);
        assert_eq!(attention_workspace_bytes(4, 4096, 1, 64), 128 * 66 * 4);
        assert_eq!(
            attention_workspace_bytes(7, 40_000, 32, 128),
            7 * 32 * 157 * 130 * 4
        );
        assert_eq!(
            attention_workspace_bytes(usize::MAX, 1 << 20, 64, 128),
            usize::MAX
        );
    }
}
