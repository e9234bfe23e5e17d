//! Model weights, loaded through libllmstream's streaming API (one bulk read per layer into host
//! memory; tensors are views into the layer's bytes) — the same path the GPU uses.

use crate::config::{Arch, HParams};
use crate::error::{InferError, Result};
use crate::quant;
use llmstream::gguf::{GgmlType, TensorInfo};
use llmstream::{BufferKind, Context, HostView, Model};
use std::sync::Arc;

/// Bytes of one tensor.
#[derive(Debug, Clone)]
enum Bytes {
    View {
        view: Arc<HostView>,
        off: usize,
        len: usize,
    },
    Owned(Arc<Vec<u8>>),
}

/// A weight tensor: type, shape (ggml order, innermost first) and bytes.
#[derive(Debug, Clone)]
pub struct Tensor {
    /// Name in the GGUF file.
    pub name: String,
    /// ggml type.
    pub ty: GgmlType,
    /// Dimensions, innermost first.
    pub dims: Vec<usize>,
    bytes: Bytes,
}

impl Tensor {
    /// The raw bytes.
    pub fn data(&self) -> &[u8] {
        match &self.bytes {
            Bytes::View { view, off, len } => &view[*off..*off + *len],
            Bytes::Owned(v) => v,
        }
    }

    /// Row length (innermost dimension).
    pub fn cols(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Number of rows (product of the outer dimensions).
    pub fn rows(&self) -> usize {
        self.dims.iter().skip(1).product()
    }

    /// As a matrix for the quantized products.
    pub fn matrix(&self) -> Result<quant::QMatrix<'_>> {
        quant::QMatrix::new(self.ty, self.rows(), self.cols(), self.data())
            .map_err(|e| InferError::Quant(e.to_string()))
    }

    /// Dequantize the whole tensor to f32 (norm weights, biases).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let n: usize = self.dims.iter().product();
        let mut out = vec![0f32; n];
        quant::dequantize(self.ty, self.data(), &mut out)
            .map_err(|e| InferError::Quant(format!("{}: {e}", self.name)))?;
        Ok(out)
    }
}

/// One transformer block.
#[derive(Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Tensor,
    pub wk: Tensor,
    pub wv: Tensor,
    pub wo: Tensor,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Tensor,
    pub w_up: Tensor,
    pub w_down: Tensor,
    /// Bytes of the layer's span (what was read).
    pub bytes: u64,
}

impl LayerWeights {
    /// Load layer `i` of `model` through `ctx`: one bulk read of its span into host memory,
    /// tensors as views into it.
    pub fn load(ctx: &Context, model: &Model, hp: &HParams, i: usize) -> Result<Self> {
        let g = model.gguf();
        let need = |name: &str, t: Option<Tensor>| {
            t.ok_or_else(|| InferError::Tensor {
                name: name.into(),
                problem: "is missing".into(),
            })
        };
        let layer = model.layer(i)?;
        // One bulk read of the layer's span; tensors are views into it.
        let view = Arc::new(
            model
                .load_layer_owned(ctx, i, BufferKind::Host)?
                .into_host_view()?,
        );
        let find = |suffix: &str| -> Option<Tensor> {
            let name = format!("blk.{i}.{suffix}");
            let &ti = layer
                .tensors
                .iter()
                .find(|&&ti| g.tensors[ti].name == name)?;
            let t = &g.tensors[ti];
            let off = usize::try_from(t.offset - layer.span.start).ok()?;
            let len = usize::try_from(t.size).ok()?;
            Some(Tensor {
                name,
                ty: t.ggml_type,
                dims: dims_of(t).ok()?,
                bytes: Bytes::View {
                    view: Arc::clone(&view),
                    off,
                    len,
                },
            })
        };
        let req = |suffix: &str| need(&format!("blk.{i}.{suffix}"), find(suffix));
        let (d, kv) = (hp.n_embd, hp.n_head_kv * hp.head_dim);
        let q_out = hp.n_head * hp.head_dim;
        let lw = LayerWeights {
            attn_norm: req("attn_norm.weight")?.to_f32()?,
            wq: req("attn_q.weight")?,
            wk: req("attn_k.weight")?,
            wv: req("attn_v.weight")?,
            wo: req("attn_output.weight")?,
            bq: find("attn_q.bias").map(|t| t.to_f32()).transpose()?,
            bk: find("attn_k.bias").map(|t| t.to_f32()).transpose()?,
            bv: find("attn_v.bias").map(|t| t.to_f32()).transpose()?,
            ffn_norm: req("ffn_norm.weight")?.to_f32()?,
            w_gate: req("ffn_gate.weight")?,
            w_up: req("ffn_up.weight")?,
            w_down: req("ffn_down.weight")?,
            bytes: view.len() as u64,
        };
        check_shape(&lw.wq, &[d, q_out])?;
        check_shape(&lw.wk, &[d, kv])?;
        check_shape(&lw.wv, &[d, kv])?;
        check_shape(&lw.wo, &[q_out, d])?;
        check_shape(&lw.w_gate, &[d, hp.n_ff])?;
        check_shape(&lw.w_up, &[d, hp.n_ff])?;
        check_shape(&lw.w_down, &[hp.n_ff, d])?;
        let bias_ok = |b: &Option<Vec<f32>>, n: usize, name: &str| match b {
            Some(b) if b.len() != n => Err(InferError::Tensor {
                name: format!("blk.{i}.{name}"),
                problem: format!("{} values, expected {n}", b.len()),
            }),
            _ => Ok(()),
        };
        bias_ok(&lw.bq, q_out, "attn_q.bias")?;
        bias_ok(&lw.bk, kv, "attn_k.bias")?;
        bias_ok(&lw.bv, kv, "attn_v.bias")?;
        if lw.attn_norm.len() != d || lw.ffn_norm.len() != d {
            return Err(InferError::Tensor {
                name: format!("blk.{i}.attn_norm/ffn_norm"),
                problem: "norm width differs from the embedding width".into(),
            });
        }
        if hp.arch == Arch::Qwen2 && (lw.bq.is_none() || lw.bk.is_none() || lw.bv.is_none()) {
            tracing::warn!("qwen2 layer {i} has no QKV biases");
        }
        Ok(lw)
    }
}

/// Llama 3 RoPE frequency factors (`rope_freqs.weight`, any float or quantized type, exactly
/// `n_rot / 2` of them), when the model has them.
pub fn load_rope_freqs(ctx: &Context, model: &Model, hp: &HParams) -> Result<Option<Vec<f32>>> {
    const NAME: &str = "rope_freqs.weight";
    let Some(t) = model.gguf().tensor(NAME) else {
        return Ok(None);
    };
    let n: u64 = t.dims.iter().product();
    if n != (hp.n_rot / 2) as u64 {
        return Err(InferError::Tensor {
            name: NAME.into(),
            problem: format!("{n} factors, expected {}", hp.n_rot / 2),
        });
    }
    let bytes = model.read_tensor(ctx, NAME)?;
    let mut f = vec![0f32; hp.n_rot / 2];
    quant::dequantize(t.ggml_type, &bytes, &mut f)
        .map_err(|e| InferError::Quant(format!("{NAME}: {e}")))?;
    Ok(Some(f))
}

/// All weights of a model.
#[derive(Debug)]
pub struct Weights {
    pub token_embd: Tensor,
    pub output_norm: Vec<f32>,
    /// `output.weight`, or `token_embd` when the output is tied.
    pub output: Tensor,
    /// True when `output` is `token_embd` (no `output.weight` in the file).
    pub output_tied: bool,
    /// Llama 3 RoPE frequency factors (`rope_freqs.weight`).
    pub rope_freqs: Option<Vec<f32>>,
    pub layers: Vec<LayerWeights>,
    /// Bytes of weights loaded.
    pub bytes: u64,
}

fn dims_of(t: &TensorInfo) -> Result<Vec<usize>> {
    t.dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| InferError::Tensor {
            name: t.name.clone(),
            problem: "dimension does not fit in memory".into(),
        })
}

fn check_shape(t: &Tensor, want: &[usize]) -> Result<()> {
    if t.dims != want {
        return Err(InferError::Tensor {
            name: t.name.clone(),
            problem: format!("shape {:?}, expected {want:?}", t.dims),
        });
    }
    Ok(())
}

impl Weights {
    /// Load every tensor of `model` through `ctx`.
    pub fn load(ctx: &Context, model: &Model, hp: &HParams) -> Result<Self> {
        let g = model.gguf();
        let mut bytes = 0u64;
        let global = |name: &str| -> Result<Option<Tensor>> {
            let Some(t) = g.tensor(name) else {
                return Ok(None);
            };
            let data = model.read_tensor(ctx, name)?;
            Ok(Some(Tensor {
                name: name.into(),
                ty: t.ggml_type,
                dims: dims_of(t)?,
                bytes: Bytes::Owned(Arc::new(data)),
            }))
        };
        let need = |name: &str, t: Option<Tensor>| {
            t.ok_or_else(|| InferError::Tensor {
                name: name.into(),
                problem: "is missing".into(),
            })
        };
        let token_embd = need("token_embd.weight", global("token_embd.weight")?)?;
        check_shape(&token_embd, &[hp.n_embd, token_embd.rows()])?;
        let output_norm = need("output_norm.weight", global("output_norm.weight")?)?;
        check_shape(&output_norm, &[hp.n_embd])?;
        let untied = global("output.weight")?;
        let output_tied = untied.is_none();
        let output = untied.unwrap_or_else(|| token_embd.clone());
        check_shape(&output, &[hp.n_embd, output.rows()])?;
        let rope_freqs = load_rope_freqs(ctx, model, hp)?;
        bytes += (token_embd.data().len() + output.data().len()) as u64;

        if model.layer_count() != hp.n_layer {
            return Err(InferError::Metadata {
                key: "block_count".into(),
                problem: format!(
                    "says {} but the file has {} layers",
                    hp.n_layer,
                    model.layer_count()
                ),
            });
        }
        let mut layers = Vec::with_capacity(hp.n_layer);
        for i in 0..hp.n_layer {
            let lw = LayerWeights::load(ctx, model, hp, i)?;
            bytes += lw.bytes;
            layers.push(lw);
        }
        Ok(Self {
            token_embd,
            output_norm: output_norm.to_f32()?,
            output,
            output_tied,
            rope_freqs,
            layers,
            bytes,
        })
    }
}
