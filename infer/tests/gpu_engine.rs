//! The GPU engine against the CPU engine, and tiered runs against the fully resident one.
//!
//! Without a usable GPU every test prints `skipped: ...` and returns.
//! - SmolLM2 and synthetic llama / qwen2 models covering every quant type: greedy tokens equal
//!   the CPU engine's up to the first step where the CPU's own top-2 margin is below
//!   `NEAR_TIE` (the two engines sum in different orders; a near tie is a rounding question),
//!   first-token logits within `LOGIT_TOL`; the max difference is printed.
//! - Budgets that force all three tiers (VRAM, pinned RAM, storage) give logits bit-identical
//!   to the fully resident run, token after token.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use llmstream::{BackendChoice, Config, Context};
use llmstream_infer::gpu::plan::Tier;
use llmstream_infer::gpu::{GpuConfig, GpuEngine};
use llmstream_infer::sampler::argmax;
use llmstream_infer::synth::{self, QuantMix, SynthSpec, TokenizerSource};
use llmstream_infer::{weights::Weights, HParams, InferError, KvType, Transformer};
use std::path::{Path, PathBuf};

const NEAR_TIE: f32 = 0.5;
const LOGIT_TOL: f32 = 0.5;

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

/// Greedy `steps` tokens on both engines from `prompt`; returns (equal steps before the first
/// divergence or near tie, max first-token logit difference).
fn compare(g: &mut GpuEngine, c: &Transformer, prompt: &[u32], steps: usize) -> (usize, f32) {
    g.reset();
    let mut st = c.new_state(512, KvType::F16);
    let mut lc = c.forward(&mut st, prompt).unwrap();
    g.forward(prompt).unwrap();
    let lg = g.logits().unwrap();
    let worst = lc
        .iter()
        .zip(&lg)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let mut lg = lg;
    for step in 0..steps {
        let (tc, tg) = (argmax(&lc), argmax(&lg));
        if margin(&lc) < NEAR_TIE {
            eprintln!(
                "  step {step}: near tie on the CPU (margin {:.3}), stop comparing",
                margin(&lc)
            );
            return (step, worst);
        }
        assert_eq!(
            tc,
            tg,
            "step {step}: CPU {tc}, GPU {tg} (CPU margin {})",
            margin(&lc)
        );
        lc = c.forward(&mut st, &[tc]).unwrap();
        g.forward(&[tg]).unwrap();
        lg = g.logits().unwrap();
    }
    (steps, worst)
}

fn check_against_cpu(path: &Path, prompts: &[Vec<u32>]) {
    let Some(mut g) = gpu(path, GpuConfig::default()) else {
        return;
    };
    assert_eq!(
        g.plan.count(Tier::Vram),
        g.hp.n_layer,
        "small model fully resident"
    );
    let c = cpu(path);
    let mut worst = 0f32;
    for p in prompts {
        let (n, w) = compare(&mut g, &c, p, 24);
        eprintln!(
            "{}: prompt of {} tokens: {n} greedy steps equal, first-token max |dlogit| {w:.5}",
            path.display(),
            p.len()
        );
        worst = worst.max(w);
    }
    eprintln!(
        "{}: max |GPU - CPU| first-token logit = {worst:.5}",
        path.display()
    );
    assert!(worst <= LOGIT_TOL, "logits differ by {worst}");
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

fn synth_model(arch: &str, quant: QuantMix, name: &str) -> Option<PathBuf> {
    let tok_src = smollm2();
    if !tok_src.exists() {
        eprintln!("skipped: {} absent", tok_src.display());
        return None;
    }
    let g = llmstream::gguf::GgufFile::open(&tok_src).unwrap();
    let tok = TokenizerSource::from_gguf(&g).unwrap();
    let spec = SynthSpec {
        quant,
        seed: 7,
        ..SynthSpec::preset(arch).unwrap()
    };
    let plan = synth::Plan::new(&spec, &tok).unwrap();
    let path =
        std::env::temp_dir().join(format!("llmstream-gpu-{}-{name}.gguf", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    synth::write(&plan, f, &|_| {}).unwrap();
    Some(path)
}

#[test]
fn synthetic_llama_and_qwen2_every_quant_type_gpu_equals_cpu() {
    if let Some(e) = gpu(&smollm2(), GpuConfig::default()) {
        drop(e);
    } else {
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

/// Logits of `steps` greedy tokens after `prompt`.
fn trace(g: &mut GpuEngine, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
    g.reset();
    g.forward(prompt).unwrap();
    let mut out = vec![g.logits().unwrap()];
    for _ in 0..steps {
        let t = g.next_token(None).unwrap();
        g.forward(&[t]).unwrap();
        out.push(g.logits().unwrap());
    }
    out
}

#[test]
fn three_tier_runs_equal_the_resident_run_bit_for_bit() {
    let p = smollm2();
    if !p.exists() {
        eprintln!("skipped: {} absent", p.display());
        return;
    }
    let Some(mut resident) = gpu(&p, GpuConfig::default()) else {
        return;
    };
    let prompt = [1u32, 504, 3458, 282, 4649, 314, 3158];
    let want = trace(&mut resident, &prompt, 12);
    let fixed = resident.fixed_vram();
    let layer = (0..resident.hp.n_layer)
        .map(|i| {
            let c = Context::new(Config {
                backend: BackendChoice::Host,
                ..Config::default()
            })
            .unwrap();
            c.open_model(&p).unwrap().layer_bytes(i).unwrap()
        })
        .max()
        .unwrap();
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
}
