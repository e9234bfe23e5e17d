//! Kernel, io_uring, `O_DIRECT` and RLIMIT_MEMLOCK.

use super::{Check, SystemView, Verdict};
use crate::io::{memlock, probe, DirectChoice, Source};
use std::path::{Path, PathBuf};

/// `(major, minor)` from `/proc/sys/kernel/osrelease`.
pub(super) fn kernel_version(view: &SystemView) -> Option<(u32, u32)> {
    let rel = view.read("/proc/sys/kernel/osrelease")?;
    parse_kernel(&rel)
}

fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

pub(super) fn kernel_check(view: &SystemView, version: Option<(u32, u32)>) -> Check {
    let release = view.read("/proc/sys/kernel/osrelease").unwrap_or_default();
    match version {
        None => Check::new(
            "kernel",
            Verdict::Unknown,
            "cannot read /proc/sys/kernel/osrelease",
        ),
        Some(v) if v < (5, 6) => Check::new(
            "kernel",
            Verdict::Warn,
            format!("Linux {release}: io_uring opcode probing needs 5.6; the pread thread pool will be used"),
        )
        .fix("upgrade to a 6.x kernel"),
        Some(v) => {
            let pfn = if v >= (6, 12) {
                "; 6.12+ has neither follow_pfn nor follow_pte: NVIDIA drivers without follow_pfnmap_start support need the os-mlock dkms-patch"
            } else {
                ""
            };
            Check::new("kernel", Verdict::Ok, format!("Linux {release}{pfn}"))
        }
    }
}

pub(super) fn io_uring_check(view: &SystemView) -> Check {
    let sysctl = view.read("/proc/sys/kernel/io_uring_disabled");
    let base = match sysctl.as_deref() {
        Some("2") => {
            return Check::new(
                "io_uring",
                Verdict::Fail,
                "kernel.io_uring_disabled = 2: io_uring is off for every process; llmstream falls back to a pread thread pool",
            )
            .fix("sysctl -w kernel.io_uring_disabled=0 (and in /etc/sysctl.d/ to keep it)");
        }
        Some("1") => Check::new(
            "io_uring",
            Verdict::Warn,
            "kernel.io_uring_disabled = 1: only processes in kernel.io_uring_group (or with CAP_SYS_ADMIN) may use io_uring",
        )
        .fix("add the user to the group named by kernel.io_uring_group, or set kernel.io_uring_disabled=0"),
        Some(v) => Check::new(
            "io_uring",
            Verdict::Ok,
            format!("kernel.io_uring_disabled = {v}"),
        ),
        None => Check::new(
            "io_uring",
            Verdict::Unknown,
            "no /proc/sys/kernel/io_uring_disabled (kernel older than 6.6, or not readable)",
        ),
    };
    if !view.is_live() {
        return base;
    }
    match probe::uring_support() {
        Ok(()) => Check::new(
            "io_uring",
            if base.verdict == Verdict::Warn {
                Verdict::Warn
            } else {
                Verdict::Ok
            },
            format!(
                "{}; probe: a ring with READ and READ_FIXED works",
                base.detail
            ),
        ),
        Err(why) => {
            Check::new(
                "io_uring",
                Verdict::Fail,
                format!(
                    "{}; probe failed: {why}; llmstream falls back to a pread thread pool",
                    base.detail
                ),
            )
            .fix(base.fix.unwrap_or_else(|| {
                "check seccomp filters (containers) and the kernel config".into()
            }))
        }
    }
}

/// One line of `/proc/mounts`.
struct Mount {
    point: PathBuf,
    fstype: String,
}

/// Undo the octal escapes (`\040`) of `/proc/mounts`.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The file system type holding `path` (the longest mount point that is a prefix).
fn fs_type(view: &SystemView, path: &Path) -> Option<String> {
    let mounts = view.read("/proc/mounts")?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _dev = f.next()?;
            let point = PathBuf::from(unescape(f.next()?));
            let fstype = f.next()?.to_owned();
            Some(Mount { point, fstype })
        })
        .filter(|m| path.starts_with(&m.point))
        // The last of the longest wins: later mounts cover earlier ones on the same point.
        .max_by_key(|m| m.point.components().count())
        .map(|m| m.fstype)
}

/// What a file system type means for `O_DIRECT`: verdict and words.
fn judge_fs(fstype: &str, kernel: Option<(u32, u32)>) -> (Verdict, String, Option<String>) {
    let move_it = "keep models on a local ext4/xfs/btrfs file system on the NVMe drive";
    match fstype {
        "ext4" | "xfs" | "btrfs" | "f2fs" | "ext3" | "ext2" | "bcachefs" => (
            Verdict::Ok,
            format!("{fstype} supports O_DIRECT"),
            None,
        ),
        "tmpfs" | "ramfs" => {
            let since = match kernel {
                Some(v) if v >= (6, 6) => "this kernel (>= 6.6) accepts O_DIRECT on tmpfs, as a plain memory copy",
                Some(_) => "this kernel (< 6.6) refuses O_DIRECT on tmpfs, so reads are buffered",
                None => "tmpfs accepts O_DIRECT only on kernels >= 6.6",
            };
            (
                Verdict::Warn,
                format!("{fstype}: the model already sits in RAM, nothing is streamed from storage; {since}"),
                Some(move_it.into()),
            )
        }
        "overlay" => (
            Verdict::Warn,
            "overlayfs: O_DIRECT depends on the underlying file system and the kernel".into(),
            Some("bind-mount the model directory from the host file system".into()),
        ),
        t if t == "fuse" || t.starts_with("fuse.") || t == "fuseblk" => (
            Verdict::Warn,
            format!("{t}: FUSE passes O_DIRECT only when its server allows it, and adds a user-space hop"),
            Some(move_it.into()),
        ),
        "nfs" | "nfs4" | "cifs" | "smb3" | "9p" | "virtiofs" => (
            Verdict::Warn,
            format!("{fstype}: a network or shared file system; O_DIRECT semantics and speed depend on the server"),
            Some(move_it.into()),
        ),
        "zfs" => (
            Verdict::Warn,
            "zfs: O_DIRECT bypasses the ARC only from OpenZFS 2.3".into(),
            None,
        ),
        other => (
            Verdict::Unknown,
            format!("{other}: O_DIRECT support of this file system is not known to llmstream"),
            None,
        ),
    }
}

/// A regular file to probe: `dir` itself when it is a file, else its first `.gguf` file, else
/// its first regular file that is not hidden.
fn probe_file(dir: &Path) -> Option<PathBuf> {
    if dir.is_file() {
        return Some(dir.to_owned());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let gguf = files
        .iter()
        .position(|p| p.extension().is_some_and(|x| x == "gguf"));
    match gguf {
        Some(i) => Some(files.swap_remove(i)),
        None => files.into_iter().next(),
    }
}

pub(super) fn o_direct_check(
    view: &SystemView,
    model_dir: Option<&Path>,
    kernel: Option<(u32, u32)>,
) -> Check {
    let Some(dir) = model_dir else {
        return Check::new("o_direct", Verdict::Unknown, "no model directory given")
            .fix("pass --model-dir DIR");
    };
    let abs = if view.is_live() {
        std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned())
    } else {
        dir.to_owned()
    };
    let fstype = fs_type(view, &abs);
    let (mut verdict, mut detail, mut fix) = match &fstype {
        Some(t) => judge_fs(t, kernel),
        None => (
            Verdict::Unknown,
            "file system type not found in /proc/mounts".into(),
            None,
        ),
    };
    detail = format!("{}: {detail}", abs.display());
    if view.is_live() {
        match probe_file(&abs) {
            None => detail.push_str("; no file in it to open with O_DIRECT"),
            Some(f) => match Source::open(&f, DirectChoice::Auto) {
                Ok(s) if s.is_direct() => {
                    detail.push_str(&format!("; {} opened and read with O_DIRECT", f.display()));
                    if verdict == Verdict::Unknown {
                        verdict = Verdict::Ok;
                    }
                }
                Ok(s) => {
                    let why = s.direct_refused().unwrap_or("refused");
                    detail.push_str(&format!(
                        "; O_DIRECT refused on {} ({why}): llmstream uses buffered reads",
                        f.display()
                    ));
                    verdict = Verdict::Warn;
                    fix.get_or_insert_with(|| {
                        "keep models on a local ext4/xfs/btrfs file system".into()
                    });
                }
                Err(e) => detail.push_str(&format!("; cannot open {}: {e}", f.display())),
            },
        }
    }
    let c = Check::new("o_direct", verdict, detail);
    match fix {
        Some(f) => c.fix(f),
        None => c,
    }
}

pub(super) fn memlock_check(view: &SystemView, required: u64) -> Check {
    if !view.is_live() {
        return Check::new(
            "memlock",
            Verdict::Unknown,
            "RLIMIT_MEMLOCK is a property of the running process; only checked with root /",
        );
    }
    let cap = memlock::has_cap_ipc_lock();
    match memlock::limit() {
        None => Check::new("memlock", Verdict::Ok, "RLIMIT_MEMLOCK is unlimited"),
        Some(_) if cap => Check::new(
            "memlock",
            Verdict::Ok,
            "CAP_IPC_LOCK held: RLIMIT_MEMLOCK does not apply",
        ),
        Some(l) if l >= required => Check::new(
            "memlock",
            Verdict::Ok,
            format!("RLIMIT_MEMLOCK {} MiB >= {} MiB of staging", l >> 20, required >> 20),
        ),
        Some(l) => Check::new(
            "memlock",
            Verdict::Fail,
            format!(
                "RLIMIT_MEMLOCK {} KiB < {} MiB of staging buffers llmstream locks",
                l >> 10,
                required >> 20
            ),
        )
        .fix("raise it: ulimit -l unlimited, LimitMEMLOCK=infinity in a systemd unit, or /etc/security/limits.conf"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_parses() {
        assert_eq!(parse_kernel("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_kernel("garbage"), None);
    }

    #[test]
    fn mount_escapes_are_undone() {
        assert_eq!(unescape("/mnt/my\\040models"), "/mnt/my models");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/odd\\x"), "/odd\\x");
    }
}
