//! The NVIDIA kernel driver: version, open or proprietary module, P2P, nvidia-fs (GDS) and the
//! state left by `dkms-patch/patch-nvidia-open.sh`.

use super::pci::Gpu;
use super::{Check, SystemView, Verdict};

/// Where `dkms-patch/patch-nvidia-open.sh --apply` records what it did.
pub const DKMS_STATE: &str = "/var/lib/llmstream/dkms-patch.state";

/// The loaded driver.
#[derive(Debug, Clone)]
pub(super) struct Driver {
    pub version: Option<String>,
    /// `Some(true)` for the open kernel modules.
    pub open: Option<bool>,
    pub banner: String,
}

pub(super) fn driver(view: &SystemView) -> Option<Driver> {
    let banner = view.read("/proc/driver/nvidia/version");
    let modver = view.read("/sys/module/nvidia/version");
    if banner.is_none() && modver.is_none() {
        return None;
    }
    let banner = banner.unwrap_or_default();
    let first = banner.lines().next().unwrap_or_default().to_owned();
    let version = modver.or_else(|| {
        first
            .split_whitespace()
            .find(|w| w.contains('.') && w.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .map(str::to_owned)
    });
    // The open module says so in its banner; the proprietary one taints the kernel with 'P'.
    let open = if first.contains("Open Kernel Module") {
        Some(true)
    } else if let Some(t) = view.read("/sys/module/nvidia/taint") {
        Some(!t.contains('P'))
    } else if first.contains("Kernel Module") {
        Some(false)
    } else {
        None
    };
    Some(Driver {
        version,
        open,
        banner: first,
    })
}

pub(super) fn driver_check(gpus: &[Gpu], driver: Option<&Driver>) -> Check {
    match (driver, gpus.is_empty()) {
        (None, true) => Check::new(
            "nvidia_driver",
            Verdict::Unknown,
            "no NVIDIA GPU and no driver",
        ),
        (None, false) => Check::new(
            "nvidia_driver",
            Verdict::Fail,
            "NVIDIA GPU present but no driver loaded (/proc/driver/nvidia/version missing)",
        )
        .fix("install the NVIDIA open kernel modules (nvidia-open / nvidia-open-kernel-dkms)"),
        (Some(d), _) => Check::new(
            "nvidia_driver",
            Verdict::Ok,
            format!(
                "{} ({})",
                d.version.as_deref().unwrap_or("version unknown"),
                d.banner
            ),
        ),
    }
}

pub(super) fn module_check(gpus: &[Gpu], driver: Option<&Driver>) -> Check {
    let Some(d) = driver else {
        let why = if gpus.is_empty() {
            "no NVIDIA GPU"
        } else {
            "no driver loaded"
        };
        return Check::new("kernel_module", Verdict::Unknown, why);
    };
    match d.open {
        Some(true) => Check::new("kernel_module", Verdict::Ok, "open kernel module"),
        Some(false) => Check::new(
            "kernel_module",
            Verdict::Warn,
            "proprietary kernel module: no dma-buf export of VRAM, no patchable P2P",
        )
        .fix("switch to the open kernel modules (same version), e.g. nvidia-open-kernel-dkms"),
        None => Check::new(
            "kernel_module",
            Verdict::Unknown,
            "cannot tell open from proprietary (no banner, no /sys/module/nvidia/taint)",
        ),
    }
}

/// What the patch script recorded.
#[derive(Debug, Clone, Default)]
pub(super) struct DkmsState {
    pub version: Option<String>,
    pub patches: Vec<String>,
}

impl DkmsState {
    fn has(&self, patch: &str) -> bool {
        self.patches.iter().any(|p| p.contains(patch))
    }
}

pub(super) fn dkms_state(view: &SystemView) -> Option<DkmsState> {
    let text = view.read(DKMS_STATE)?;
    let mut st = DkmsState::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("version", v)) => st.version = Some(v.trim().to_owned()),
            Some(("patches", v)) => {
                st.patches = v
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect();
            }
            _ => {}
        }
    }
    Some(st)
}

/// The patched state counts only when it was made for the loaded driver version.
fn p2p_patched(driver: &Driver, dkms: Option<&DkmsState>) -> bool {
    dkms.is_some_and(|s| s.has("geforce-p2p") && s.version.is_some() && s.version == driver.version)
}

pub(super) fn p2p_check(gpus: &[Gpu], driver: Option<&Driver>, dkms: Option<&DkmsState>) -> Check {
    const NAME: &str = "p2p_dma_buf";
    if gpus.is_empty() {
        return Check::new(NAME, Verdict::Unknown, "no NVIDIA GPU");
    }
    let Some(d) = driver else {
        return Check::new(NAME, Verdict::Fail, "no NVIDIA driver loaded");
    };
    match d.open {
        Some(false) => {
            return Check::new(
                NAME,
                Verdict::Fail,
                "proprietary kernel module: VRAM cannot be exported as a dma-buf",
            )
            .fix("install the open kernel modules of the same version");
        }
        None => return Check::new(NAME, Verdict::Unknown, "kernel module flavour unknown"),
        Some(true) => {}
    }
    let geforce: Vec<&Gpu> = gpus
        .iter()
        .filter(|g| g.is_geforce() == Some(true))
        .collect();
    let unknown = gpus.iter().any(|g| g.is_geforce().is_none());
    if !geforce.is_empty() {
        if p2p_patched(d, dkms) {
            return Check::new(
                NAME,
                Verdict::Ok,
                "open module with the llmstream GeForce P2P patch recorded for this driver version: dma-buf P2P possible",
            );
        }
        return Check::new(
            NAME,
            Verdict::Fail,
            "GeForce board on the stock open module: the driver refuses P2P to GeForce, so no dma-buf P2P",
        )
        .fix("sudo dkms-patch/patch-nvidia-open.sh --apply --src /usr/src/nvidia-<version>, rebuild with dkms, reboot (docs/setup.md)");
    }
    if unknown {
        return Check::new(
            NAME,
            Verdict::Unknown,
            "open module, but the GPU model is unknown (no /proc/driver/nvidia/gpus/*/information)",
        );
    }
    Check::new(
        NAME,
        Verdict::Ok,
        "open module on a data-centre/workstation board: dma-buf P2P possible",
    )
}

/// nvidia-fs and libcufile.
#[derive(Debug, Clone)]
pub(super) struct Gds {
    pub nvidia_fs: bool,
    /// Whether libcufile loads (live) or is installed (fixture root); `None` when unknown.
    pub cufile: Option<bool>,
    /// Which libcufile, its version, or why it does not load.
    pub cufile_detail: String,
    /// Whether udev's database (`/run/udev/data`) is there: cuFile looks up each file's
    /// volume in it and refuses to register files without it.
    pub udev_db: bool,
}

/// Where distributions and the CUDA toolkit install libcufile, for fixture roots.
const CUFILE_PATHS: &[&str] = &[
    "/usr/local/cuda/lib64/libcufile.so.0",
    "/usr/local/cuda/targets/x86_64-linux/lib/libcufile.so.0",
    "/usr/lib/x86_64-linux-gnu/libcufile.so.0",
    "/usr/lib64/libcufile.so.0",
];

pub(super) fn gds(view: &SystemView) -> Gds {
    let nvidia_fs = view.exists("/proc/driver/nvidia-fs") || view.exists("/sys/module/nvidia_fs");
    let udev_db = view.exists("/run/udev/data");
    if view.is_live() {
        // The same loader the cuFile backend uses (kept loaded: libcufile is not unloaded).
        return match crate::backend::cufile::probe_library() {
            Ok(info) => Gds {
                nvidia_fs,
                udev_db,
                cufile: Some(true),
                cufile_detail: match info.version {
                    Some(v) => format!("{} loads (cuFile version {v})", info.path),
                    None => format!("{} loads", info.path),
                },
            },
            Err(e) => Gds {
                nvidia_fs,
                udev_db,
                cufile: Some(false),
                cufile_detail: e.to_string(),
            },
        };
    }
    match CUFILE_PATHS.iter().find(|p| view.exists(p)) {
        Some(p) => Gds {
            nvidia_fs,
            udev_db,
            cufile: Some(true),
            cufile_detail: format!("{p} installed (root is not /: found, not loaded)"),
        },
        None => Gds {
            nvidia_fs,
            udev_db,
            cufile: None,
            cufile_detail: "libcufile not probed (root is not /) and not found below it".into(),
        },
    }
}

pub(super) fn gds_check(gpus: &[Gpu], gds: &Gds) -> Check {
    const NAME: &str = "gds";
    if gpus.is_empty() {
        return Check::new(NAME, Verdict::Unknown, "no NVIDIA GPU");
    }
    let lib = match gds.cufile {
        Some(true) => "libcufile present",
        Some(false) => "libcufile not loadable",
        None => "libcufile not probed (root is not /)",
    };
    match (gds.nvidia_fs, gds.cufile) {
        (true, Some(false)) => Check::new(NAME, Verdict::Warn, format!("nvidia-fs loaded but {lib}"))
            .fix("install the GDS user-space package (nvidia-gds / libcufile)"),
        (true, _) => Check::new(NAME, Verdict::Ok, format!("nvidia-fs loaded; {lib}")),
        (false, Some(true)) => Check::new(
            NAME,
            Verdict::Warn,
            "libcufile loads but nvidia-fs is not loaded: cuFile would run in compat mode (a bounce through host memory)",
        )
        .fix("install and load nvidia-fs (nvidia-gds package; modprobe nvidia_fs)"),
        (false, _) => Check::new(NAME, Verdict::Warn, format!("nvidia-fs not loaded; {lib}"))
            .fix("for GPUDirect Storage install nvidia-gds (data-centre GPUs; needs the open module)"),
    }
}

pub(super) fn cufile_check(gpus: &[Gpu], gds: &Gds) -> Check {
    const NAME: &str = "cufile";
    if gpus.is_empty() {
        return Check::new(
            NAME,
            Verdict::Unknown,
            format!("no NVIDIA GPU; {}", gds.cufile_detail),
        );
    }
    match (gds.cufile, gds.nvidia_fs) {
        (Some(true), _) if !gds.udev_db => Check::new(
            NAME,
            Verdict::Warn,
            format!(
                "{}; but udev's database (/run/udev/data) is absent: cuFile looks up each file's volume through udev and refuses to register a file whose block device has no udev record (CU_FILE_HANDLE_NOT_REGISTERED, 5027, with `udev property not found: ID_FS_USAGE` in cufile.log), so llmstream stays on the pinned bounce",
                gds.cufile_detail
            ),
        )
        .fix("run where udev's database is visible (in a container, bind-mount /run/udev read-only)"),
        (Some(true), true) => Check::new(
            NAME,
            Verdict::Ok,
            format!("{}; nvidia-fs loaded: cuFile reads NVMe straight into VRAM (GDS)", gds.cufile_detail),
        ),
        (Some(true), false) => Check::new(
            NAME,
            Verdict::Warn,
            format!(
                "{}; without nvidia-fs cuFile runs in compatibility mode (pread into its own host buffers, then a copy): no gain over llmstream's pinned bounce, measure with `llmstream bench FILE --path both`",
                gds.cufile_detail
            ),
        )
        .fix("for GPUDirect Storage load nvidia-fs (nvidia-gds package; data-centre GPUs, open module)"),
        (Some(false), _) => Check::new(NAME, Verdict::Warn, gds.cufile_detail.clone())
            .fix("install libcufile (CUDA toolkit component libcufile / Debian libcufile0) and put it on the loader path (LD_LIBRARY_PATH=/usr/local/cuda/lib64), or set LLMSTREAM_CUFILE_LIB"),
        (None, _) => Check::new(NAME, Verdict::Unknown, gds.cufile_detail.clone()),
    }
}

/// What the GPU says about dma-buf export, probed live through CUDA.
#[derive(Debug, Clone)]
pub(super) enum DmaBufProbe {
    /// Not probed (fixture root, no GPU or driver).
    NotProbed,
    /// `CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED` of device 0.
    Attribute(bool),
    /// CUDA could not be started.
    NoCuda(String),
}

pub(super) fn dma_buf_probe(
    view: &SystemView,
    gpus: &[Gpu],
    driver: Option<&Driver>,
) -> DmaBufProbe {
    if !view.is_live() || gpus.is_empty() || driver.is_none() {
        return DmaBufProbe::NotProbed;
    }
    match crate::backend::cuda::CudaBackend::new(0).and_then(|c| c.dma_buf_supported()) {
        Ok(b) => DmaBufProbe::Attribute(b),
        Err(e) => DmaBufProbe::NoCuda(e.to_string()),
    }
}

/// io_uring's side: mainline kernels cannot register a dma-buf as a fixed buffer for block
/// reads; llmstream probes it at run time (`bench --path dmabuf`).
const URING_DMABUF: &str = "io_uring READ_FIXED into a dma-buf needs dma-buf registered buffers for block I/O, proposed upstream and not in mainline kernels: llmstream probes it at run time (llmstream bench FILE --path dmabuf) and otherwise stays on the pinned bounce";

pub(super) fn dma_buf_check(gpus: &[Gpu], driver: Option<&Driver>, probe: &DmaBufProbe) -> Check {
    const NAME: &str = "dma_buf";
    if gpus.is_empty() {
        return Check::new(NAME, Verdict::Unknown, "no NVIDIA GPU");
    }
    let Some(d) = driver else {
        return Check::new(NAME, Verdict::Fail, "no NVIDIA driver loaded");
    };
    match (d.open, probe) {
        (_, DmaBufProbe::Attribute(false)) => Check::new(
            NAME,
            Verdict::Fail,
            "CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 0: the driver cannot export VRAM as a dma-buf",
        )
        .fix("use the open kernel modules (r515 or later) on a Turing or newer GPU"),
        (_, DmaBufProbe::Attribute(true)) => Check::new(
            NAME,
            Verdict::Warn,
            format!("CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 1: VRAM exports as a dma-buf (cuMemGetHandleForAddressRange); {URING_DMABUF}"),
        ),
        (Some(false), _) => Check::new(
            NAME,
            Verdict::Fail,
            "proprietary kernel module: no dma-buf export of VRAM",
        )
        .fix("install the open kernel modules of the same version"),
        (Some(true), DmaBufProbe::NoCuda(why)) => Check::new(
            NAME,
            Verdict::Unknown,
            format!("open module, but CUDA could not be started to ask the device: {why}"),
        ),
        (Some(true), DmaBufProbe::NotProbed) => Check::new(
            NAME,
            Verdict::Warn,
            format!("open module: VRAM can be exported as a dma-buf (device attribute not probed: root is not /); {URING_DMABUF}"),
        ),
        (None, _) => Check::new(NAME, Verdict::Unknown, "kernel module flavour unknown"),
    }
}

pub(super) fn dkms_check(gpus: &[Gpu], driver: Option<&Driver>, dkms: Option<&DkmsState>) -> Check {
    const NAME: &str = "dkms_patch";
    let any_geforce = gpus.iter().any(|g| g.is_geforce() == Some(true));
    match (dkms, driver) {
        (None, _) if !any_geforce => Check::new(
            NAME,
            Verdict::Ok,
            format!("not applied ({DKMS_STATE} absent); not needed without a GeForce board"),
        ),
        (None, _) => Check::new(
            NAME,
            Verdict::Warn,
            format!("not applied ({DKMS_STATE} absent)"),
        )
        .fix("see docs/setup.md: dkms-patch/patch-nvidia-open.sh --check, then --apply"),
        (Some(s), Some(d)) if s.version.is_some() && s.version == d.version => Check::new(
            NAME,
            Verdict::Ok,
            format!(
                "applied to {} ({}); the loaded module must have been rebuilt since (dkms status)",
                s.version.as_deref().unwrap_or("?"),
                s.patches.join(", ")
            ),
        ),
        (Some(s), Some(d)) => Check::new(
            NAME,
            Verdict::Warn,
            format!(
                "state file is for driver {} but {} is loaded",
                s.version.as_deref().unwrap_or("?"),
                d.version.as_deref().unwrap_or("?")
            ),
        )
        .fix("re-run patch-nvidia-open.sh --apply for the new driver source and rebuild with dkms"),
        (Some(s), None) => Check::new(
            NAME,
            Verdict::Unknown,
            format!(
                "applied to {} but no driver is loaded",
                s.version.as_deref().unwrap_or("?")
            ),
        ),
    }
}
