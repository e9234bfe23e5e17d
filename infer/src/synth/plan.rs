//! The metadata and tensor table of a synthetic model.

use super::blocks::{tensor_seed, Dist};
use super::mix::{Matrix, MixContext, Role};
use super::{SynthError, SynthSpec, TokenizerSource};
use crate::config::Arch;
use llmstream::gguf::{GgmlType, GgufWriter, Value};

/// Mean and standard deviation of the RMSNorm weights.
const NORM: Dist = Dist {
    mean: 1.0,
    std: 0.02,
};
/// Mean and standard deviation of qwen2's QKV biases.
const BIAS: Dist = Dist {
    mean: 0.0,
    std: 0.02,
};

/// One tensor to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// llama.cpp's name (`blk.3.attn_q.weight`).
    pub name: String,
    /// Dimensions, innermost (row length) first.
    pub dims: Vec<u64>,
    /// Its type.
    pub ty: GgmlType,
    /// Its values' distribution.
    pub dist: Dist,
    /// Its generator seed.
    pub seed: u64,
    /// Bytes of data.
    pub size: u64,
}

/// Everything needed to write a synthetic model.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(super) writer: GgufWriter,
    tensors: Vec<PlannedTensor>,
    file_len: u64,
}

/// A tensor before its type is known.
struct Slot {
    name: String,
    dims: Vec<u64>,
    /// `Some` for a weight matrix (its type comes from the mix), `None` for an F32 vector.
    matrix: Option<Matrix>,
    dist: Dist,
}

fn u64_of(x: usize) -> u64 {
    // usize is at most 64 bits on every supported target.
    u64::try_from(x).unwrap_or(u64::MAX)
}

fn u32_of(x: usize, what: &str) -> Result<u32, SynthError> {
    u32::try_from(x).map_err(|_| SynthError::Shape(format!("{what} {x} does not fit in 32 bits")))
}

/// The tensors of the model in file order: `token_embd`, the layers, `output_norm`, `output`.
fn slots(spec: &SynthSpec, n_vocab: usize) -> Vec<Slot> {
    let (d, ff, vocab) = (u64_of(spec.n_embd), u64_of(spec.n_ff), u64_of(n_vocab));
    let hd = u64_of(spec.head_dim());
    let (q, kv) = (u64_of(spec.n_head) * hd, u64_of(spec.n_head_kv) * hd);
    let matrix = |name: String, role, layer, cols: u64, rows: u64| Slot {
        name,
        dims: vec![cols, rows],
        matrix: Some(Matrix { role, layer, cols }),
        dist: Dist::weights(cols, spec.gain),
    };
    let vector = |name: String, len: u64, dist| Slot {
        name,
        dims: vec![len],
        matrix: None,
        dist,
    };
    let mut v = vec![matrix(
        "token_embd.weight".into(),
        Role::TokenEmbd,
        None,
        d,
        vocab,
    )];
    for i in 0..spec.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        let l = Some(i);
        v.push(vector(n("attn_norm.weight"), d, NORM));
        v.push(matrix(n("attn_q.weight"), Role::AttnQ, l, d, q));
        if spec.arch == Arch::Qwen2 {
            v.push(vector(n("attn_q.bias"), q, BIAS));
        }
        v.push(matrix(n("attn_k.weight"), Role::AttnK, l, d, kv));
        if spec.arch == Arch::Qwen2 {
            v.push(vector(n("attn_k.bias"), kv, BIAS));
        }
        v.push(matrix(n("attn_v.weight"), Role::AttnV, l, d, kv));
        if spec.arch == Arch::Qwen2 {
            v.push(vector(n("attn_v.bias"), kv, BIAS));
        }
        v.push(matrix(n("attn_output.weight"), Role::AttnOutput, l, q, d));
        v.push(vector(n("ffn_norm.weight"), d, NORM));
        v.push(matrix(n("ffn_gate.weight"), Role::FfnGate, l, d, ff));
        v.push(matrix(n("ffn_up.weight"), Role::FfnUp, l, d, ff));
        v.push(matrix(n("ffn_down.weight"), Role::FfnDown, l, ff, d));
    }
    v.push(vector("output_norm.weight".into(), d, NORM));
    if !spec.tied {
        v.push(matrix("output.weight".into(), Role::Output, None, d, vocab));
    }
    v
}

impl Plan {
    /// Lay out the model `spec` with the tokenizer of `tok`.
    pub fn new(spec: &SynthSpec, tok: &TokenizerSource) -> Result<Self, SynthError> {
        spec.validate()?;
        let slots = slots(spec, tok.n_vocab);
        let matrices: Vec<Matrix> = slots.iter().filter_map(|s| s.matrix).collect();
        let ctx = MixContext {
            n_layer: spec.n_layer,
            tied: spec.tied,
            // llama.cpp's LLM_TYPE_70B: a Llama with 80 layers and grouped KV heads.
            is_70b: spec.arch == Arch::Llama && spec.n_layer == 80 && spec.n_head_kv < spec.n_head,
        };
        let mut types = spec.quant.assign(ctx, &matrices).into_iter();

        let mut w = GgufWriter::new();
        add_metadata(&mut w, spec, tok)?;
        let mut tensors = Vec::with_capacity(slots.len());
        for s in slots {
            let ty = match s.matrix {
                Some(m) => {
                    let ty = types.next().unwrap_or(GgmlType::F32);
                    if m.cols % ty.block_size() != 0 {
                        return Err(SynthError::NotWholeBlocks {
                            tensor: s.name,
                            ty,
                            cols: m.cols,
                            block: ty.block_size(),
                        });
                    }
                    ty
                }
                None => GgmlType::F32,
            };
            w.add_tensor(s.name.clone(), &s.dims, ty)?;
            tensors.push(PlannedTensor {
                seed: tensor_seed(spec.seed, &s.name),
                name: s.name,
                dims: s.dims,
                ty,
                dist: s.dist,
                size: 0,
            });
        }
        let (layout, file_len) = w.layout()?;
        for (t, info) in tensors.iter_mut().zip(&layout) {
            t.size = info.size;
        }
        Ok(Self {
            writer: w,
            tensors,
            file_len,
        })
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[PlannedTensor] {
        &self.tensors
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        self.writer.metadata()
    }

    /// The length of the file.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }
}

fn add_metadata(
    w: &mut GgufWriter,
    spec: &SynthSpec,
    tok: &TokenizerSource,
) -> Result<(), SynthError> {
    let arch = spec.arch_name();
    let k = |s: &str| format!("{arch}.{s}");
    let u = |x: usize, what: &str| u32_of(x, what).map(Value::U32);
    w.add_kv("general.architecture", Value::String(arch.into()))?;
    w.add_kv("general.type", Value::String("model".into()))?;
    w.add_kv(
        "general.name",
        Value::String(format!("synthetic {} {}", spec.name, spec.quant)),
    )?;
    w.add_kv(
        "general.description",
        Value::String(format!(
            "random weights with real shapes made by llmstream synth (seed {}); not a trained \
             model",
            spec.seed
        )),
    )?;
    w.add_kv(k("block_count"), u(spec.n_layer, "layers")?)?;
    w.add_kv(k("context_length"), u(spec.n_ctx, "context length")?)?;
    w.add_kv(k("embedding_length"), u(spec.n_embd, "embedding width")?)?;
    w.add_kv(k("feed_forward_length"), u(spec.n_ff, "ffn width")?)?;
    w.add_kv(k("attention.head_count"), u(spec.n_head, "heads")?)?;
    w.add_kv(k("attention.head_count_kv"), u(spec.n_head_kv, "kv heads")?)?;
    w.add_kv(k("rope.freq_base"), Value::F32(spec.rope_base))?;
    w.add_kv(
        k("attention.layer_norm_rms_epsilon"),
        Value::F32(spec.rms_eps),
    )?;
    if let Some(ft) = spec.quant.file_type() {
        w.add_kv("general.file_type", Value::U32(ft))?;
    }
    w.add_kv(k("vocab_size"), u(tok.n_vocab, "vocabulary")?)?;
    w.add_kv(k("rope.dimension_count"), u(spec.head_dim(), "head width")?)?;
    w.add_kv("general.quantization_version", Value::U32(2))?;
    for (key, value) in &tok.metadata {
        w.add_kv(key.clone(), value.clone())?;
    }
    Ok(())
}
