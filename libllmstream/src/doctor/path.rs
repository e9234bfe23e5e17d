//! Which data path llmstream takes, and which the platform would allow.

use super::nvidia::Gds;
use super::DataPath;

pub(super) struct Choice {
    pub path: DataPath,
    pub reason: String,
    pub platform_best: DataPath,
}

/// Prefer GDS with nvidia-fs, then dma-buf P2P, then the pinned bounce. Only the pinned bounce
/// is implemented today, so that is what llmstream takes; the reason names what the platform
/// would allow.
pub(super) fn choose(has_gpu: bool, has_driver: bool, gds: &Gds, p2p_ok: bool) -> Choice {
    const ONLY: &str = "pinned_bounce is the only path llmstream implements today";
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
    let (best, why) = if gds.nvidia_fs && gds.cufile != Some(false) {
        (
            DataPath::Gds,
            "nvidia-fs is loaded, so cuFile/GDS could read NVMe straight into VRAM",
        )
    } else if p2p_ok {
        (
            DataPath::DmaBuf,
            "the open module allows P2P, so VRAM could be a dma-buf target of io_uring reads",
        )
    } else {
        (
            DataPath::PinnedBounce,
            "neither nvidia-fs nor dma-buf P2P is available",
        )
    };
    let reason = if best == DataPath::PinnedBounce {
        format!("{why}: O_DIRECT into page-locked staging, then host-to-device copies")
    } else {
        format!("{why}; but {ONLY}")
    };
    Choice {
        path: DataPath::PinnedBounce,
        reason,
        platform_best: best,
    }
}
