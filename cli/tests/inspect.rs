//! `llmstream inspect` run as a process: the real model as JSON and as tables, and damaged or
//! missing files (one error line, non-zero exit, no panic).
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn inspect(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmstream"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap()
}

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

/// The process failed cleanly: exit code 2, exactly one stderr line starting with `error: `
/// and holding `needle`, no panic.
fn assert_one_error_line(out: &Output, needle: &str) {
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    assert!(stderr.contains(needle), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn json_of_smollm2() {
    let Some(model) = smollm2() else { return };
    let out = inspect(&[model.as_os_str(), "--json".as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 3);
    assert_eq!(v["alignment"], 32);
    assert_eq!(v["file_size"], 98_362_432);
    assert_eq!(v["data_offset"], 1_785_664);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 272);
    assert_eq!(v["layers"].as_array().unwrap().len(), 30);
    assert_eq!(
        v["globals"],
        serde_json::json!(["token_embd.weight", "output_norm.weight"])
    );
    let md = &v["metadata"];
    assert_eq!(md["general.architecture"], "llama");
    assert_eq!(md["llama.block_count"], 30);
    assert_eq!(
        md["tokenizer.ggml.tokens"],
        serde_json::json!({"type": "string", "len": 49152})
    );
    let t0 = &v["tensors"][0];
    assert_eq!(t0["name"], "token_embd.weight");
    assert_eq!(t0["type"], "Q8_0");
    assert_eq!(t0["shape"], serde_json::json!([576, 49152]));
    assert_eq!(t0["offset"], 1_785_664);
    assert_eq!(t0["size"], 30_081_024);
    let l0 = &v["layers"][0];
    assert_eq!(l0["index"], 0);
    assert_eq!(l0["offset"], 31_866_688);
    assert_eq!(l0["size"], 34_083_136 - 31_866_688);
    assert_eq!(l0["contiguous"], true);
    assert_eq!(l0["tensors"].as_array().unwrap().len(), 9);
}

#[test]
fn tables_of_smollm2() {
    let Some(model) = smollm2() else { return };
    let out = inspect(&[model.as_os_str()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("GGUF version: 3"), "{text}");
    assert!(text.contains("data offset:  1785664"));
    assert!(
        text.contains("tensors:      272 (Q8_0×1 F32×61 Q4_1×210;"),
        "{text}"
    );
    assert!(text.contains("[49152 strings]"));
    assert!(text.contains("30 (30 contiguous)"));
    // The chat template is long: cut.
    assert!(text.contains("chars)"));
    assert!(text
        .lines()
        .any(|l| l.contains("blk.29.ffn_up.weight") && l.contains("Q4_1")));
}

fn truncated_copy(model: &Path, dir: &Path, len: usize) -> PathBuf {
    let mut head = vec![0u8; len];
    std::fs::File::open(model)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    let path = dir.join("truncated.gguf");
    std::fs::write(&path, head).unwrap();
    path
}

#[test]
fn truncated_smollm2_is_one_error_line() {
    let Some(model) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    for len in [1_000_000, 2_000_000] {
        let path = truncated_copy(&model, dir.path(), len);
        for json in [false, true] {
            let mut args = vec![path.as_os_str()];
            if json {
                args.push("--json".as_ref());
            }
            let out = inspect(&args);
            assert_one_error_line(&out, "invalid GGUF file");
            assert_one_error_line(&out, "truncated.gguf");
        }
    }
}

#[test]
fn garbage_and_missing_files_are_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"GGML this is not a model").unwrap();
    let out = inspect(&[garbage.as_os_str()]);
    assert_one_error_line(&out, "bad magic");

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let out = inspect(&[empty.as_os_str(), "--json".as_ref()]);
    assert_one_error_line(&out, "unexpected end of file while reading magic");

    let missing = dir.path().join("missing.gguf");
    let out = inspect(&[missing.as_os_str()]);
    assert_one_error_line(&out, "cannot open");
}
