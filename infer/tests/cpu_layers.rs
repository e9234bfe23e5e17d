//! The hybrid split's CPU layers on the host: the rate probe and its refusals (the GPU tests
//! check their outputs against the CPU engine).
#![allow(clippy::unwrap_used)]

use llmstream::{BackendChoice, Config, Context};
use llmstream_infer::config::HParams;
use llmstream_infer::cpu_layers::CpuLayers;
use std::path::PathBuf;

fn smollm2() -> PathBuf {
    std::env::var_os("LLMSTREAM_SHARED_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
            PathBuf::from,
        )
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[test]
fn probe_measures_a_rate_over_its_layers_and_refuses_others() {
    let p = smollm2();
    if !p.exists() {
        eprintln!("skipped: {} absent", p.display());
        return;
    }
    let ctx = Context::new(Config {
        backend: BackendChoice::Host,
        ..Config::default()
    })
    .unwrap();
    let model = ctx.open_model(&p).unwrap();
    let hp = HParams::from_gguf(model.gguf()).unwrap();
    let mut probe = CpuLayers::probe(&ctx, &model, &hp, &[2, 5]).unwrap();
    let bytes = probe.layer_bytes(2).unwrap();
    assert_eq!(bytes, model.layer_bytes(2).unwrap());
    assert_eq!(probe.layer_bytes(5).unwrap(), model.layer_bytes(5).unwrap());
    let rate = probe.rate().unwrap();
    assert!(rate.is_finite() && rate > 0.0, "{rate}");
    assert!(probe.layer_bytes(3).is_none());
    assert!(
        probe.run(3, &mut vec![0.0f32; hp.n_embd], 0, 1).is_err(),
        "layer 3 is not a CPU layer"
    );
    assert!(
        CpuLayers::probe(&ctx, &model, &hp, &[])
            .unwrap()
            .rate()
            .is_err(),
        "no layer"
    );
    // a hidden state of the wrong width, or positions past the probe's cache
    let mut x = vec![0.0f32; hp.n_embd + 1];
    assert!(probe.run(2, &mut x, 0, 1).is_err());
    let mut x = vec![0.0f32; hp.n_embd];
    assert!(probe.run(2, &mut x, 1000, 1).is_err());
    assert!(CpuLayers::load(&ctx, &model, &hp, &[hp.n_layer], 8).is_err());
}
