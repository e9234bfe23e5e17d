//! Rates measured once per machine by `llmstream calibrate` and cached in a small TOML file, so
//! that the GPU engine's hybrid split need not probe them at every load: the CPU's fused
//! matrix-vector rate per weight type, how much of it survives while the PCIe link copies, the
//! link's own rate, and a storage rate.
//!
//! A calibration holds for one [`MachineId`] and one thread count ([`Calibration::matches`]);
//! anything else (another CPU, another GPU, `-t` changed) calls for a new one or a quick probe.
//! The file is written atomically (a temporary file in the same directory, then a rename) and
//! read defensively: missing is `Ok(None)`, anything else wrong is a [`CalibrationError`] that
//! names the file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use llmstream::gguf::GgmlType;
use serde::{Deserialize, Serialize};

/// The format version this build reads and writes; a file of another version is refused
/// ([`CalibrationError::Version`]) and must be taken again.
pub const CALIBRATION_VERSION: u32 = 1;

/// Largest calibration file [`Calibration::load`] reads (a real one is well under 4 KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Environment variable naming the cache file; empty or `none` turns the cache off.
pub const PATH_ENV: &str = "LLMSTREAM_CALIBRATION";

/// Largest `cpu_under_copies` ratio accepted: the CPU rarely gains from the link's copies, and
/// a ratio far above 1 means the lone measurement was disturbed.
pub const MAX_UNDER_COPIES: f64 = 1.5;

/// What a calibration was taken on. Two machines with equal ids are assumed to share rates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineId {
    /// `model name` of the first processor in `/proc/cpuinfo` (`unknown` where there is none).
    pub cpu_model: String,
    /// Logical CPUs this process may run on.
    pub logical_cpus: usize,
    /// The GPU's name as the driver reports it; `None` when calibrated without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
}

impl MachineId {
    /// This machine. `gpu_name` comes from the caller (this module has no CUDA): the name of
    /// the device the engine will use, or `None` on the host backend.
    pub fn detect(gpu_name: Option<String>) -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| cpu_model_from_cpuinfo(&t))
            .unwrap_or_else(|| "unknown".to_owned());
        MachineId {
            cpu_model,
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            gpu: gpu_name,
        }
    }
}

/// The name of `ctx`'s GPU as the driver reports it (`cuDeviceGetName`, the part of
/// [`Context::backend_description`](llmstream::Context::backend_description) before the driver
/// version), `None` on the host backend: what [`MachineId::detect`] takes, so that
/// `llmstream calibrate` and the engine name a GPU alike.
pub fn gpu_name(ctx: &llmstream::Context) -> Option<String> {
    if ctx.backend() != llmstream::BackendKind::Cuda {
        return None;
    }
    gpu_name_from_description(&ctx.backend_description())
}

/// `NAME` of a `cuda: NAME, driver API X.Y` backend description.
fn gpu_name_from_description(description: &str) -> Option<String> {
    let s = description.strip_prefix("cuda: ")?;
    let name = s.rsplit_once(", driver API").map_or(s, |(n, _)| n).trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The first `model name` value of `/proc/cpuinfo` text, whitespace trimmed.
fn cpu_model_from_cpuinfo(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let value = value.trim();
        (key.trim() == "model name" && !value.is_empty()).then(|| value.to_owned())
    })
}

/// Rates of one machine, taken by `llmstream calibrate`. Every rate is in bytes per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Format version ([`CALIBRATION_VERSION`]).
    pub version: u32,
    /// The machine it was taken on.
    pub machine: MachineId,
    /// Threads of the quant pool during the CPU measurements.
    pub threads: usize,
    /// When it was taken (seconds since the Unix epoch).
    pub taken_unix: u64,
    /// Weight type name ([`GgmlType::name`], e.g. `Q4_K`) → the CPU's fused matrix-vector rate
    /// over that type's weights with `threads` threads, weights streaming from memory (a
    /// footprint far larger than the last-level cache), as decode reads them.
    pub cpu_bps: BTreeMap<String, f64>,
    /// The CPU's `Q4_K` rate while the link copies pinned host memory to the GPU, over its
    /// rate alone, in `(0, 1.5]`; `None` without a GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_under_copies: Option<f64>,
    /// Pinned host → device copy rate; `None` without a GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2d_bps: Option<f64>,
    /// The library's O_DIRECT reader rate on `storage_path`; `None` when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bps: Option<f64>,
    /// The file `storage_bps` was measured on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<String>,
    /// The `Q4_K` rate at each thread count tried when calibrate chose `threads` itself (no
    /// `-t`), most threads first; empty when `threads` was given. Runs without `-t` on this
    /// CPU use the chosen count ([`Calibration::chosen_threads`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thread_sweep: Vec<ThreadRate>,
}

/// The CPU's `Q4_K` rate with one pool size (bytes per second).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadRate {
    /// Threads of the quant pool, the caller counted.
    pub threads: usize,
    /// The rate with them.
    pub q4_k_bps: f64,
}

/// A rate within this fraction of the best counts as equal when choosing a thread count: the
/// fewer threads then win, leaving cores to the rest of the process and the system.
pub const THREAD_TIE: f64 = 0.02;

/// Thread counts `llmstream calibrate` tries on `cpus` logical CPUs, most first: all of
/// them, one or two left free, three quarters and half (a machine whose logical CPUs are
/// hyperthreads may stream weights as fast from its physical cores alone). On the H100
/// machine (16 CPUs), 14 threads read Q4_K weights at 77-84 GB/s where 16 read 58-76.
pub fn sweep_candidates(cpus: usize) -> Vec<usize> {
    let cpus = cpus.max(1);
    let mut v = vec![
        cpus,
        cpus - 1,
        cpus.saturating_sub(2),
        cpus * 3 / 4,
        cpus / 2,
    ];
    v.retain(|&t| t >= 1);
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.dedup();
    v
}

/// The thread count to use from a sweep: the fewest threads whose rate is within
/// [`THREAD_TIE`] of the best rate; `None` for an empty sweep or one without a usable rate.
pub fn choose_threads(sweep: &[ThreadRate]) -> Option<usize> {
    let best = sweep
        .iter()
        .map(|r| r.q4_k_bps)
        .filter(|r| r.is_finite() && *r > 0.0)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))?;
    sweep
        .iter()
        .filter(|r| r.q4_k_bps.is_finite() && r.q4_k_bps >= best * (1.0 - THREAD_TIE))
        .map(|r| r.threads)
        .min()
}

/// Why a calibration file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    /// The file exists but could not be opened or read.
    #[error("reading calibration {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a regular file or larger than [`MAX_FILE_BYTES`].
    #[error("calibration {} is {what}; a calibration is a TOML file under {MAX_FILE_BYTES} bytes", path.display())]
    NotACalibration {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        what: String,
    },
    /// Not TOML, or not the shape of a calibration.
    #[error("calibration {} is not valid: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Written by another format version.
    #[error(
        "calibration {} has format version {found}, this llmstream reads version {expected}: run `llmstream calibrate` again",
        path.display()
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file (as written there).
        found: String,
        /// [`CALIBRATION_VERSION`].
        expected: u32,
    },
    /// A value out of range (a rate not finite or not positive, zero threads ...).
    #[error("calibration {}: {field} {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field (`cpu_bps.Q4_K`, `h2d_bps` ...).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file or its directory could not be written.
    #[error("writing calibration {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The calibration could not be written as TOML.
    #[error("writing calibration {}: {message}", path.display())]
    Serialize {
        /// The file.
        path: PathBuf,
        /// The serializer's message.
        message: String,
    },
}

/// The cache file from the environment's values (see [`Calibration::default_path`]).
fn resolve_path(
    calibration: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    if let Some(v) = calibration {
        if v.is_empty() || v == "none" {
            return None;
        }
        return Some(PathBuf::from(v));
    }
    let tail = Path::new("llmstream").join("calibration.toml");
    // the XDG base directory rules: a relative XDG_CACHE_HOME is ignored
    if let Some(x) = xdg_cache_home.map(PathBuf::from) {
        if x.is_absolute() {
            return Some(x.join(tail));
        }
    }
    let home = home.filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".cache").join(tail))
}

fn check_rate(path: &Path, field: &str, v: f64) -> Result<(), CalibrationError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(CalibrationError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            reason: format!("is {v}; a rate must be finite and positive"),
        })
    }
}

impl Calibration {
    /// Where the cache lives: `$LLMSTREAM_CALIBRATION` when set (empty or `none`: no cache,
    /// `None`), else `$XDG_CACHE_HOME/llmstream/calibration.toml` (when absolute), else
    /// `$HOME/.cache/llmstream/calibration.toml`; `None` when none of them is set.
    pub fn default_path() -> Option<PathBuf> {
        resolve_path(
            std::env::var_os(PATH_ENV),
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// Read `path`: `Ok(None)` when it does not exist; an error naming it when it cannot be
    /// read, is larger than [`MAX_FILE_BYTES`], is not a calibration of this format version,
    /// or holds a value out of range.
    pub fn load(path: &Path) -> Result<Option<Calibration>, CalibrationError> {
        let read_err = |source| CalibrationError::Read {
            path: path.to_owned(),
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let meta = file.metadata().map_err(read_err)?;
        let not_one = |what: String| CalibrationError::NotACalibration {
            path: path.to_owned(),
            what,
        };
        if !meta.is_file() {
            return Err(not_one("not a regular file".into()));
        }
        // the size checked again on what is read: the file may grow meanwhile
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if meta.len() > MAX_FILE_BYTES || bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(not_one(format!(
                "{} bytes",
                meta.len().max(bytes.len() as u64)
            )));
        }
        let parse_err = |message: String| CalibrationError::Parse {
            path: path.to_owned(),
            message: message.trim_end().to_owned(),
        };
        let text = String::from_utf8(bytes).map_err(|e| parse_err(e.to_string()))?;
        // the version first, so that another format reads as such rather than as a bad field
        let table: toml::Table = toml::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
        match table.get("version") {
            Some(toml::Value::Integer(v)) if *v == i64::from(CALIBRATION_VERSION) => {}
            Some(v) => {
                return Err(CalibrationError::Version {
                    path: path.to_owned(),
                    found: v.to_string(),
                    expected: CALIBRATION_VERSION,
                })
            }
            None => return Err(parse_err("no `version` key".into())),
        }
        let c: Calibration = toml::Value::Table(table)
            .try_into()
            .map_err(|e| parse_err(e.to_string()))?;
        c.validate(path)?;
        Ok(Some(c))
    }

    /// Write to `path` (creating its directory) atomically: readers see the old file or the
    /// new one, never part of one. Refuses a calibration [`Self::load`] would refuse.
    pub fn save(&self, path: &Path) -> Result<(), CalibrationError> {
        self.validate(path)?;
        let text = toml::to_string(self).map_err(|e| CalibrationError::Serialize {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let write_err = |source| CalibrationError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(write_err)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".calibration")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(write_err)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // readable by other users, like the cache directories around it (the temporary
            // file starts private)
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(write_err)?;
        }
        tmp.write_all(text.as_bytes()).map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    /// Whether this calibration was taken on `machine` with `threads` quant threads.
    pub fn matches(&self, machine: &MachineId, threads: usize) -> bool {
        self.machine == *machine && self.threads == threads
    }

    /// The thread count calibrate chose on this CPU (`threads`, when it came from a sweep and
    /// the CPU model and logical CPU count are `machine`'s; the GPU does not matter here).
    pub fn chosen_threads(&self, machine: &MachineId) -> Option<usize> {
        let same_cpu = self.machine.cpu_model == machine.cpu_model
            && self.machine.logical_cpus == machine.logical_cpus;
        (same_cpu && !self.thread_sweep.is_empty()).then_some(self.threads)
    }

    /// The thread count chosen by the cached calibration ([`Self::default_path`]) for this
    /// CPU ([`Self::chosen_threads`]); `None` without one. A cache that cannot be read is
    /// logged and ignored.
    pub fn cached_threads() -> Option<usize> {
        let path = Self::default_path()?;
        match Self::load(&path) {
            Ok(c) => c?.chosen_threads(&MachineId::detect(None)),
            Err(e) => {
                tracing::warn!("{e}: the thread count is not taken from it");
                None
            }
        }
    }

    /// The CPU's rate over weights of type `ty`, if measured.
    pub fn cpu_rate(&self, ty: GgmlType) -> Option<f64> {
        self.cpu_bps.get(ty.name()).copied()
    }

    /// The CPU's rate over a layer whose weights are `bytes_by_type` (bytes of each type): the
    /// time-weighted (harmonic) combination `Σ bytes / Σ (bytes_t / rate_t)`. `None` when a
    /// type with bytes has no rate, or when there are no bytes. Entries with zero bytes are
    /// ignored; callers may leave out small tensors computed outside the fused products (norm
    /// vectors, F32 biases), which then count as free.
    pub fn cpu_layer_bps(&self, bytes_by_type: &[(GgmlType, u64)]) -> Option<f64> {
        let mut total = 0.0f64;
        let mut secs = 0.0f64;
        for &(ty, bytes) in bytes_by_type.iter().filter(|(_, b)| *b > 0) {
            // u64 -> f64: bytes of a layer stay far below 2^53
            #[allow(clippy::cast_precision_loss)]
            let b = bytes as f64;
            total += b;
            secs += b / self.cpu_rate(ty)?;
        }
        (secs > 0.0).then(|| total / secs)
    }

    /// Ranges `load` and `save` insist on (`path` names the file in errors).
    fn validate(&self, path: &Path) -> Result<(), CalibrationError> {
        let bad = |field: &str, reason: &str| CalibrationError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        if self.version != CALIBRATION_VERSION {
            return Err(CalibrationError::Version {
                path: path.to_owned(),
                found: self.version.to_string(),
                expected: CALIBRATION_VERSION,
            });
        }
        if self.threads == 0 {
            return Err(bad("threads", "is 0"));
        }
        if self.machine.logical_cpus == 0 {
            return Err(bad("machine.logical_cpus", "is 0"));
        }
        for (name, &rate) in &self.cpu_bps {
            if !GgmlType::ALL.iter().any(|t| t.name() == name) {
                return Err(bad(
                    &format!("cpu_bps.{name}"),
                    "is not a weight type name (Q4_K, Q6_K, F16 ...)",
                ));
            }
            check_rate(path, &format!("cpu_bps.{name}"), rate)?;
        }
        for (field, v) in [
            ("h2d_bps", self.h2d_bps),
            ("storage_bps", self.storage_bps),
            ("cpu_under_copies", self.cpu_under_copies),
        ] {
            if let Some(v) = v {
                check_rate(path, field, v)?;
            }
        }
        for (i, r) in self.thread_sweep.iter().enumerate() {
            if r.threads == 0 {
                return Err(bad(&format!("thread_sweep[{i}].threads"), "is 0"));
            }
            check_rate(path, &format!("thread_sweep[{i}].q4_k_bps"), r.q4_k_bps)?;
        }
        if self.cpu_under_copies.is_some_and(|r| r > MAX_UNDER_COPIES) {
            return Err(bad(
                "cpu_under_copies",
                "is above 1.5: not a plausible ratio",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Calibration {
        Calibration {
            version: CALIBRATION_VERSION,
            machine: MachineId {
                cpu_model: "Test CPU 9000".into(),
                logical_cpus: 16,
                gpu: Some("NVIDIA H100 80GB HBM3".into()),
            },
            threads: 16,
            taken_unix: 1_760_000_000,
            cpu_bps: BTreeMap::from([("Q4_K".to_owned(), 55e9), ("Q6_K".to_owned(), 40e9)]),
            cpu_under_copies: Some(0.8),
            h2d_bps: Some(53.5e9),
            storage_bps: Some(6.25e9),
            storage_path: Some("/models/x.gguf".into()),
            thread_sweep: vec![
                ThreadRate {
                    threads: 16,
                    q4_k_bps: 61e9,
                },
                ThreadRate {
                    threads: 12,
                    q4_k_bps: 52e9,
                },
            ],
        }
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let dir = tmp();
        // a directory that does not exist yet: save creates it
        let path = dir.path().join("sub/dir/calibration.toml");
        let c = sample();
        c.save(&path).unwrap();
        assert_eq!(Calibration::load(&path).unwrap(), Some(c.clone()));
        // no machine GPU, no optional rates
        let mut bare = c;
        bare.machine.gpu = None;
        bare.cpu_under_copies = None;
        bare.h2d_bps = None;
        bare.storage_bps = None;
        bare.storage_path = None;
        bare.thread_sweep.clear();
        bare.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("h2d_bps"), "{text}");
        assert!(!text.contains("thread_sweep"), "{text}");
        assert_eq!(Calibration::load(&path).unwrap(), Some(bare));
        // no temporary file left beside it
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("calibration.toml")]);
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tmp();
        assert_eq!(
            Calibration::load(&dir.path().join("absent.toml")).unwrap(),
            None
        );
    }

    fn load_text(text: &str) -> CalibrationError {
        let dir = tmp();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let e = Calibration::load(&path).unwrap_err();
        // every error names the file
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        e
    }

    fn sample_text() -> String {
        toml::to_string(&sample()).unwrap()
    }

    #[test]
    fn corrupt_files_are_typed_errors() {
        assert!(matches!(
            load_text("this is = not [ toml"),
            CalibrationError::Parse { .. }
        ));
        assert!(matches!(
            load_text("threads = 4\n"),
            CalibrationError::Parse { .. }
        ));
        // right version, missing fields
        assert!(matches!(
            load_text("version = 1\nthreads = 4\n"),
            CalibrationError::Parse { .. }
        ));
        // an unknown top-level field
        assert!(matches!(
            load_text(&format!("surprise = 1\n{}", sample_text())),
            CalibrationError::Parse { .. }
        ));
        // not UTF-8
        let dir = tmp();
        let path = dir.path().join("bin.toml");
        std::fs::write(&path, [0xff, 0xfe, 0x00, 0x80]).unwrap();
        assert!(matches!(
            Calibration::load(&path),
            Err(CalibrationError::Parse { .. })
        ));
        // a directory
        assert!(matches!(
            Calibration::load(dir.path()),
            Err(CalibrationError::NotACalibration { .. })
        ));
    }

    #[test]
    fn other_versions_are_refused() {
        for v in ["2", "0", "\"1\"", "-1"] {
            let text = sample_text().replace("version = 1", &format!("version = {v}"));
            assert!(text.contains(&format!("version = {v}")));
            match load_text(&text) {
                CalibrationError::Version {
                    found, expected, ..
                } => {
                    assert_eq!(found, v);
                    assert_eq!(expected, CALIBRATION_VERSION);
                }
                e => panic!("version {v}: {e}"),
            }
        }
    }

    #[test]
    fn hostile_values_are_refused() {
        let cases = [
            ("Q4_K = 55000000000.0", "Q4_K = nan", "cpu_bps.Q4_K"),
            ("Q4_K = 55000000000.0", "Q4_K = -5.0", "cpu_bps.Q4_K"),
            ("Q4_K = 55000000000.0", "Q4_K = 0.0", "cpu_bps.Q4_K"),
            ("Q4_K = 55000000000.0", "Q4_K = inf", "cpu_bps.Q4_K"),
            ("Q4_K = 55000000000.0", "Q9_Z = 1.0", "cpu_bps.Q9_Z"),
            ("h2d_bps = 53500000000.0", "h2d_bps = -1.0", "h2d_bps"),
            (
                "storage_bps = 6250000000.0",
                "storage_bps = nan",
                "storage_bps",
            ),
            (
                "cpu_under_copies = 0.8",
                "cpu_under_copies = 7.0",
                "cpu_under_copies",
            ),
            (
                "cpu_under_copies = 0.8",
                "cpu_under_copies = 0.0",
                "cpu_under_copies",
            ),
            ("threads = 16", "threads = 0", "threads"),
            (
                "q4_k_bps = 52000000000.0",
                "q4_k_bps = nan",
                "thread_sweep[1].q4_k_bps",
            ),
            ("threads = 12", "threads = 0", "thread_sweep[1].threads"),
        ];
        let base = sample_text();
        for (from, to, field) in cases {
            assert!(base.contains(from), "{from} not in\n{base}");
            match load_text(&base.replace(from, to)) {
                CalibrationError::Invalid { field: f, .. } => assert_eq!(f, field, "{to}"),
                e => panic!("{to}: {e}"),
            }
        }
        // a negative thread count is no usize
        assert!(matches!(
            load_text(&base.replace("threads = 16", "threads = -3")),
            CalibrationError::Parse { .. }
        ));
        // save refuses what load would refuse, and leaves no file
        let dir = tmp();
        let path = dir.path().join("c.toml");
        let mut c = sample();
        c.h2d_bps = Some(f64::NAN);
        assert!(matches!(
            c.save(&path),
            Err(CalibrationError::Invalid { .. })
        ));
        assert!(!path.exists());
    }

    #[test]
    fn huge_file_is_refused_unread() {
        let dir = tmp();
        let path = dir.path().join("big.toml");
        let f = std::fs::File::create(&path).unwrap();
        // sparse: no disk used
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        assert!(matches!(
            Calibration::load(&path),
            Err(CalibrationError::NotACalibration { .. })
        ));
        // exactly at the limit it is read (and is no TOML: NUL bytes)
        f.set_len(MAX_FILE_BYTES).unwrap();
        assert!(matches!(
            Calibration::load(&path),
            Err(CalibrationError::Parse { .. })
        ));
    }

    #[test]
    fn path_from_environment() {
        let os = |s: &str| Some(OsString::from(s));
        let p = |s: &str| Some(PathBuf::from(s));
        // the explicit variable wins, whatever else is set
        assert_eq!(
            resolve_path(os("/etc/c.toml"), os("/x"), os("/home/u")),
            p("/etc/c.toml")
        );
        assert_eq!(resolve_path(os(""), os("/x"), os("/home/u")), None);
        assert_eq!(resolve_path(os("none"), os("/x"), os("/home/u")), None);
        // then XDG_CACHE_HOME when absolute
        assert_eq!(
            resolve_path(None, os("/x"), os("/home/u")),
            p("/x/llmstream/calibration.toml")
        );
        assert_eq!(
            resolve_path(None, os("rel"), os("/home/u")),
            p("/home/u/.cache/llmstream/calibration.toml")
        );
        assert_eq!(
            resolve_path(None, os(""), os("/home/u")),
            p("/home/u/.cache/llmstream/calibration.toml")
        );
        assert_eq!(
            resolve_path(None, None, os("/home/u")),
            p("/home/u/.cache/llmstream/calibration.toml")
        );
        // nothing to go by
        assert_eq!(resolve_path(None, None, None), None);
        assert_eq!(resolve_path(None, os("rel"), os("")), None);
    }

    #[test]
    fn matches_needs_same_machine_and_threads() {
        let c = sample();
        let m = c.machine.clone();
        assert!(c.matches(&m, 16));
        assert!(!c.matches(&m, 8));
        let other_gpu = MachineId {
            gpu: Some("NVIDIA H200".into()),
            ..m.clone()
        };
        assert!(!c.matches(&other_gpu, 16));
        let no_gpu = MachineId {
            gpu: None,
            ..m.clone()
        };
        assert!(!c.matches(&no_gpu, 16));
        let other_cpu = MachineId {
            cpu_model: "Other".into(),
            ..m.clone()
        };
        assert!(!c.matches(&other_cpu, 16));
        let fewer = MachineId {
            logical_cpus: 8,
            ..m
        };
        assert!(!c.matches(&fewer, 16));
    }

    #[test]
    fn thread_counts_tried() {
        assert_eq!(sweep_candidates(16), vec![16, 15, 14, 12, 8]);
        assert_eq!(sweep_candidates(4), vec![4, 3, 2]);
        assert_eq!(sweep_candidates(2), vec![2, 1]);
        assert_eq!(sweep_candidates(1), vec![1]);
        assert_eq!(sweep_candidates(0), vec![1]);
    }

    #[test]
    fn fewest_threads_within_the_tie_of_the_best() {
        let r = |threads, gbps: f64| ThreadRate {
            threads,
            q4_k_bps: gbps * 1e9,
        };
        // 14 threads within 2% of the best (16): the fewer win
        assert_eq!(
            choose_threads(&[r(16, 60.0), r(15, 55.0), r(14, 59.0), r(8, 40.0)]),
            Some(14)
        );
        // a clear best keeps its count
        assert_eq!(choose_threads(&[r(16, 80.0), r(14, 70.0)]), Some(16));
        assert_eq!(choose_threads(&[r(2, 9.0), r(1, 5.0)]), Some(2));
        // nothing usable
        assert_eq!(choose_threads(&[]), None);
        assert_eq!(choose_threads(&[r(4, f64::NAN), r(2, 0.0)]), None);
        // an unusable entry does not win the tie
        assert_eq!(choose_threads(&[r(4, 10.0), r(2, f64::NAN)]), Some(4));
    }

    #[test]
    fn chosen_threads_hold_for_the_same_cpu_only() {
        let c = sample();
        let m = c.machine.clone();
        assert_eq!(c.chosen_threads(&m), Some(16));
        // the GPU does not matter for the thread count
        let no_gpu = MachineId {
            gpu: None,
            ..m.clone()
        };
        assert_eq!(c.chosen_threads(&no_gpu), Some(16));
        let other_cpu = MachineId {
            cpu_model: "Other".into(),
            ..m.clone()
        };
        assert_eq!(c.chosen_threads(&other_cpu), None);
        let fewer = MachineId {
            logical_cpus: 8,
            ..m.clone()
        };
        assert_eq!(c.chosen_threads(&fewer), None);
        // `-t` given at calibration: no sweep, no choice
        let given = Calibration {
            thread_sweep: Vec::new(),
            ..c
        };
        assert_eq!(given.chosen_threads(&m), None);
    }

    #[test]
    fn cpu_layer_rate_is_harmonic() {
        let c = sample();
        // one type: its own rate
        let r = c.cpu_layer_bps(&[(GgmlType::Q4_K, 1000)]).unwrap();
        assert!((r - 55e9).abs() < 1.0, "{r}");
        // 3 GB at 55 GB/s and 1 GB at 40 GB/s: 4 GB in 3/55 + 1/40 s
        let r = c
            .cpu_layer_bps(&[
                (GgmlType::Q4_K, 3_000_000_000),
                (GgmlType::Q6_K, 1_000_000_000),
            ])
            .unwrap();
        let want = 4.0 / (3.0 / 55e9 + 1.0 / 40e9);
        assert!((r - want).abs() / want < 1e-12, "{r} vs {want}");
        // zero-byte entries, even of unmeasured types, are ignored
        let r2 = c
            .cpu_layer_bps(&[
                (GgmlType::Q4_K, 3_000_000_000),
                (GgmlType::F32, 0),
                (GgmlType::Q6_K, 1_000_000_000),
            ])
            .unwrap();
        assert!((r2 - want).abs() / want < 1e-12);
        // a type with bytes and no rate, or no bytes at all
        assert_eq!(
            c.cpu_layer_bps(&[(GgmlType::Q4_K, 10), (GgmlType::Q8_0, 10)]),
            None
        );
        assert_eq!(c.cpu_layer_bps(&[]), None);
        assert_eq!(c.cpu_layer_bps(&[(GgmlType::Q4_K, 0)]), None);
        assert_eq!(c.cpu_rate(GgmlType::Q6_K), Some(40e9));
        assert_eq!(c.cpu_rate(GgmlType::Q8_0), None);
    }

    #[test]
    fn cpu_model_from_proc_cpuinfo() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6430\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6430\n";
        assert_eq!(
            cpu_model_from_cpuinfo(text).as_deref(),
            Some("Intel(R) Xeon(R) Gold 6430")
        );
        // aarch64 kernels print no model name
        assert_eq!(
            cpu_model_from_cpuinfo("processor\t: 0\nBogoMIPS\t: 50.00\n"),
            None
        );
        assert_eq!(cpu_model_from_cpuinfo("model name\t:   \n"), None);
        let m = MachineId::detect(Some("GPU".into()));
        assert_eq!(m.gpu.as_deref(), Some("GPU"));
        let m = MachineId::detect(None);
        assert!(m.logical_cpus >= 1);
        assert!(!m.cpu_model.is_empty());
        assert_eq!(m.gpu, None);
    }

    #[test]
    fn gpu_name_of_backend_description() {
        assert_eq!(
            gpu_name_from_description("cuda: NVIDIA H100 80GB HBM3, driver API 12.8").as_deref(),
            Some("NVIDIA H100 80GB HBM3")
        );
        assert_eq!(
            gpu_name_from_description("cuda: Odd, Name").as_deref(),
            Some("Odd, Name")
        );
        assert_eq!(gpu_name_from_description("cuda: , driver API 12.8"), None);
        assert_eq!(gpu_name_from_description("host"), None);
        let host = llmstream::Context::new(llmstream::Config {
            backend: llmstream::BackendChoice::Host,
            ..llmstream::Config::default()
        })
        .unwrap();
        assert_eq!(gpu_name(&host), None);
    }
}
