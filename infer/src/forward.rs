//! The transformer forward pass (Llama / Qwen2) on the CPU, batched over the tokens of a prompt.

use crate::config::HParams;
use crate::error::{InferError, Result};
use crate::kv::{KvCache, KvType};
use crate::ops;
use crate::quant;
use crate::weights::{LayerWeights, Tensor, Weights};
use half::f16;

/// A loaded model ready to run.
#[derive(Debug)]
pub struct Transformer {
    /// Hyper-parameters.
    pub hp: HParams,
    /// Weights.
    pub w: Weights,
}

/// Per-sequence state: the KV cache, the next position, scratch buffers.
#[derive(Debug)]
pub struct State {
    kv: KvCache,
    pos: usize,
    rope: Vec<(f32, f32)>,
    keys: Vec<f32>,
    vals: Vec<f32>,
    scratch: Scratch,
}

/// Activations of one forward call, kept between calls so decoding allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
}

fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

impl State {
    /// Tokens processed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Positions the cache holds.
    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx()
    }

    /// Forget everything (start a new sequence).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// A state whose cache holds `n_layers` layers of `hp`'s shape.
    pub(crate) fn for_layers(hp: &HParams, n_layers: usize, n_ctx: usize, kv_type: KvType) -> Self {
        let width = hp.n_head_kv * hp.head_dim;
        State {
            kv: KvCache::new(kv_type, n_layers, n_ctx, width),
            pos: 0,
            rope: Vec::with_capacity(hp.n_rot / 2),
            keys: vec![0.0; n_ctx * width],
            vals: vec![0.0; n_ctx * width],
            scratch: Scratch::default(),
        }
    }

    /// Set the next position (a caller that keeps its own count, as the hybrid GPU engine).
    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// Keep only the first `n` positions (drop a suffix, e.g. to re-use a chat prefix).
    pub fn truncate(&mut self, n: usize) {
        self.pos = self.pos.min(n);
    }
}

fn matmul(w: &Tensor, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
    matmul_with(w, x, n, y, quant::MatOptions::default())
}

fn matmul_with(
    w: &Tensor,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    opts: quant::MatOptions,
) -> Result<()> {
    let m = w.matrix()?;
    if n == 1 {
        quant::matvec_opts(&m, x, y, opts)
    } else {
        quant::matmul_opts(&m, x, n, y, opts)
    }
    .map_err(|e| InferError::Quant(format!("{}: {e}", w.name)))
}

impl Transformer {
    /// A fresh state with room for `n_ctx` positions.
    pub fn new_state(&self, n_ctx: usize, kv_type: KvType) -> State {
        State::for_layers(&self.hp, self.hp.n_layer, n_ctx, kv_type)
    }

    /// Vocabulary size (rows of the output matrix).
    pub fn n_vocab(&self) -> usize {
        self.w.output.rows()
    }

    /// Run `tokens` at the state's next positions; returns the logits of the last one.
    pub fn forward(&self, st: &mut State, tokens: &[u32]) -> Result<Vec<f32>> {
        let hp = &self.hp;
        let n = tokens.len();
        if n == 0 {
            return Err(InferError::Invalid("no tokens to run".into()));
        }
        if st.pos + n > st.kv.n_ctx() {
            return Err(InferError::Invalid(format!(
                "context full: {} + {n} tokens exceed {} positions",
                st.pos,
                st.kv.n_ctx()
            )));
        }
        let d = hp.n_embd;

        // Embeddings.
        let emb = &self.w.token_embd;
        let row_bytes = usize::try_from(emb.ty.bytes_for(d as u64).unwrap_or(0))
            .map_err(|_| InferError::Invalid("embedding row size".into()))?;
        // Taken out of the state for the call (a failed call just reallocates next time).
        let mut sc = std::mem::take(&mut st.scratch);
        let mut xv = std::mem::take(&mut sc.x);
        let x = sized(&mut xv, n * d);
        for (i, &t) in tokens.iter().enumerate() {
            let t = t as usize;
            if t >= emb.rows() {
                return Err(InferError::Invalid(format!(
                    "token id {t} outside the vocabulary ({})",
                    emb.rows()
                )));
            }
            let bytes = &emb.data()[t * row_bytes..(t + 1) * row_bytes];
            quant::dequantize(emb.ty, bytes, &mut x[i * d..(i + 1) * d])
                .map_err(|e| InferError::Quant(e.to_string()))?;
        }

        let rope_freqs = self.w.rope_freqs.as_deref();
        for (li, lw) in self.w.layers.iter().enumerate() {
            layer_forward(hp, lw, rope_freqs, li, st, &mut sc, x, n)?;
        }
        st.pos += n;
        let last = &x[(n - 1) * d..];
        let mut hn = vec![0f32; d];
        ops::rms_norm(last, &self.w.output_norm, hp.rms_eps, &mut hn);
        let mut logits = vec![0f32; self.n_vocab()];
        // llama.cpp cannot repack an output matrix tied to the embedding (it is also read row by
        // row), so its numerics are the plain vec_dot ones there.
        let opts = quant::MatOptions {
            llama_cpp_repack: !self.w.output_tied,
            ..quant::MatOptions::default()
        };
        matmul_with(&self.w.output, &hn, 1, &mut logits, opts)?;
        sc.x = xv;
        st.scratch = sc;
        Ok(logits)
    }
}

/// One transformer layer on the CPU: `n` tokens (`x`, `[n][n_embd]`, updated in place) at
/// positions `st.pos..`, keys and values stored in layer `kv_layer` of the state's cache.
#[allow(clippy::too_many_arguments)] // the layer, its cache slot, the state and activations
pub(crate) fn layer_forward(
    hp: &HParams,
    lw: &LayerWeights,
    rope_freqs: Option<&[f32]>,
    kv_layer: usize,
    st: &mut State,
    sc: &mut Scratch,
    x: &mut [f32],
    n: usize,
) -> Result<()> {
    let (d, hd) = (hp.n_embd, hp.head_dim);
    let (qd, kvd) = (hp.n_head * hd, hp.n_head_kv * hd);
    let group = hp.n_head / hp.n_head_kv;
    let li = kv_layer;
    let h = sized(&mut sc.h, n * d);
    let q = sized(&mut sc.q, n * qd);
    let k = sized(&mut sc.k, n * kvd);
    let v = sized(&mut sc.v, n * kvd);
    let att = sized(&mut sc.att, n * qd);
    let o = sized(&mut sc.o, n * d);
    let g = sized(&mut sc.g, n * hp.n_ff);
    let u = sized(&mut sc.u, n * hp.n_ff);
    #[allow(clippy::cast_precision_loss)]
    let kq_scale = 1.0 / (hd as f32).sqrt();
    let f16_kv = st.kv.ty() == KvType::F16;

    let mut lap = crate::profile::Lap::start();
    ops::rms_norm(x, &lw.attn_norm, hp.rms_eps, h);
    lap.next();
    matmul(&lw.wq, h, n, q)?;
    matmul(&lw.wk, h, n, k)?;
    matmul(&lw.wv, h, n, v)?;
    if let Some(b) = &lw.bq {
        ops::add_bias(q, b);
    }
    if let Some(b) = &lw.bk {
        ops::add_bias(k, b);
    }
    if let Some(b) = &lw.bv {
        ops::add_bias(v, b);
    }
    lap.next();
    for i in 0..n {
        let p = st.pos + i;
        ops::rope_cache(
            p,
            hp.n_rot,
            hp.rope_freq_base,
            hp.rope_freq_scale,
            rope_freqs,
            &mut st.rope,
        );
        ops::rope_apply(
            &mut q[i * qd..(i + 1) * qd],
            hd,
            hp.n_rot,
            hp.rope_mode,
            &st.rope,
        );
        ops::rope_apply(
            &mut k[i * kvd..(i + 1) * kvd],
            hd,
            hp.n_rot,
            hp.rope_mode,
            &st.rope,
        );
        st.kv.store(
            li,
            p,
            &k[i * kvd..(i + 1) * kvd],
            &v[i * kvd..(i + 1) * kvd],
        );
    }
    let total = st.pos + n;
    lap.next();
    st.kv.keys(li, total, &mut st.keys);
    st.kv.values(li, total, &mut st.vals);
    // One task per (token, head), on the quant pool; each head's arithmetic is the
    // same whichever thread runs it.
    let (keys, vals, pos, n_head) = (&st.keys[..], &st.vals[..], st.pos, hp.n_head);
    let q_all: &[f32] = q;
    quant::parallel_chunks_mut(att, hd, &|t, out| {
        let (i, head) = (t / n_head, t % n_head);
        let visible = pos + i + 1;
        let kvh = head / group;
        let qh = &q_all[i * qd + head * hd..i * qd + (head + 1) * hd];
        ATTN.with(|cell| {
            let mut sc = cell.borrow_mut();
            let kv = KvView {
                keys,
                vals,
                kvh,
                kvd,
                hd,
                visible,
            };
            if f16_kv {
                attend_f16(&mut sc, &kv, qh, kq_scale, out);
            } else {
                let batched = ubatch_len(n, i) > 1;
                attend_f32(&mut sc, &kv, qh, kq_scale, batched, out);
            }
        });
    })
    .map_err(|e| InferError::Quant(e.to_string()))?;
    lap.next();
    matmul(&lw.wo, att, n, o)?;
    ops::add_assign(x, o);
    lap.next();
    ops::rms_norm(x, &lw.ffn_norm, hp.rms_eps, h);
    lap.next();
    matmul(&lw.w_gate, h, n, g)?;
    matmul(&lw.w_up, h, n, u)?;
    lap.next();
    ops::swiglu(g, u);
    lap.next();
    matmul(&lw.w_down, g, n, o)?;
    ops::add_assign(x, o);
    lap.next();
    Ok(())
}

/// llama.cpp splits a prompt into micro-batches of this many tokens (its default `n_ubatch`).
const UBATCH: usize = 512;

/// Tokens in the micro-batch llama.cpp would put token `i` of an `n`-token call in.
fn ubatch_len(n: usize, i: usize) -> usize {
    let start = i / UBATCH * UBATCH;
    (n - start).min(UBATCH)
}

/// Per-thread scratch of the attention tasks.
#[derive(Debug, Default)]
struct AttnScratch {
    scores: Vec<f32>,
    lanes: Vec<crate::ggml_math::Lanes32>,
    qv: Vec<f64>,
    acc: Vec<f64>,
}

thread_local! {
    static ATTN: std::cell::RefCell<AttnScratch> = std::cell::RefCell::new(AttnScratch::default());
}

/// The cached keys and values one head reads.
struct KvView<'a> {
    keys: &'a [f32],
    vals: &'a [f32],
    kvh: usize,
    kvd: usize,
    hd: usize,
    visible: usize,
}

impl KvView<'_> {
    fn key(&self, t: usize) -> &[f32] {
        &self.keys[t * self.kvd + self.kvh * self.hd..t * self.kvd + (self.kvh + 1) * self.hd]
    }

    fn val(&self, t: usize) -> &[f32] {
        &self.vals[t * self.kvd + self.kvh * self.hd..t * self.kvd + (self.kvh + 1) * self.hd]
    }
}

/// One head of one query over the visible cached positions with an f32 cache, bit-identical to
/// llama.cpp on x86 (AVX2 + FMA): `ggml_vec_dot_f32` scores and its softmax; the V product is a
/// `ggml_vec_dot_f32` per output dimension over the positions when the micro-batch has one token,
/// and llamafile's `tinyBLAS` (8 FMA lanes, `hsum`) when it has several (`batched`).
fn attend_f32(
    sc: &mut AttnScratch,
    kv: &KvView<'_>,
    qh: &[f32],
    kq_scale: f32,
    batched: bool,
    out: &mut [f32],
) {
    use crate::ggml_math::{dot_f32, hsum8, softmax, Lanes32};
    sc.scores.clear();
    sc.scores
        .extend((0..kv.visible).map(|t| dot_f32(kv.key(t), qh)));
    softmax(&mut sc.scores, kq_scale);
    // Output dimension d is a dot product over positions: position t feeds lane t % 32 (t % 8 in
    // tinyBLAS). The positions past `visible` llama.cpp includes (padding to 256) have weight 0
    // and add nothing.
    sc.lanes.clear();
    sc.lanes.resize(kv.hd, Lanes32::default());
    let width = if batched { 8 } else { 32 };
    for (t, &p) in sc.scores.iter().enumerate() {
        let lane = t % width;
        for (l, &v) in sc.lanes.iter_mut().zip(kv.val(t)) {
            l.0[lane] = v.mul_add(p, l.0[lane]);
        }
    }
    for (o, l) in out.iter_mut().zip(&sc.lanes) {
        *o = if batched {
            hsum8(&l.0[..8])
        } else {
            l.reduce()
        };
    }
}

/// One head of one query with an f16 cache: Q and the softmax weights rounded to f16 as
/// llama.cpp does before multiplying them with f16 K and V; sums in f64.
fn attend_f16(sc: &mut AttnScratch, kv: &KvView<'_>, qh: &[f32], kq_scale: f32, out: &mut [f32]) {
    sc.qv.clear();
    sc.qv
        .extend(qh.iter().map(|&b| f64::from(f16::from_f32(b).to_f32())));
    sc.scores.clear();
    for t in 0..kv.visible {
        let dot: f64 = kv
            .key(t)
            .iter()
            .zip(&sc.qv)
            .map(|(&a, &b)| f64::from(a) * b)
            .sum();
        #[allow(clippy::cast_possible_truncation)] // the score is an f32 in ggml too
        sc.scores.push(dot as f32);
    }
    ops::softmax_scaled(&mut sc.scores, kq_scale);
    sc.acc.clear();
    sc.acc.resize(kv.hd, 0.0);
    for (t, &s) in sc.scores.iter().enumerate() {
        let s = f64::from(f16::from_f32(s).to_f32());
        for (a, &b) in sc.acc.iter_mut().zip(kv.val(t)) {
            *a += s * f64::from(b);
        }
    }
    for (o, &a) in out.iter_mut().zip(sc.acc.iter()) {
        #[allow(clippy::cast_possible_truncation)]
        {
            *o = a as f32;
        }
    }
}
