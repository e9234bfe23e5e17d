//! Which data path llmstream takes, and which the platform would allow.

use super::nvidia::Gds;
use super::DataPath;

pub(super) struct Choice {
    pub path: DataPath,
    pub reason: String,
    pub platform_best: DataPath,
}

/// Prefer GDS (cuFile with nvidia-fs), then dma-buf P2P, then the pinned bounce. GDS is taken
/// when nvidia-fs is loaded and libcufile is present; dma-buf stays a platform capability until
/// io_uring can register dma-bufs for block reads (probed by `llmstream bench --path dmabuf`).
pub(super) fn choose(has_gpu: bool, has_driver: bool, gds: &Gds, p2p_ok: bool) -> Choice {
    if !has_gpu {
        return Choice {
            path: DataPath::PinnedBounce,
            reason: "no NVIDIA GPU: the host backend reads with O_DIRECT into page-locked staging and copies into host memory".into(),
            platform_best: DataPath::PinnedBounce,
        };
    }
    if !has_driver {
        return Choice {
            path: DataPath::PinnedBounce,
            reason:
                "no NVIDIA driver loaded: the CUDA backend is unavailable, the host backend is used"
                    .into(),
            platform_best: DataPath::PinnedBounce,
        };
    }
    if gds.nvidia_fs {
        match gds.cufile {
            Some(true) if !gds.udev_db => {
                return Choice {
                    path: DataPath::PinnedBounce,
                    reason: "nvidia-fs is loaded and libcufile is present, but without udev's database (/run/udev/data) cuFile registers no file: O_DIRECT into page-locked staging, then host-to-device copies".into(),
                    platform_best: DataPath::Gds,
                }
            }
            Some(true) => {
                return Choice {
                    path: DataPath::Gds,
                    reason: "nvidia-fs is loaded and libcufile is present: cuFile reads NVMe straight into VRAM (falling back to the pinned bounce if the driver refuses to open)".into(),
                    platform_best: DataPath::Gds,
                }
            }
            Some(false) => {
                return Choice {
                    path: DataPath::PinnedBounce,
                    reason: "nvidia-fs is loaded but libcufile does not load: O_DIRECT into page-locked staging, then host-to-device copies".into(),
                    platform_best: DataPath::Gds,
                }
            }
            None => {
                return Choice {
                    path: DataPath::PinnedBounce,
                    reason: "nvidia-fs is loaded but libcufile was not found: O_DIRECT into page-locked staging, then host-to-device copies".into(),
                    platform_best: DataPath::Gds,
                }
            }
        }
    }
    if p2p_ok {
        return Choice {
            path: DataPath::PinnedBounce,
            reason: "the open module allows P2P, so VRAM could be a dma-buf target of io_uring reads; but mainline io_uring cannot register dma-bufs for block reads (probe: llmstream bench FILE --path dmabuf), so O_DIRECT into page-locked staging, then host-to-device copies".into(),
            platform_best: DataPath::DmaBuf,
        };
    }
    Choice {
        path: DataPath::PinnedBounce,
        reason: "neither nvidia-fs nor dma-buf P2P is available: O_DIRECT into page-locked staging, then host-to-device copies".into(),
        platform_best: DataPath::PinnedBounce,
    }
}
