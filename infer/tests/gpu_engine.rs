//! The GPU engine against the CPU engine, and tiered runs against the fully resident one.
//!
//! Without a usable GPU every test prints `skipped: ...` and returns.
//! - SmolLM2 and synthetic llama / qwen2 models covering every quant type: the GPU against the
//!   CPU engine with an f16 KV cache, held to the standard the CPU engine meets against itself
//!   with an f32 cache (see `compare`): SmolLM2 amplifies last-bit differences (its f16- and
//!   f32-cache CPU runs differ by up to 1.5 in logits and part ways after 5 tokens on some
//!   prompts), so a fixed tolerance would be either meaningless or wrong.
//! - Budgets that force all three tiers (VRAM, pinned RAM, storage) give logits bit-identical
//!   to the fully resident run, token after token.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use llmstream::gguf::GgmlType;
use llmstream::{BackendChoice, Config, Context};
use llmstream_infer::gpu::plan::Tier;
use llmstream_infer::gpu::{GpuConfig, GpuEngine, Split};
use llmstream_infer::sampler::{argmax, Sampler, SamplerConfig};
use llmstream_infer::synth::{self, QuantMix, SynthSpec, TokenizerSource};
use llmstream_infer::{weights::Weights, HParams, InferError, KvType, Transformer};
use std::path::{Path, PathBuf};

const NEAR_TIE: f32 = 0.1;

fn smollm2() -> PathBuf {
    std::env::var_os("LLMSTREAM_SHARED_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
            PathBuf::from,
        )
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn gpu(path: &Path, cfg: GpuConfig) -> Option<GpuEngine> {
    match GpuEngine::load(path, cfg) {
        Ok(e) => Some(e),
        Err(InferError::NoGpu(why)) => {
            eprintln!("skipped: {why}");
            None
        }
        Err(InferError::Stream(e @ llmstream::Error::BackendUnavailable { .. })) => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Whether a usable GPU is there (else the test says why it is skipped).
fn gpu_present() -> bool {
    match llmstream_infer::gpu::Gpu::new(0) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

fn cpu(path: &Path) -> Transformer {
    let ctx = Context::new(Config {
        backend: BackendChoice::Host,
        ..Config::default()
    })
    .unwrap();
    let model = ctx.open_model(path).unwrap();
    let hp = HParams::from_gguf(model.gguf()).unwrap();
    let w = Weights::load(&ctx, &model, &hp).unwrap();
    Transformer { hp, w }
}

fn margin(l: &[f32]) -> f32 {
    let mut a = f32::NEG_INFINITY;
    let mut b = f32::NEG_INFINITY;
    for &v in l {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a - b
}

/// Greedy `steps` tokens on the GPU and on two CPU runs: f16 KV (the reference, as the GPU
/// stores its cache in f16) and f32 KV (the same engine with a different, equally legitimate
/// cache precision). Compared while the two CPU runs agree and the reference's top-2 margin is
/// at least `NEAR_TIE` and at least the largest logit difference between the two CPU runs so
/// far (below that, which token wins is decided by rounding, not by the engine): the GPU must
/// pick the reference's token at every such step, and its
/// logits must be no further from the reference than the f32-KV run is (times 2, plus 1e-3).
/// Returns (steps compared, max |GPU - ref|, max |f32 - ref|).
fn compare(g: &mut GpuEngine, c: &Transformer, prompt: &[u32], steps: usize) -> (usize, f32, f32) {
    let maxdiff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    g.reset();
    let mut s16 = c.new_state(512, KvType::F16);
    let mut s32 = c.new_state(512, KvType::F32);
    let mut l16 = c.forward(&mut s16, prompt).unwrap();
    let mut l32 = c.forward(&mut s32, prompt).unwrap();
    g.forward(prompt).unwrap();
    let mut lg = g.logits().unwrap();
    let (mut gpu_d, mut cpu_d) = (0f32, 0f32);
    for step in 0..steps {
        gpu_d = gpu_d.max(maxdiff(&lg, &l16));
        cpu_d = cpu_d.max(maxdiff(&l32, &l16));
        let (t16, t32, tg) = (argmax(&l16), argmax(&l32), argmax(&lg));
        // A margin below the spread between the two CPU runs is a rounding question.
        if t16 != t32 || margin(&l16) < NEAR_TIE.max(cpu_d) {
            eprintln!(
                "  step {step}: CPU f16/f32 runs {} (margin {:.3}): stop comparing",
                if t16 == t32 { "agree" } else { "disagree" },
                margin(&l16)
            );
            return (step, gpu_d, cpu_d);
        }
        assert_eq!(
            t16,
            tg,
            "step {step}: CPU {t16}, GPU {tg} (CPU margin {})",
            margin(&l16)
        );
        l16 = c.forward(&mut s16, &[t16]).unwrap();
        l32 = c.forward(&mut s32, &[t16]).unwrap();
        g.forward(&[tg]).unwrap();
        lg = g.logits().unwrap();
    }
    (steps, gpu_d, cpu_d)
}

fn check_against_cpu(path: &Path, prompts: &[Vec<u32>]) {
    let Some(g) = gpu(path, GpuConfig::default()) else {
        return;
    };
    assert_eq!(
        g.plan.count(Tier::Vram),
        g.hp.n_layer,
        "small model fully resident"
    );
    check_engine_against_cpu(path, g, prompts);
}

fn check_engine_against_cpu(path: &Path, mut g: GpuEngine, prompts: &[Vec<u32>]) {
    let c = cpu(path);
    for p in prompts {
        let (n, gd, cd) = compare(&mut g, &c, p, 24);
        eprintln!(
            "{}: prompt of {} tokens: {n} greedy steps equal; max |GPU - CPU(f16 KV)| logit {gd:.5}, max |CPU(f32 KV) - CPU(f16 KV)| {cd:.5}",
            path.display(),
            p.len()
        );
        assert!(
            gd <= 2.0 * cd + 1e-3,
            "GPU logits differ by {gd}, the CPU's own f16/f32 KV difference is {cd}"
        );
    }
}

fn prompts(vocab: u32) -> Vec<Vec<u32>> {
    vec![
        vec![1, 504, 3458, 282, 4649, 314],
        vec![
            1,
            12,
            33,
            987,
            2000 % vocab,
            17,
            9,
            4000 % vocab,
            11,
            12,
            13,
            14,
            15,
            16,
            17,
            18,
            19,
            20,
            21,
        ],
        vec![2],
    ]
}

#[test]
fn smollm2_gpu_greedy_equals_cpu() {
    let p = smollm2();
    if !p.exists() {
        eprintln!("skipped: {} absent", p.display());
        return;
    }
    check_against_cpu(&p, &prompts(49152));
}

/// A synthetic model of preset `arch` with SmolLM2's tokenizer, taken from SmolLM2 or from
/// `LLMSTREAM_TOKENIZER_GGUF` (any GGUF that carries it: `scripts/gpu/prepare.sh` makes a 3.5 MB
/// one, so the GPU machine needs no 98 MB model for these tests).
fn synth_model(arch: &str, quant: QuantMix, name: &str) -> Option<PathBuf> {
    let spec = SynthSpec {
        quant,
        seed: 7,
        ..SynthSpec::preset(arch).unwrap()
    };
    synth_spec_model(&spec, name)
}

/// As [`synth_model`], of any shape.
fn synth_spec_model(spec: &SynthSpec, name: &str) -> Option<PathBuf> {
    let tok_src = std::env::var_os("LLMSTREAM_TOKENIZER_GGUF")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .unwrap_or_else(smollm2);
    if !tok_src.exists() {
        eprintln!("skipped: {} absent", tok_src.display());
        return None;
    }
    let g = llmstream::gguf::GgufFile::open(&tok_src).unwrap();
    let tok = TokenizerSource::from_gguf(&g).unwrap();
    let plan = synth::Plan::new(spec, &tok).unwrap();
    let path =
        std::env::temp_dir().join(format!("llmstream-gpu-{}-{name}.gguf", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    synth::write(&plan, f, &|_| {}).unwrap();
    Some(path)
}

#[test]
fn synthetic_llama_and_qwen2_every_quant_type_gpu_equals_cpu() {
    if !gpu_present() {
        return;
    }
    for (arch, name) in [("tiny-llama", "llama"), ("tiny-qwen2", "qwen2")] {
        for (mix, mname) in [(QuantMix::All, "all"), (QuantMix::Q4KM, "q4km")] {
            let Some(path) = synth_model(arch, mix, &format!("{name}-{mname}")) else {
                return;
            };
            check_against_cpu(&path, &prompts(49152));
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The model of the tiered and hybrid runs: SmolLM2, else (the GPU machine may lack it) a
/// synthetic 24-layer llama with its tokenizer and Q4_K for every matrix (equal layers, as the
/// budgets of those tests assume). The flag: a temporary file.
fn tiered_model(name: &str) -> Option<(PathBuf, bool)> {
    let p = smollm2();
    if p.exists() {
        return Some((p, false));
    }
    let spec = SynthSpec {
        n_layer: 24,
        quant: QuantMix::Single(GgmlType::Q4_K),
        seed: 7,
        ..SynthSpec::preset("tiny-llama").unwrap()
    };
    synth_spec_model(&spec, name).map(|p| (p, true))
}

/// The VRAM every plan of `g`'s model needs, and its largest layer: what budgets that force a
/// given placement are made of.
fn budget_units(g: &GpuEngine) -> (u64, u64) {
    let layer = g
        .gguf()
        .layers
        .iter()
        .map(|l| l.span.end - l.span.start)
        .max()
        .unwrap();
    (g.fixed_vram(), layer)
}

/// Logits of `steps` greedy tokens after `prompt`.
fn trace(g: &mut GpuEngine, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
    trace_with(g, prompt, steps, false, |_, t| t)
}

/// As [`trace`], feeding `fed(i, t)` at step `i` for the picked token `t`. With `ahead`, each
/// token is picked with the call ahead ([`GpuEngine::next_token_ahead`]: the GPU looks it up
/// before the host has read it, the host's `forward` of that token taking its place; where
/// `fed` gives another token, that `forward` undoes the call ahead first).
fn trace_with(
    g: &mut GpuEngine,
    prompt: &[u32],
    steps: usize,
    ahead: bool,
    fed: impl Fn(usize, u32) -> u32,
) -> Vec<Vec<f32>> {
    g.reset();
    g.forward(prompt).unwrap();
    let mut out = vec![g.logits().unwrap()];
    for i in 0..steps {
        let t = if ahead {
            assert!(g.can_run_ahead(), "step {i}: the call ahead is possible");
            let t = g.next_token_ahead(None).unwrap();
            assert_eq!(
                g.pos(),
                prompt.len() + i,
                "the call ahead is not counted yet"
            );
            t
        } else {
            g.next_token(None).unwrap()
        };
        g.forward(&[fed(i, t)]).unwrap();
        assert_eq!(g.pos(), prompt.len() + i + 1);
        out.push(g.logits().unwrap());
    }
    out
}

#[test]
fn three_tier_runs_equal_the_resident_run_bit_for_bit() {
    if !gpu_present() {
        return;
    }
    let Some((p, temp)) = tiered_model("tiers") else {
        return;
    };
    let mut resident = gpu(&p, GpuConfig::default()).unwrap();
    let prompt = [1u32, 504, 3458, 282, 4649, 314, 3158];
    let want = trace(&mut resident, &prompt, 12);
    let (fixed, layer) = budget_units(&resident);
    drop(resident);
    for depth in [1usize, 2, 4] {
        let vram_layers = 10u64;
        let cfg = GpuConfig {
            vram_budget: Some(fixed + layer * (depth as u64 + 1 + vram_layers)),
            ram_budget: Some(layer * 10),
            depth,
            ..GpuConfig::default()
        };
        let mut g = gpu(&p, cfg).unwrap();
        let (v, r, s) = (
            g.plan.count(Tier::Vram),
            g.plan.count(Tier::Ram),
            g.plan.count(Tier::Storage),
        );
        eprintln!("depth {depth}: {v} vram, {r} ram, {s} storage layers");
        assert!(v > 0 && r > 0 && s > 0, "plan {:?}", g.plan.tiers);
        let got = trace(&mut g, &prompt, 12);
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            assert!(
                a == b,
                "step {i}: tiered logits differ from the resident run"
            );
        }
        let st = g.take_stats();
        eprintln!("depth {depth}: {}", st.to_json());
    }
    if temp {
        let _ = std::fs::remove_file(&p);
    }
}

#[test]
fn fused_decode_equals_the_unfused_launches_bit_for_bit() {
    if !gpu_present() {
        return;
    }
    for (arch, name) in [("tiny-llama", "llama"), ("tiny-qwen2", "qwen2")] {
        let Some(path) = synth_model(arch, QuantMix::Q4KM, &format!("{name}-fused")) else {
            return;
        };
        let prompt = [1u32, 504, 3458, 282, 4649, 314, 3158];
        let mut fused = gpu(&path, GpuConfig::default()).unwrap();
        assert_eq!(
            fused.fused_layers(),
            4,
            "{arch}: every layer takes the fused path"
        );
        let want = trace(&mut fused, &prompt, 12);
        drop(fused);
        let cfg = GpuConfig {
            fused: false,
            ..GpuConfig::default()
        };
        let mut plain = gpu(&path, cfg).unwrap();
        assert_eq!(plain.fused_layers(), 0);
        let got = trace(&mut plain, &prompt, 12);
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            assert!(
                a == b,
                "{arch} step {i}: fused logits differ from the unfused launches"
            );
        }
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn tokens_fed_ahead_equal_the_host_fed_run_bit_for_bit() {
    if !gpu_present() {
        return;
    }
    // tiny-llama's embedding table is untied (put in VRAM for this), qwen2's is tied
    for (arch, name) in [("tiny-llama", "llama"), ("tiny-qwen2", "qwen2")] {
        let Some(path) = synth_model(arch, QuantMix::Q4KM, &format!("{name}-ahead")) else {
            return;
        };
        let prompt = [1u32, 504, 3458, 282, 4649, 314, 3158];
        let steps = 12;
        let mut g = gpu(&path, GpuConfig::default()).unwrap();
        let vocab = g.n_vocab() as u32;
        // the picked tokens, but the last one replaced (which undoes the call ahead)
        let fed = |i: usize, t: u32| if i + 1 == steps { (t + 1) % vocab } else { t };
        let want = trace_with(&mut g, &prompt, steps, false, fed);
        let got = trace_with(&mut g, &prompt, steps, true, fed);
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            assert!(
                a == b,
                "{arch} step {i}: logits fed ahead differ from the host-fed run"
            );
        }
        // the generation loop: the same greedy tokens with and without the calls ahead, and
        // the position of the last fed token after it (the call ahead of the last pick undone)
        let mut texts = Vec::new();
        for ahead in [true, false] {
            let cfg = GpuConfig {
                ahead,
                ..GpuConfig::default()
            };
            let mut s = llmstream_infer::gpu::GpuSession::load(&path, cfg).unwrap();
            let mut sampler = Sampler::new(SamplerConfig {
                temperature: 0.0,
                ..SamplerConfig::default()
            });
            let mut history = Vec::new();
            let (gen, stats) = s
                .generate(&prompt, steps, &mut sampler, &mut history, |_| {})
                .unwrap();
            let fed = gen.generated_tokens.len() - 1;
            assert_eq!(s.engine.pos(), prompt.len() + fed, "ahead {ahead}");
            assert_eq!(
                stats.decode.calls, fed as u64,
                "ahead {ahead}: decode calls"
            );
            texts.push(gen.generated_tokens);
        }
        assert_eq!(
            texts[0], texts[1],
            "{arch}: greedy tokens with and without calls ahead"
        );
        let _ = std::fs::remove_file(&path);
    }
}

/// Hybrid decode: layers computed by the CPU inside the GPU engine (forced lists, and the
/// `cpu` and `auto` splits of a budget that leaves pinned-RAM layers) against the CPU engine,
/// held to the same tolerance as the all-GPU runs.
#[test]
fn hybrid_cpu_layers_match_the_cpu_engine() {
    if !gpu_present() {
        return;
    }
    let Some((p, p_temp)) = tiered_model("hybrid") else {
        return;
    };
    let resident = gpu(&p, GpuConfig::default()).unwrap();
    let (fixed, layer) = budget_units(&resident);
    let n_layer = resident.hp.n_layer;
    drop(resident);
    // the model of the splits below is removed after them
    let mut paths = vec![(p.clone(), false)];
    for arch in ["tiny-llama", "tiny-qwen2"] {
        if let Some(s) = synth_model(arch, QuantMix::Q4KM, &format!("{arch}-hybrid")) {
            paths.push((s, true));
        }
    }
    for (path, temp) in &paths {
        let cfg = GpuConfig {
            cpu_layers: Some(vec![0, 2, 3]),
            ..GpuConfig::default()
        };
        let g = gpu(path, cfg).unwrap();
        assert_eq!(g.plan.count(Tier::Cpu), 3);
        eprintln!("{}: CPU layers 0, 2, 3", path.display());
        check_engine_against_cpu(path, g, &prompts(49152));
        if *temp {
            let _ = std::fs::remove_file(path);
        }
    }
    // The model with room for 13 layers in VRAM (11 beside the 2 slots of the default depth when
    // layers are streamed), the rest in pinned RAM: all of them on the CPU (no slots), then
    // split by the measured rates.
    for split in [Split::Cpu, Split::Auto] {
        let cfg = GpuConfig {
            vram_budget: Some(fixed + layer * (3 + 10)),
            split,
            ..GpuConfig::default()
        };
        let g = gpu(&p, cfg).unwrap();
        let (v, r, c) = (
            g.plan.count(Tier::Vram),
            g.plan.count(Tier::Ram),
            g.plan.count(Tier::Cpu),
        );
        eprintln!(
            "{split:?}: {v} vram, {r} ram, {c} cpu layers of {n_layer} (CPU probe {:.1} GB/s)",
            g.rates.cpu_bps / 1e9
        );
        assert!(v > 0 && v + r + c == n_layer, "plan {:?}", g.plan.tiers);
        if split == Split::Cpu {
            assert_eq!(
                (r, c, g.plan.slots, v),
                (0, n_layer - v, 0, 13),
                "every pinned-RAM layer on the CPU, no slots"
            );
        } else {
            assert_eq!(g.plan.slots, if r > 0 { 2 } else { 0 }, "{:?}", g.plan);
        }
        // `auto` follows the measured rates: SmolLM2's 3 MB layers may all go to the link.
        check_engine_against_cpu(&p, g, &prompts(49152)[..1]);
    }
    if p_temp {
        let _ = std::fs::remove_file(&p);
    }
}
