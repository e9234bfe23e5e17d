//! `llmstream doctor`: what this machine allows on the data path, read from sysfs, procfs and
//! `/dev` below a configurable root (a fixture tree in tests), plus live probes (io_uring,
//! `O_DIRECT`, `dlopen`) when the root is `/`. Nothing here changes the system.
//!
//! Each finding is a [`Check`]; [`diagnose`] collects them into a [`Report`] that also names the
//! data path llmstream takes ([`DataPath::Gds`] through cuFile when nvidia-fs is loaded and
//! libcufile is present, else [`DataPath::PinnedBounce`]) and the best path the platform would
//! allow.

mod host;
mod nvidia;
mod path;
mod pci;
mod system;

pub use system::SystemView;

use serde::Serialize;
use std::path::PathBuf;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Works as llmstream wants it.
    Ok,
    /// Works, but slower or less safe than it could; see the fix.
    Warn,
    /// The capability is missing.
    Fail,
    /// Could not be determined from here; the detail says why.
    Unknown,
}

impl Verdict {
    /// Lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Unknown => "unknown",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name (`kernel`, `io_uring`, `bar1 0000:01:00.0`, ...).
    pub name: String,
    /// The outcome.
    pub verdict: Verdict,
    /// What was found, in words.
    pub detail: String,
    /// What to do about it, when something can be done.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            verdict,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The ways weights can reach a GPU (see DESIGN.md, "Direct paths").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPath {
    /// cuFile / GPUDirect Storage through nvidia-fs.
    Gds,
    /// VRAM exported as a dma-buf and read into by io_uring.
    DmaBuf,
    /// `O_DIRECT` into page-locked staging, then a host-to-device copy.
    PinnedBounce,
}

impl DataPath {
    /// Name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gds => "gds",
            Self::DmaBuf => "dma_buf",
            Self::PinnedBounce => "pinned_bounce",
        }
    }
}

/// Everything `llmstream doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The findings, in a fixed order.
    pub checks: Vec<Check>,
    /// The path llmstream takes on this machine.
    pub path: DataPath,
    /// Why that path.
    pub path_reason: String,
    /// The most direct path this platform would allow (not necessarily implemented yet).
    pub platform_best: DataPath,
}

impl Report {
    /// The check named `name`, or for per-device checks (`bar1 0000:01:00.0`) the first whose
    /// name starts with `name` and a space.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| {
            c.name == name
                || c.name
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' '))
        })
    }
}

/// What to check besides the system itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// The directory (or file) holding the models; a system path below the view's root.
    pub model_dir: Option<PathBuf>,
    /// Bytes llmstream will lock (staging buffers), for the RLIMIT_MEMLOCK check.
    pub memlock_required: u64,
}

impl Default for Options {
    fn default() -> Self {
        let rc = crate::io::ReaderConfig::default();
        let bytes = rc.staging_buffers.saturating_mul(rc.staging_buffer_size);
        Self {
            model_dir: None,
            memlock_required: u64::try_from(bytes).unwrap_or(u64::MAX),
        }
    }
}

/// Run every check against `view`.
pub fn diagnose(view: &SystemView, opts: &Options) -> Report {
    let mut checks = Vec::new();
    let kernel = host::kernel_version(view);
    checks.push(host::kernel_check(view, kernel));
    checks.push(host::io_uring_check(view));
    checks.push(host::o_direct_check(
        view,
        opts.model_dir.as_deref(),
        kernel,
    ));
    checks.push(host::memlock_check(view, opts.memlock_required));

    let gpus = pci::gpus(view);
    let driver = nvidia::driver(view);
    let dkms = nvidia::dkms_state(view);
    checks.push(pci::gpu_check(&gpus));
    checks.push(nvidia::driver_check(&gpus, driver.as_ref()));
    checks.push(nvidia::module_check(&gpus, driver.as_ref()));
    checks.extend(pci::bar_checks(&gpus));
    checks.push(pci::iommu_check(view, &gpus));
    checks.extend(pci::topology_checks(view, &gpus));
    let p2p = nvidia::p2p_check(&gpus, driver.as_ref(), dkms.as_ref());
    let p2p_ok = p2p.verdict == Verdict::Ok;
    checks.push(p2p);
    let dma = nvidia::dma_buf_probe(view, &gpus, driver.as_ref());
    checks.push(nvidia::dma_buf_check(&gpus, driver.as_ref(), &dma));
    let gds = nvidia::gds(view);
    checks.push(nvidia::gds_check(&gpus, &gds));
    checks.push(nvidia::cufile_check(&gpus, &gds));
    checks.push(nvidia::dkms_check(&gpus, driver.as_ref(), dkms.as_ref()));

    let choice = path::choose(!gpus.is_empty(), driver.is_some(), &gds, p2p_ok);
    Report {
        checks,
        path: choice.path,
        path_reason: choice.reason,
        platform_best: choice.platform_best,
    }
}
