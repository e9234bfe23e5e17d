//! Greedy continuations and first-token logits equal llama.cpp's (fixtures made by
//! scripts/gen_generation_fixtures.py).
#![allow(clippy::unwrap_used)]

use llmstream::{BackendChoice, Config, Context};
use llmstream_infer::{sampler::argmax, weights::Weights, HParams, KvType, Transformer};
use std::path::PathBuf;

/// Largest allowed |ours − llama.cpp| over the reference's top-32 first-token logits.
const LOGIT_TOL: f32 = 0.05;

fn shared_models() -> PathBuf {
    std::env::var_os("LLMSTREAM_SHARED_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
            PathBuf::from,
        )
        .join("models")
}

fn cached_models() -> PathBuf {
    std::env::var_os("LLMSTREAM_MODELS").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/llmstream/models"),
        PathBuf::from,
    )
}

fn load(path: &std::path::Path) -> Transformer {
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

fn check(model_path: PathBuf, fixture: &str) {
    if !model_path.exists() {
        eprintln!(
            "skipped: {} not present (scripts/fetch-models.sh fetches it)",
            model_path.display()
        );
        return;
    }
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(fixture),
        )
        .unwrap(),
    )
    .unwrap();
    let t = load(&model_path);
    let mut worst = 0f32;
    let mut mismatches = Vec::new();
    for case in fx["cases"].as_array().unwrap() {
        let prompt: Vec<u32> = case["prompt_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want: Vec<u32> = case["greedy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let mut st = t.new_state(512, KvType::F32);
        let mut logits = t.forward(&mut st, &prompt).unwrap();
        for pair in case["top_logits"].as_array().unwrap() {
            let id = pair[0].as_u64().unwrap() as usize;
            let reference = pair[1].as_f64().unwrap() as f32;
            worst = worst.max((logits[id] - reference).abs());
        }
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let tok = argmax(&logits);
            got.push(tok);
            if got.len() == want.len() {
                break;
            }
            logits = t.forward(&mut st, &[tok]).unwrap();
        }
        if got != want {
            mismatches.push(format!(
                "prompt {:?}:\n  ours      {got:?}\n  llama.cpp {want:?}",
                case["prompt"]
            ));
        }
    }
    eprintln!("{fixture}: max |logit difference| over top-32 first-token logits = {worst:.5}");
    assert!(
        mismatches.is_empty(),
        "greedy tokens differ from llama.cpp:\n{}",
        mismatches.join("\n")
    );
    assert!(
        worst <= LOGIT_TOL,
        "first-token logits differ by {worst} > {LOGIT_TOL}"
    );
}

#[test]
fn smollm2_greedy_equals_llama_cpp() {
    check(
        shared_models().join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        "generation_smollm2.json",
    );
}

#[test]
fn qwen2_greedy_equals_llama_cpp() {
    check(
        cached_models().join("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
        "generation_qwen2.json",
    );
}
