//! The C ABI from C: builds examples/c (with examples/c/build.sh: gcc, -Werror, the header
//! included twice) against the libllmstream.so that cargo built for this test run, runs the
//! programs on the shared SmolLM2 model, and checks stream_checksum's CRCs against CRCs computed
//! here from the file with std::fs and crc32fast. (CI also compares the program with
//! scripts/checksum_layers.py, which finds the layers with the `gguf` Python package instead of
//! our parser.)
#![allow(clippy::unwrap_used)]

use llmstream::gguf::GgufFile;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shared library cargo built for this test run. `cargo test` builds every crate type of
/// the library, the cdylib included, next to this test binary (`target/<profile>/deps/`); it is
/// not always copied up to `target/<profile>/`.
fn cdylib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let candidates = [
        deps.join("libllmstream.so"),
        deps.parent().unwrap().join("libllmstream.so"),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libllmstream.so not found at {candidates:?}"))
        .clone()
}

fn shared_model() -> Option<PathBuf> {
    let base = std::env::var_os("LLMSTREAM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"));
    let path = base.join("models").join(MODEL);
    if path.exists() {
        Some(path)
    } else {
        println!("skipped: {} not found", path.display());
        None
    }
}

fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        println!("skipped: {tool} not found");
    }
    found
}

/// Build the examples into a fresh directory; the directory holding `stream_checksum` and
/// `errors`.
fn build_examples(sanitize: bool) -> PathBuf {
    let so = cdylib();
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/c-abi-test/{plain,asan}
    let out = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("c-abi-test")
        .join(if sanitize { "asan" } else { "plain" });
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("examples/c/build.sh"))
        .arg("--lib")
        .arg(&so)
        .arg("--out")
        .arg(&out);
    if sanitize {
        cmd.arg("--sanitize");
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "examples/c/build.sh failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Run `program args`; its stdout, after checking it succeeded.
fn run(program: &Path, args: &[&Path]) -> String {
    let o = Command::new(program)
        .args(args)
        .env("LLMSTREAM_BACKEND", "host")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{} failed ({}):\n{}{}",
        program.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// What stream_checksum must print, computed from the file with std::fs and crc32fast.
fn expected_checksums(model: &Path) -> String {
    let mut f = std::fs::File::open(model).unwrap();
    let len = f.metadata().unwrap().len();
    let gguf = GgufFile::parse(std::io::BufReader::new(&f), len).unwrap();
    assert!(!gguf.layers.is_empty());
    let mut total = crc32fast::Hasher::new();
    let mut total_bytes = 0u64;
    let mut out = String::new();
    for (i, l) in gguf.layers.iter().enumerate() {
        let size = l.span.end - l.span.start;
        let mut bytes = vec![0u8; usize::try_from(size).unwrap()];
        f.seek(SeekFrom::Start(l.span.start)).unwrap();
        f.read_exact(&mut bytes).unwrap();
        total.update(&bytes);
        total_bytes += size;
        let crc = crc32fast::hash(&bytes);
        out += &format!(
            "layer {i} offset {} size {size} crc32 {crc:08x}\n",
            l.span.start
        );
    }
    out += &format!("total crc32 {:08x} bytes {total_bytes}\n", total.finalize());
    out
}

fn check_programs(sanitize: bool) {
    let Some(model) = shared_model() else { return };
    if !have("gcc") {
        return;
    }
    let dir = build_examples(sanitize);
    let errors = run(&dir.join("errors"), &[&model]);
    assert!(errors.contains(" checks, 0 failed"), "{errors}");
    let got = run(&dir.join("stream_checksum"), &[&model]);
    assert_eq!(got, expected_checksums(&model));
}

#[test]
fn c_examples_match_rust_checksums() {
    check_programs(false);
}

#[test]
fn c_examples_under_asan_and_ubsan() {
    check_programs(true);
}

#[test]
fn soname_names_the_major_version() {
    if !have("readelf") {
        return;
    }
    let o = Command::new("readelf")
        .arg("-d")
        .arg(cdylib())
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&o.stdout);
    let want = format!(
        "Library soname: [libllmstream.so.{}]",
        env!("CARGO_PKG_VERSION_MAJOR")
    );
    assert!(dynamic.contains(&want), "{dynamic}");
}

#[test]
fn every_header_function_is_exported() {
    if !have("nm") {
        return;
    }
    let header = std::fs::read_to_string(repo_root().join("include/llmstream.h")).unwrap();
    let o = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(cdylib())
        .output()
        .unwrap();
    let symbols = String::from_utf8_lossy(&o.stdout);
    let exported: Vec<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let mut declared = 0;
    // Declarations start in column 0: `<type> lls_name(`.
    for line in header.lines().filter(|l| !l.starts_with([' ', '#', '/'])) {
        let Some(before) = line.split_once('(').map(|(b, _)| b) else {
            continue;
        };
        let name = before.rsplit([' ', '*']).next().unwrap_or("");
        if !name.starts_with("lls_") {
            continue;
        }
        declared += 1;
        assert!(exported.contains(&name), "{name} is not exported");
    }
    assert!(
        declared > 40,
        "only {declared} functions found in the header"
    );
}
