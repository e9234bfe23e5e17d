//! Greedy and probabilistic token choice on the GPU, picking what the CPU sampler picks:
//! [`argmax`] is [`crate::sampler::argmax`]; [`sample`] is [`crate::sampler::sample_with`] for
//! the same uniform number (bit for bit: same order keys, same `exp`, integer sums). Only the
//! chosen id (an `i32`) needs to come back to the host.
//!
//! `ops_sample` runs on one block of 1024 threads: a block-wide max, then radix selections
//! (8-bit digits of the order key) find the top-k (or min-p) candidate set, which is gathered
//! and sorted in shared memory when it has at most 2048 entries; a larger set (top-k 0 with no
//! min-p, or top-k above 2048) is drawn from with selections by cumulative weight instead of a
//! sort. Every pass is a parallel sweep over the vocabulary.

use super::launch::{invalid, launch, product, to_u32, Arg};
use crate::gpu::{DevSpan, Gpu, Result};
use crate::sampler::SampleParams;

/// Largest vocabulary [`sample`] takes (its 64-bit weight sums have room for 2^23 entries).
pub const SAMPLE_MAX_VOCAB: usize = 1 << 23;

/// The sampling settings after the repeat penalty (as [`SampleParams`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSampleParams {
    /// Temperature; 0 or less is greedy.
    pub temp: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set with cumulative probability ≥ p (1 = all).
    pub top_p: f32,
    /// Drop tokens below `min_p × p(best)` (0 = none).
    pub min_p: f32,
}

impl From<&SampleParams> for GpuSampleParams {
    fn from(p: &SampleParams) -> Self {
        Self {
            temp: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
        }
    }
}

/// What `ops_sample` did, from the first bytes of its workspace (for tests and tracing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SampleTrace {
    /// 0: nothing to weigh (all -inf, or an infinite logit), 1: top-k set sorted, 2: min-p set
    /// sorted, 3: drawn by cumulative weight.
    pub path: u32,
    /// The top-k bound.
    pub k1: u32,
    /// Candidates gathered (paths 1, 2) or the bound before top-p (path 3).
    pub bound: u32,
    /// Survivors of top-p and min-p.
    pub keep: u32,
    /// Rank of the pick among them.
    pub rank: u32,
}

impl SampleTrace {
    /// Decode the first [`sample_workspace_bytes`] bytes of a workspace `sample` wrote.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let w = |i: usize| {
            b.get(4 * i..4 * i + 4)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        Some(Self {
            path: w(0)?,
            k1: w(1)?,
            bound: w(2)?,
            keep: w(3)?,
            rank: w(4)?,
        })
    }
}

/// Bytes of workspace [`sample`] needs for a vocabulary of `n_vocab` (it writes a
/// [`SampleTrace`] there; the one-block kernel needs no more, whatever the vocabulary).
pub fn sample_workspace_bytes(n_vocab: usize) -> usize {
    let _ = n_vocab;
    TRACE_BYTES
}

const TRACE_BYTES: usize = 32;

fn check_logits(kernel: &'static str, logits: DevSpan, n: usize, max: usize) -> Result<u32> {
    if n == 0 || n > max {
        return Err(invalid(kernel, format!("vocabulary of {n} (1..={max})")));
    }
    logits.need(kernel, "logits", product(kernel, "logits", &[n, 4])?)?;
    to_u32(kernel, "n", n)
}

/// Index of the largest of `n` logits into `out` (one `i32`), as [`crate::sampler::argmax`]:
/// the first of equal ones; NaN never wins, except at index 0, which then wins.
pub fn argmax(gpu: &Gpu, logits: DevSpan, n: usize, out: DevSpan) -> Result<()> {
    const K: &str = "ops_argmax";
    let n32 = check_logits(K, logits, n, i32::MAX as usize)?;
    out.need(K, "out", 4)?;
    let args = [Arg::Ptr(logits.ptr()), Arg::U32(n32), Arg::Ptr(out.ptr())];
    // SAFETY: (x, u32 n, i32* out) as declared; reads n floats (checked), writes one i32
    // (checked).
    unsafe { launch(gpu, K, (1, 1, 1), 1024, &args) }
}

/// The repeat penalty over `n` logits for the `n_ids` ids (`i32`) of the window, as
/// [`crate::sampler::apply_repeat_penalty`]: each distinct id once, ids outside `0..n` ignored.
/// (Duplicates are found by comparing each id with the ones before it: O(n_ids²) work spread
/// over n_ids threads, meant for windows of up to a few thousand.)
pub fn repeat_penalty(
    gpu: &Gpu,
    logits: DevSpan,
    n: usize,
    ids: DevSpan,
    n_ids: usize,
    penalty: f32,
) -> Result<()> {
    const K: &str = "ops_repeat_penalty";
    let n32 = check_logits(K, logits, n, i32::MAX as usize)?;
    ids.need(K, "ids", product(K, "ids", &[n_ids, 4])?)?;
    if n_ids == 0 {
        return Ok(());
    }
    let ids32 = to_u32(K, "n_ids", n_ids)?;
    let args = [
        Arg::Ptr(logits.ptr()),
        Arg::U32(n32),
        Arg::Ptr(ids.ptr()),
        Arg::U32(ids32),
        Arg::F32(penalty),
    ];
    // SAFETY: (logits, u32 n, const i32* ids, u32 n_ids, float penalty) as declared; reads
    // ids[< n_ids] (checked), touches logits[id] only for 0 ≤ id < n (checked: n floats).
    unsafe { launch(gpu, K, (ids32.div_ceil(256), 1, 1), 256, &args) }
}

/// Draw a token from `n` (penalised) logits for the uniform number `u` in `[0, 1)` drawn on the
/// host, into `out` (one `i32`): the same id as [`crate::sampler::sample_with`] with the same
/// settings and `u`. Greedy ([`argmax`]) when `params.temp` is not positive.
pub fn sample(
    gpu: &Gpu,
    logits: DevSpan,
    n: usize,
    params: &GpuSampleParams,
    u: f32,
    workspace: DevSpan,
    out: DevSpan,
) -> Result<()> {
    const K: &str = "ops_sample";
    if !crate::sampler::greedy_off(params.temp) {
        return argmax(gpu, logits, n, out);
    }
    let n32 = check_logits(K, logits, n, SAMPLE_MAX_VOCAB)?;
    if !params.temp.is_finite() || params.top_p.is_nan() || params.min_p.is_nan() {
        return Err(invalid(K, format!("settings {params:?}")));
    }
    if !(0.0..1.0).contains(&u) {
        return Err(invalid(K, format!("u = {u} is not in [0, 1)")));
    }
    workspace.need(K, "workspace", sample_workspace_bytes(n))?;
    out.need(K, "out", 4)?;
    // top_k ≥ n means "all", as 0 does.
    let top_k = to_u32(K, "top_k", params.top_k.min(n))?;
    let args = [
        Arg::Ptr(logits.ptr()),
        Arg::U32(n32),
        Arg::F32(params.temp),
        Arg::U32(top_k),
        Arg::F32(params.top_p),
        Arg::F32(params.min_p),
        Arg::F32(u),
        Arg::Ptr(out.ptr()),
        Arg::Ptr(workspace.ptr()),
    ];
    // SAFETY: (x, u32 n, float temp, u32 top_k, float top_p, float min_p, float u, i32* out,
    // u32* stats) as declared; reads n floats of logits (checked), writes one i32 to out and 5
    // u32 to the workspace (checked: 32 bytes); n ≤ 2^23 keeps its u64 sums from overflowing.
    unsafe { launch(gpu, K, (1, 1, 1), 1024, &args) }
}
