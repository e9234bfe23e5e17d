//! `llmstream calibrate` run as a process on the host backend: the cache it writes loads and
//! holds the rates it printed, `--show` reads it back and tells whether it holds here, and
//! damaged caches give one error line, never a panic.
#![allow(clippy::unwrap_used)]

use llmstream::gguf::GgmlType;
use llmstream_infer::calibration::{
    choose_threads, sweep_candidates, Calibration, MachineId, ThreadRate, CALIBRATION_VERSION,
};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn calibrate<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmstream"))
        .arg("calibrate")
        .args(args)
        .env_remove("LLMSTREAM_CALIBRATION")
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
        println!("skipped (storage part): {} is absent", path.display());
        None
    }
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The process failed cleanly: exit code 2, one stderr line `error: ...` holding every needle.
fn assert_one_error_line(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in stderr: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// Small matrices and footprint keep the test quick on a debug build; the defaults (a 70B
/// feed-forward matrix, 512 MiB cycled) are what a real calibration uses.
const QUICK: [&str; 10] = [
    "--backend",
    "host",
    "-t",
    "1",
    "--ms",
    "50",
    "--shape",
    "1024x4096",
    "--footprint",
    "16M",
];

#[test]
fn host_calibration_writes_a_cache_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache/c.toml");
    let model = smollm2();
    let mut args: Vec<&OsStr> = QUICK.iter().map(OsStr::new).collect();
    args.extend(["--types", "q4_k", "--json", "--out"].map(OsStr::new));
    args.push(file.as_os_str());
    if let Some(m) = &model {
        args.extend([OsStr::new("--storage"), m.as_os_str()]);
        args.extend(["--storage-bytes", "16M"].map(OsStr::new));
    }
    let out = calibrate(&args);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["saved"], true);
    assert_eq!(v["path"], file.display().to_string());
    assert_eq!(v["backend"], "host");
    assert!(v["skipped"]["h2d"].as_str().unwrap().contains("no GPU"));
    assert!(v["skipped"]["cpu_under_copies"]
        .as_str()
        .unwrap()
        .contains("no GPU"));

    let c = Calibration::load(&file).unwrap().unwrap();
    // the file holds what was printed
    assert!(
        same_json(&serde_json::to_value(&c).unwrap(), &v["calibration"]),
        "{c:?} vs {}",
        v["calibration"]
    );
    assert_eq!(c.version, CALIBRATION_VERSION);
    assert_eq!(c.threads, 1);
    assert!(c.matches(&MachineId::detect(None), 1));
    assert_eq!(c.cpu_bps.len(), 1);
    assert!(c.cpu_rate(GgmlType::Q4_K).unwrap() > 0.0);
    assert_eq!(c.h2d_bps, None);
    assert_eq!(c.cpu_under_copies, None);
    match &model {
        Some(m) => {
            assert!(c.storage_bps.unwrap() > 0.0);
            let stored = PathBuf::from(c.storage_path.as_deref().unwrap());
            assert_eq!(stored, std::fs::canonicalize(m).unwrap());
            assert_eq!(v["storage_bytes"], 16 << 20);
        }
        None => {
            assert_eq!(c.storage_bps, None);
            assert!(v["skipped"]["storage"].is_string());
        }
    }

    // --show prints it back and says it holds for one thread here, not for three
    let show = stdout(&calibrate(&[
        OsStr::new("--show"),
        OsStr::new("--backend"),
        OsStr::new("host"),
        OsStr::new("-t"),
        OsStr::new("1"),
        OsStr::new("--out"),
        file.as_os_str(),
    ]));
    assert!(show.contains(&file.display().to_string()), "{show}");
    assert!(show.contains("cpu Q4_K"), "{show}");
    assert!(show.contains("holds here   yes"), "{show}");
    if model.is_some() {
        assert!(show.contains("SmolLM2-135M-Instruct.Q4_1.gguf"), "{show}");
    }
    let show = stdout(&calibrate(&[
        OsStr::new("--show"),
        OsStr::new("--backend"),
        OsStr::new("host"),
        OsStr::new("-t"),
        OsStr::new("3"),
        OsStr::new("--out"),
        file.as_os_str(),
    ]));
    assert!(
        show.contains("holds here   no: 3 threads here, 1 there"),
        "{show}"
    );
}

fn saved(dir: &Path, threads: usize, gpu: Option<&str>) -> PathBuf {
    let c = Calibration {
        version: CALIBRATION_VERSION,
        machine: MachineId::detect(gpu.map(str::to_owned)),
        threads,
        taken_unix: 1_700_000_000,
        cpu_bps: BTreeMap::from([("Q4_K".to_owned(), 12.5e9), ("Q6_K".to_owned(), 9e9)]),
        cpu_under_copies: gpu.map(|_| 0.75),
        h2d_bps: gpu.map(|_| 25e9),
        storage_bps: Some(3e9),
        storage_path: Some("/models/m.gguf".into()),
        thread_sweep: Vec::new(),
    };
    let file = dir.join("saved.toml");
    c.save(&file).unwrap();
    file
}

#[test]
fn without_threads_calibrate_chooses_them_and_run_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    // QUICK without its `-t 1`
    let mut args: Vec<&OsStr> = QUICK
        .iter()
        .enumerate()
        .filter(|(i, _)| !(2..4).contains(i))
        .map(|(_, a)| OsStr::new(a))
        .collect();
    args.extend(["--types", "q4_k", "--json", "--out"].map(OsStr::new));
    args.push(file.as_os_str());
    let v: serde_json::Value = serde_json::from_str(&stdout(&calibrate(&args))).unwrap();
    let c = Calibration::load(&file).unwrap().unwrap();
    assert!(same_json(
        &serde_json::to_value(&c).unwrap(),
        &v["calibration"]
    ));
    let here = MachineId::detect(None);
    let tried: Vec<usize> = c.thread_sweep.iter().map(|r| r.threads).collect();
    assert_eq!(tried, sweep_candidates(here.logical_cpus));
    assert_eq!(Some(c.threads), choose_threads(&c.thread_sweep));
    assert_eq!(c.chosen_threads(&here), Some(c.threads));
    // the Q4_K rate is the sweep's at the chosen count, not a second measurement
    let swept = c.thread_sweep.iter().find(|r| r.threads == c.threads);
    assert_eq!(c.cpu_rate(GgmlType::Q4_K), swept.map(|r| r.q4_k_bps));
    // --show without -t compares with the chosen count, as `run` would use it
    let show = stdout(&calibrate(&[
        OsStr::new("--show"),
        OsStr::new("--backend"),
        OsStr::new("host"),
        OsStr::new("--out"),
        file.as_os_str(),
    ]));
    assert!(show.contains("holds here   yes"), "{show}");
    assert!(show.contains("chosen from Q4_K GB/s by threads"), "{show}");

    // `run` without -t takes the chosen count; -t wins; another CPU's choice is ignored
    let Some(model) = smollm2() else {
        println!("skipped (run part): `run` needs SmolLM2");
        return;
    };
    let chosen = |threads: usize, cpu_model: &str| {
        let mut c = Calibration {
            threads,
            thread_sweep: vec![ThreadRate {
                threads,
                q4_k_bps: 1e9,
            }],
            ..c.clone()
        };
        c.machine.cpu_model = cpu_model.to_owned();
        let f = dir
            .path()
            .join(format!("{threads}-{}.toml", cpu_model.len()));
        c.save(&f).unwrap();
        f
    };
    let run_threads = |cal: &Path, t: Option<&str>| -> u64 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmstream"));
        cmd.arg("run").arg("-m").arg(&model);
        cmd.args([
            "-p",
            "Hi",
            "-n",
            "1",
            "--temp",
            "0",
            "--backend",
            "cpu",
            "--json",
        ]);
        if let Some(t) = t {
            cmd.args(["-t", t]);
        }
        let out = cmd.env("LLMSTREAM_CALIBRATION", cal).output().unwrap();
        let text = stdout(&out);
        let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        v["threads"].as_u64().unwrap()
    };
    let cpus = here.logical_cpus as u64;
    let three = chosen(3, &here.cpu_model);
    assert_eq!(run_threads(&three, None), 3);
    assert_eq!(run_threads(&three, Some("1")), 1);
    assert_eq!(run_threads(&chosen(3, "Another CPU"), None), cpus);
    assert_eq!(run_threads(&dir.path().join("absent.toml"), None), cpus);
}

#[test]
fn show_as_json_says_whether_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let show = |file: &Path, threads: &str| -> serde_json::Value {
        let out = calibrate(&[
            OsStr::new("--show"),
            OsStr::new("--json"),
            OsStr::new("--backend"),
            OsStr::new("host"),
            OsStr::new("-t"),
            OsStr::new(threads),
            OsStr::new("--out"),
            file.as_os_str(),
        ]);
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let file = saved(dir.path(), 4, None);
    let v = show(&file, "4");
    assert_eq!(v["matches"], true);
    assert_eq!(v["calibration"]["cpu_bps"]["Q6_K"], 9e9);
    assert_eq!(v["calibration"]["storage_path"], "/models/m.gguf");
    assert!(v["mismatch"].is_null());
    let v = show(&file, "2");
    assert_eq!(v["matches"], false);
    assert_eq!(v["mismatch"], "2 threads here, 4 there");
    // taken with a GPU: does not hold on the host backend
    let file = saved(dir.path(), 4, Some("Some GPU"));
    let v = show(&file, "4");
    assert_eq!(v["matches"], false);
    assert_eq!(v["mismatch"], "GPU none here, \"Some GPU\" there");
    assert_eq!(v["calibration"]["h2d_bps"], 25e9);
    // no file: no calibration, not an error
    let v = show(&dir.path().join("absent.toml"), "4");
    assert!(v["calibration"].is_null());
    assert_eq!(v["matches"], false);
}

#[test]
fn cache_path_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = saved(dir.path(), 2, None);
    let show = |value: &OsStr| {
        Command::new(env!("CARGO_BIN_EXE_llmstream"))
            .args(["calibrate", "--show", "--backend", "host", "-t", "2"])
            .env("LLMSTREAM_CALIBRATION", value)
            .output()
            .unwrap()
    };
    let text = stdout(&show(file.as_os_str()));
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("holds here   yes"), "{text}");
    for off in ["", "none"] {
        assert_one_error_line(&show(OsStr::new(off)), &["LLMSTREAM_CALIBRATION", "--out"]);
    }
    // XDG_CACHE_HOME when the variable is unset
    let cache = dir.path().join("xdg");
    let out = Command::new(env!("CARGO_BIN_EXE_llmstream"))
        .args(["calibrate", "--show", "--json", "--backend", "host"])
        .env_remove("LLMSTREAM_CALIBRATION")
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        v["path"],
        cache
            .join("llmstream/calibration.toml")
            .display()
            .to_string()
    );
    assert!(v["calibration"].is_null());
}

#[test]
fn damaged_caches_are_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let show = |file: &Path| {
        calibrate(&[
            OsStr::new("--show"),
            OsStr::new("--backend"),
            OsStr::new("host"),
            OsStr::new("--out"),
            file.as_os_str(),
        ])
    };
    let name = file.display().to_string();
    std::fs::write(&file, "version = 1\ncpu_bps = [\n").unwrap();
    assert_one_error_line(&show(&file), &[&name, "not valid"]);
    // a valid file with a hostile rate
    let good = std::fs::read_to_string(saved(dir.path(), 1, None)).unwrap();
    assert!(good.contains("Q4_K = 12500000000.0"), "{good}");
    std::fs::write(&file, good.replace("Q4_K = 12500000000.0", "Q4_K = nan")).unwrap();
    assert_one_error_line(&show(&file), &[&name, "cpu_bps.Q4_K"]);
    std::fs::write(&file, good.replace("version = 1", "version = 99")).unwrap();
    assert_one_error_line(&show(&file), &[&name, "version 99", "llmstream calibrate"]);
    // far too large: refused unread (sparse, no disk used)
    std::fs::File::create(&file)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    assert_one_error_line(&show(&file), &[&name, "bytes"]);
    // a directory
    assert_one_error_line(&show(dir.path()), &["not a regular file"]);
}

#[test]
fn bad_arguments_are_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let under_file = blocker.join("c.toml");
    let run = |extra: &[&OsStr]| {
        let mut args: Vec<&OsStr> = QUICK.iter().map(OsStr::new).collect();
        args.extend_from_slice(extra);
        calibrate(&args)
    };
    // nowhere to write: measured, then a clean write error naming the file
    let out = run(&[
        OsStr::new("--types"),
        OsStr::new("q4_k"),
        OsStr::new("--out"),
        under_file.as_os_str(),
    ]);
    assert_one_error_line(
        &out,
        &["writing calibration", &under_file.display().to_string()],
    );
    let out = run(&[OsStr::new("--types"), OsStr::new("q9_z")]);
    assert_one_error_line(&out, &["unknown weight type"]);
    let out = calibrate(&["--backend", "host", "-t", "0"]);
    assert_one_error_line(&out, &["--threads"]);
    let out = calibrate(&["--backend", "host", "--shape", "100x100"]);
    assert_one_error_line(&out, &["100x100"]);
    let missing = dir.path().join("absent.gguf");
    let cache = dir.path().join("c.toml");
    let out = run(&[
        OsStr::new("--types"),
        OsStr::new("q4_k"),
        OsStr::new("--storage"),
        missing.as_os_str(),
        OsStr::new("--out"),
        cache.as_os_str(),
    ]);
    assert_one_error_line(&out, &["absent.gguf"]);
    assert!(!cache.exists());
}

/// Equal JSON, numbers to the last couple of bits (the file is TOML, the printout JSON: their
/// float parsers may round the last digit differently).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_json(v, w))
        }
        _ => a == b,
    }
}
