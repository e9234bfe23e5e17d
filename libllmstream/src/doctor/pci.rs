//! NVIDIA GPUs and NVMe controllers on the PCI bus: BAR1, resizable BAR, IOMMU and the path
//! between each drive and each GPU.

use super::{Check, SystemView, Verdict};
use std::path::PathBuf;

const NVIDIA: &str = "0x10de";
/// BAR1 of a GPU without Resizable BAR: VRAM is visible through this small window only.
const SMALL_BAR: u64 = 256 << 20;

/// One NVIDIA GPU.
#[derive(Debug, Clone)]
pub(super) struct Gpu {
    /// PCI address, `0000:01:00.0`.
    pub bdf: String,
    /// The model name from `/proc/driver/nvidia/gpus/*/information`.
    pub model: Option<String>,
    /// BAR1 size in bytes.
    pub bar1: Option<u64>,
    /// Largest BAR1 size the device offers through Resizable BAR (`resource1_resize`).
    pub bar1_max: Option<u64>,
}

impl Gpu {
    /// GeForce and TITAN boards: the driver refuses them P2P unless patched.
    pub fn is_geforce(&self) -> Option<bool> {
        let m = self.model.as_deref()?;
        Some(m.contains("GeForce") || m.contains("TITAN"))
    }

    fn label(&self) -> String {
        match &self.model {
            Some(m) => format!("{} ({m})", self.bdf),
            None => self.bdf.clone(),
        }
    }
}

fn is_bdf(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.'
}

/// Every NVIDIA display/3D controller in sysfs, plus any the driver lists that sysfs lacks.
pub(super) fn gpus(view: &SystemView) -> Vec<Gpu> {
    let mut out: Vec<Gpu> = Vec::new();
    for bdf in view.list("/sys/bus/pci/devices") {
        let dev = format!("/sys/bus/pci/devices/{bdf}");
        let vendor = view.read(format!("{dev}/vendor"));
        let class = view.read(format!("{dev}/class"));
        let is_gpu = vendor.as_deref() == Some(NVIDIA)
            && class.as_deref().is_some_and(|c| c.starts_with("0x03"));
        if is_gpu {
            let bar = bar1(view, &dev);
            out.push(Gpu {
                model: None,
                bar1: bar.map(|(_, size)| size),
                bar1_max: bar.and_then(|(index, _)| resize_max(view, &dev, index)),
                bdf,
            });
        }
    }
    for bdf in view.list("/proc/driver/nvidia/gpus") {
        let info = view.read(format!("/proc/driver/nvidia/gpus/{bdf}/information"));
        let model = info.as_deref().and_then(|i| {
            i.lines()
                .find_map(|l| l.strip_prefix("Model:"))
                .map(|m| m.trim().to_owned())
        });
        match out.iter_mut().find(|g| g.bdf == bdf) {
            Some(g) => g.model = model,
            None if is_bdf(&bdf) => out.push(Gpu {
                bdf,
                model,
                bar1: None,
                bar1_max: None,
            }),
            None => {}
        }
    }
    out
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// `IORESOURCE_MEM` in the flags column of a sysfs `resource` file.
const IORESOURCE_MEM: u64 = 0x200;

/// The GPU's BAR1 (the VRAM aperture, NVIDIA's second memory BAR) from the device's `resource`
/// file: one `start end flags` line per region, where a 64-bit BAR takes its own index and
/// leaves the next line empty. So BAR1 is region 1 (and 2) behind a 32-bit BAR0 (GeForce), and
/// region 2 (and 3) behind a 64-bit BAR0 (H100). Returns the region index and the size.
fn bar1(view: &SystemView, dev: &str) -> Option<(usize, u64)> {
    let res = view.read(format!("{dev}/resource"))?;
    res.lines()
        .take(6)
        .enumerate()
        .filter_map(|(i, line)| {
            let mut f = line.split_whitespace();
            let start = hex(f.next()?)?;
            let end = hex(f.next()?)?;
            let flags = hex(f.next()?)?;
            (end > start && flags & IORESOURCE_MEM != 0).then(|| (i, end - start + 1))
        })
        .nth(1)
}

/// The largest size offered in `resource<N>_resize`: a bit mask where bit n means 2^n MiB.
fn resize_max(view: &SystemView, dev: &str, index: usize) -> Option<u64> {
    let mask = hex(&view.read(format!("{dev}/resource{index}_resize"))?)?;
    if mask == 0 {
        return None;
    }
    let bit = 63 - mask.leading_zeros();
    1u64.checked_shl(bit + 20)
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

pub(super) fn gpu_check(gpus: &[Gpu]) -> Check {
    if gpus.is_empty() {
        return Check::new(
            "gpu",
            Verdict::Warn,
            "no NVIDIA GPU found (PCI vendor 0x10de, class 0x03): the host backend is used",
        );
    }
    let list: Vec<String> = gpus.iter().map(Gpu::label).collect();
    Check::new("gpu", Verdict::Ok, list.join(", "))
}

pub(super) fn bar_checks(gpus: &[Gpu]) -> Vec<Check> {
    let bios = "enable \"Above 4G Decoding\" and \"Resizable BAR\" (Re-Size BAR Support) in the firmware setup; CSM must be off";
    let mut out = Vec::new();
    for g in gpus {
        let name = format!("bar1 {}", g.bdf);
        out.push(match g.bar1 {
            None => Check::new(
                name,
                Verdict::Unknown,
                "no readable BAR1 in the device's resource file",
            ),
            Some(b) if b <= SMALL_BAR => Check::new(
                name,
                Verdict::Warn,
                format!(
                    "BAR1 is {}: only that much VRAM is visible to peers at once",
                    size(b)
                ),
            )
            .fix(bios),
            Some(b) => Check::new(name, Verdict::Ok, format!("BAR1 is {}", size(b))),
        });
        let name = format!("resizable_bar {}", g.bdf);
        out.push(match (g.bar1_max, g.bar1) {
            (None, _) => Check::new(
                name,
                Verdict::Unknown,
                "no resource<N>_resize file for BAR1: the device or kernel does not expose Resizable BAR",
            ),
            (Some(max), Some(cur)) if cur < max => Check::new(
                name,
                Verdict::Warn,
                format!(
                    "Resizable BAR offers up to {}, BAR1 is {}",
                    size(max),
                    size(cur)
                ),
            )
            .fix(bios),
            (Some(max), _) => Check::new(
                name,
                Verdict::Ok,
                format!("Resizable BAR supported, up to {}", size(max)),
            ),
        });
    }
    out
}

pub(super) fn iommu_check(view: &SystemView, gpus: &[Gpu]) -> Check {
    let cmdline = view.read("/proc/cmdline").unwrap_or_default();
    let has = |t: &str| cmdline.split_whitespace().any(|w| w == t);
    let units = view.list("/sys/class/iommu");
    let group_type = gpus
        .iter()
        .find_map(|g| view.read(format!("/sys/bus/pci/devices/{}/iommu_group/type", g.bdf)));
    let off = has("intel_iommu=off") || has("amd_iommu=off") || has("iommu=off");
    let pt = has("iommu=pt") || has("iommu.passthrough=1");
    let enable =
        "enable VT-d / AMD-Vi in the firmware and boot with intel_iommu=on (Intel) and iommu=pt";
    if off || (units.is_empty() && group_type.is_none()) {
        let why = if off {
            "disabled on the kernel command line"
        } else {
            "no IOMMU unit in /sys/class/iommu"
        };
        return Check::new(
            "iommu",
            Verdict::Warn,
            format!(
                "IOMMU off ({why}): devices can DMA anywhere, and the VFIO path is unavailable"
            ),
        )
        .fix(enable);
    }
    let units = if units.is_empty() {
        "?".into()
    } else {
        units.join(",")
    };
    match group_type.as_deref() {
        Some("identity") => Check::new(
            "iommu",
            Verdict::Ok,
            format!("IOMMU on ({units}), GPU domain identity (passthrough): P2P DMA is not translated"),
        ),
        Some(t) => Check::new(
            "iommu",
            Verdict::Ok,
            format!("IOMMU on ({units}), GPU domain {t} (translated): P2P through the root complex is mapped by the IOMMU; iommu=pt trades that isolation for speed"),
        ),
        None if pt => Check::new(
            "iommu",
            Verdict::Ok,
            format!("IOMMU on ({units}) in passthrough mode (iommu=pt on the command line)"),
        ),
        None => Check::new(
            "iommu",
            Verdict::Ok,
            format!("IOMMU on ({units}), translation mode (no iommu=pt)"),
        ),
    }
}

/// The PCI devices from the host bridge down to `dev` (a system path), from its resolved
/// sysfs path: `["pci0000:00", "0000:00:01.0", "0000:01:00.0"]`.
fn chain(view: &SystemView, dev: &str) -> Option<Vec<String>> {
    let real: PathBuf = view.resolve(dev)?;
    let parts: Vec<String> = real
        .iter()
        .filter_map(|c| c.to_str())
        .skip_while(|c| !c.starts_with("pci"))
        .map(str::to_owned)
        .collect();
    (parts.len() >= 2).then_some(parts)
}

pub(super) fn topology_checks(view: &SystemView, gpus: &[Gpu]) -> Vec<Check> {
    let nvmes = view.list("/sys/class/nvme");
    if gpus.is_empty() || nvmes.is_empty() {
        let what = if gpus.is_empty() {
            "no NVIDIA GPU"
        } else {
            "no NVMe controller in /sys/class/nvme"
        };
        return vec![Check::new("topology", Verdict::Unknown, what)];
    }
    let mut out = Vec::new();
    for n in &nvmes {
        let nchain = chain(view, &format!("/sys/class/nvme/{n}/device"));
        for g in gpus {
            let name = format!("topology {n} {}", g.bdf);
            let gchain = chain(view, &format!("/sys/bus/pci/devices/{}", g.bdf));
            let (Some(a), Some(b)) = (&nchain, &gchain) else {
                out.push(Check::new(
                    name,
                    Verdict::Unknown,
                    "PCI path not resolvable in sysfs",
                ));
                continue;
            };
            let common = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
            out.push(if common == 0 {
                Check::new(
                    name,
                    Verdict::Warn,
                    format!("different host bridges ({} vs {}): P2P crosses the CPU interconnect, usually unsupported or slow", a[0], b[0]),
                )
                .fix("put the NVMe drive and the GPU under the same CPU (or the same PCIe switch)")
            } else if common == 1 {
                Check::new(
                    name,
                    Verdict::Warn,
                    format!("same host bridge {}, different root ports: P2P goes through the root complex, which some CPUs do not route", a[0]),
                )
            } else {
                Check::new(
                    name,
                    Verdict::Ok,
                    format!("common upstream bridge {}: P2P stays below it", a[common - 1]),
                )
            });
        }
    }
    out.push(Check::new(
        "acs",
        Verdict::Unknown,
        "ACS redirect on the bridges between them needs PCIe extended config space (lspci -vvv as root); not read",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_shape() {
        assert!(is_bdf("0000:01:00.0"));
        assert!(!is_bdf("0000:01:00"));
    }

    #[test]
    fn sizes_print() {
        assert_eq!(size(256 << 20), "256 MiB");
        assert_eq!(size(32 << 30), "32 GiB");
    }
}
