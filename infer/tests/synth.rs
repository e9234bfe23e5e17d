//! Synthetic models: written, parsed back, loaded and run by this crate, read by the `gguf`
//! Python package when the reference environment is installed; same seed, same bytes.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use llmstream::gguf::{GgmlType, GgufFile, Value};
use llmstream::{BackendChoice, Config, Context};
use llmstream_infer::synth::{
    self, blocks, Plan, QuantMix, SynthError, SynthSpec, TokenizerSource,
};
use llmstream_infer::{weights::Weights, Arch, HParams, KvType, Transformer};
use std::path::{Path, PathBuf};

fn smollm2() -> Option<PathBuf> {
    let path = std::env::var_os("LLMSTREAM_SHARED_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
            PathBuf::from,
        )
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} is absent (the tokenizer source)",
            path.display()
        );
        None
    }
}

fn tokenizer() -> Option<(GgufFile, TokenizerSource)> {
    let g = GgufFile::open(&smollm2()?).unwrap();
    let tok = TokenizerSource::from_gguf(&g).unwrap();
    Some((g, tok))
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("llmstream-synth-{}-{name}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn spec(preset: &str, quant: QuantMix) -> SynthSpec {
    SynthSpec {
        quant,
        seed: 42,
        ..SynthSpec::preset(preset).unwrap()
    }
}

fn write_file(plan: &Plan, path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    let f = synth::write(plan, f, &|_| {}).unwrap();
    f.sync_all().unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), plan.file_len());
}

/// Load `path` through the library and run a few tokens: the logits are finite and vary.
fn load_and_run(path: &Path, spec: &SynthSpec, n_vocab: usize) {
    let ctx = Context::new(Config {
        backend: BackendChoice::Host,
        ..Config::default()
    })
    .unwrap();
    let model = ctx.open_model(path).unwrap();
    let hp = HParams::from_gguf(model.gguf()).unwrap();
    assert_eq!(hp.arch, spec.arch);
    assert_eq!(
        (hp.n_layer, hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv),
        (
            spec.n_layer,
            spec.n_embd,
            spec.n_ff,
            spec.n_head,
            spec.n_head_kv
        )
    );
    assert_eq!(hp.head_dim, spec.head_dim());
    assert_eq!(hp.rope_freq_base, spec.rope_base);
    assert_eq!(hp.rms_eps, spec.rms_eps);
    let w = Weights::load(&ctx, &model, &hp).unwrap();
    assert_eq!(w.output_tied, spec.tied);
    if spec.arch == Arch::Qwen2 {
        assert!(w.layers.iter().all(|l| l.bq.is_some() && l.bv.is_some()));
    }
    let t = Transformer { hp, w };
    assert_eq!(t.n_vocab(), n_vocab);
    let mut st = t.new_state(32, KvType::F32);
    let prompt = [1u32, 500, 12_000, 7];
    let logits = t.forward(&mut st, &prompt).unwrap();
    let next = t.forward(&mut st, &[300]).unwrap();
    for l in [&logits, &next] {
        assert_eq!(l.len(), n_vocab);
        assert!(l.iter().all(|x| x.is_finite()));
        let (lo, hi) = l
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        // Unit-scale logits: spread, and not blown up by the layers.
        assert!(hi - lo > 1.0 && hi - lo < 1000.0, "logit range {lo}..{hi}");
    }
    assert_ne!(logits, next);
}

fn check_model(preset: &str, tied: bool) {
    let Some((src, tok)) = tokenizer() else {
        return;
    };
    let spec = SynthSpec {
        tied,
        ..spec(preset, QuantMix::All)
    };
    let plan = Plan::new(&spec, &tok).unwrap();
    let types: std::collections::HashSet<GgmlType> = plan.tensors().iter().map(|t| t.ty).collect();
    for ty in blocks::TYPES {
        assert!(types.contains(&ty), "{preset}: no {ty} tensor");
    }
    let file = TempFile::new(&format!("{preset}-{tied}.gguf"));
    write_file(&plan, &file.0);

    // Parsed back: the plan's metadata and tensors, every tokenizer key of the source.
    let g = GgufFile::open(&file.0).unwrap();
    assert_eq!(g.metadata, plan.metadata());
    let src_tok: Vec<_> = src
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .collect();
    let ours: Vec<_> = g
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .collect();
    assert_eq!(ours, src_tok);
    assert_eq!(g.architecture(), Some(spec.arch_name()));
    assert_eq!(g.tensors.len(), plan.tensors().len());
    for (t, p) in g.tensors.iter().zip(plan.tensors()) {
        assert_eq!((&t.name, &t.dims, t.ggml_type), (&p.name, &p.dims, p.ty));
    }
    assert_eq!(g.tensor("output.weight").is_none(), tied);
    assert_eq!(
        g.tensor("blk.0.attn_k.bias").is_some(),
        spec.arch == Arch::Qwen2
    );
    assert_eq!(g.layers.len(), spec.n_layer);
    assert!(g.layers.iter().all(|l| l.contiguous));

    load_and_run(&file.0, &spec, tok.n_vocab);
    python_reads(&file.0, g.tensors.len());
}

#[test]
fn tiny_llama_with_every_type_loads_and_runs() {
    check_model("tiny-llama", false);
}

#[test]
fn tiny_qwen2_with_every_type_loads_and_runs() {
    check_model("tiny-qwen2", false);
}

#[test]
fn tied_output_loads_and_runs() {
    check_model("tiny-llama", true);
}

/// The reference `gguf` package opens the file and dequantizes every tensor to finite values;
/// llama.cpp (llama-cpp-python), when installed, loads it and gives finite, varied logits.
fn python_reads(path: &Path, n_tensors: usize) {
    let python = Path::new("/root/refenv/bin/python");
    if !python.exists() {
        eprintln!(
            "skipped: {} is absent (gguf Python check)",
            python.display()
        );
        return;
    }
    let script = r#"
import sys, numpy as np, gguf
from gguf.quants import dequantize
r = gguf.GGUFReader(sys.argv[1])
for t in r.tensors:
    v = dequantize(t.data, t.tensor_type)
    assert np.isfinite(v).all(), t.name
    assert v.size == int(np.prod(t.shape)), t.name
print(len(r.tensors), r.fields["general.architecture"].contents())
try:
    import llama_cpp
except ImportError:
    print("skipped: llama_cpp is absent")
    sys.exit(0)
m = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=32, logits_all=True, verbose=False)
m.eval([1, 500, 12000, 7])
lg = np.array(m.scores[3])
assert np.isfinite(lg).all() and lg.max() - lg.min() > 1.0, (lg.min(), lg.max())
print("llama.cpp ran it")
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("{n_tensors} ")),
        "gguf read: {stdout}"
    );
    eprintln!("{stdout}");
}

#[test]
fn same_seed_same_bytes() {
    let Some((_, tok)) = tokenizer() else {
        return;
    };
    let write_vec = |seed| {
        let s = SynthSpec {
            seed,
            ..spec("tiny-qwen2", QuantMix::All)
        };
        synth::write(&Plan::new(&s, &tok).unwrap(), Vec::new(), &|_| {}).unwrap()
    };
    let a = write_vec(1);
    assert!(a == write_vec(1), "same seed, other bytes");
    let c = write_vec(2);
    assert_eq!(a.len(), c.len());
    assert!(a != c, "another seed, same bytes");
    // Only the data (and the description naming the seed) differ.
    let (ga, gc) = (
        GgufFile::parse_bytes(&a).unwrap(),
        GgufFile::parse_bytes(&c).unwrap(),
    );
    assert_eq!(ga.tensors, gc.tensors);
}

#[test]
fn progress_reaches_the_file_length() {
    let Some((_, tok)) = tokenizer() else {
        return;
    };
    let plan = Plan::new(&spec("tiny-llama", QuantMix::Q4KM), &tok).unwrap();
    let last = std::sync::atomic::AtomicU64::new(0);
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let out = synth::write(&plan, Vec::new(), &|n| {
        use std::sync::atomic::Ordering::Relaxed;
        assert!(n >= last.load(Relaxed));
        last.store(n, Relaxed);
        calls.fetch_add(1, Relaxed);
    })
    .unwrap();
    assert_eq!(out.len() as u64, plan.file_len());
    assert_eq!(last.into_inner(), plan.file_len());
    assert!(calls.into_inner() >= 2);
}

#[test]
fn llama_8b_q4_k_m_has_the_size_of_the_real_one() {
    let Some((_, tok)) = tokenizer() else {
        return;
    };
    let plan = Plan::new(&spec("llama3.1-8b", QuantMix::Q4KM), &tok).unwrap();
    // 4.47 GB with the SmolLM2 vocabulary (49152); 291 tensors.
    let len = plan.file_len();
    assert!((4.4e9..4.55e9).contains(&(len as f64)), "{len}");
    assert_eq!(plan.tensors().len(), 2 + 32 * 9 + 1);
    let count = |ty| plan.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!(count(GgmlType::Q6_K), 33);
    assert_eq!(count(GgmlType::F32), 65);
    let md = |k: &str| {
        plan.metadata()
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(md("general.file_type"), Some(Value::U32(15)));
    assert_eq!(md("llama.rope.freq_base"), Some(Value::F32(500_000.0)));
    assert_eq!(md("llama.attention.head_count_kv"), Some(Value::U32(8)));
    assert_eq!(md("llama.rope.dimension_count"), Some(Value::U32(128)));
}

#[test]
fn k_quants_need_rows_of_256() {
    let Some((_, tok)) = tokenizer() else {
        return;
    };
    let s = SynthSpec {
        n_embd: 4 * 96,
        ..spec("tiny-llama", QuantMix::Q4KM)
    };
    let e = Plan::new(&s, &tok).unwrap_err();
    assert!(
        matches!(&e, SynthError::NotWholeBlocks { tensor, block: 256, cols: 384, .. }
            if tensor == "token_embd.weight"),
        "{e}"
    );
    // The same shape is fine with a 32-block type.
    Plan::new(
        &SynthSpec {
            quant: QuantMix::Single(GgmlType::Q8_0),
            ..s
        },
        &tok,
    )
    .unwrap();
}
