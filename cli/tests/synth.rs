//! `llmstream synth` run as a process: a model is written and parses; an existing file is kept
//! without `--force`; bad shapes and mixes fail with one error line and leave nothing behind.
#![allow(clippy::unwrap_used)]

use llmstream::gguf::GgufFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn smollm2() -> Option<PathBuf> {
    let base = std::env::var_os("LLMSTREAM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let path = base.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        Some(path)
    } else {
        println!("skipped: {} is absent", path.display());
        None
    }
}

fn synth(tok: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmstream"))
        .arg("synth")
        .arg("-o")
        .arg(out)
        .arg("--tokenizer-from")
        .arg(tok)
        .args(extra)
        .output()
        .unwrap()
}

fn assert_one_error_line(out: &Output, needle: &str) {
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    assert!(stderr.contains(needle), "stderr: {stderr}");
}

#[test]
fn writes_a_model_and_keeps_existing_files() {
    let Some(tok) = smollm2() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let args = [
        "--preset",
        "tiny-qwen2",
        "--layers",
        "2",
        "--quant",
        "q8_0",
        "--seed",
        "3",
    ];
    let o = synth(&tok, &out, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        stdout.starts_with("wrote ") && stdout.contains("GB/s"),
        "{stdout}"
    );
    let g = GgufFile::open(&out).unwrap();
    assert_eq!(g.architecture(), Some("qwen2"));
    assert_eq!(g.get_u32("qwen2.block_count"), Some(2));
    assert_eq!(g.get_u32("general.file_type"), Some(7));
    assert!(g.tensor("blk.1.attn_v.bias").is_some());
    let first = std::fs::read(&out).unwrap();

    // Kept without --force, replaced with it (same seed: same bytes).
    assert_one_error_line(&synth(&tok, &out, &args), "--force");
    assert_eq!(std::fs::read(&out).unwrap(), first);
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(synth(&tok, &out, &forced).status.success());
    assert!(std::fs::read(&out).unwrap() == first);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "a temporary file was left");
}

#[test]
fn bad_shapes_fail_cleanly() {
    let Some(tok) = smollm2() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    for (extra, needle) in [
        (&["--embd", "250"][..], "not divisible by 4 heads"),
        (
            &["--embd", "384", "--heads", "6", "--quant", "q4_k"],
            "not whole Q4_K blocks of 256",
        ),
        (&["--quant", "q3_k"], "unknown quant mix"),
        (&["--preset", "llama9"], "unknown preset"),
        (&["--arch", "gpt2"], "unknown architecture"),
        (&["--kv-heads", "3"], "KV heads"),
    ] {
        assert_one_error_line(&synth(&tok, &out, extra), needle);
    }
    assert_one_error_line(
        &synth(Path::new("/nonexistent.gguf"), &out, &[]),
        "tokenizer source",
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
