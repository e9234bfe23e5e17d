//! `llmstream doctor` against fixture trees of sysfs/procfs (tests/fixtures/doctor, made by
//! make.sh there): each tree's verdicts and the chosen data path.
#![allow(clippy::unwrap_used)]

use llmstream::doctor::{diagnose, DataPath, Options, Report, SystemView, Verdict};
use std::path::{Path, PathBuf};

fn run(tree: &str) -> Report {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/doctor")
        .join(tree);
    assert!(root.is_dir(), "missing fixture {}", root.display());
    let view = SystemView::new(root);
    assert!(!view.is_live());
    let opts = Options {
        model_dir: Some(PathBuf::from("/models")),
        ..Options::default()
    };
    diagnose(&view, &opts)
}

fn verdict(r: &Report, name: &str) -> Verdict {
    r.check(name)
        .unwrap_or_else(|| panic!("no check {name} in {:#?}", r.checks))
        .verdict
}

fn detail<'a>(r: &'a Report, name: &str) -> &'a str {
    &r.check(name).unwrap().detail
}

#[test]
fn no_gpu() {
    let r = run("no_gpu");
    assert_eq!(verdict(&r, "kernel"), Verdict::Ok);
    assert!(detail(&r, "kernel").contains("6.8.0"));
    assert_eq!(verdict(&r, "io_uring"), Verdict::Ok);
    assert_eq!(verdict(&r, "o_direct"), Verdict::Ok);
    assert!(detail(&r, "o_direct").contains("ext4"));
    assert_eq!(verdict(&r, "memlock"), Verdict::Unknown);
    assert_eq!(verdict(&r, "gpu"), Verdict::Warn);
    assert_eq!(verdict(&r, "p2p_dma_buf"), Verdict::Unknown);
    assert_eq!(verdict(&r, "topology"), Verdict::Unknown);
    assert_eq!(verdict(&r, "iommu"), Verdict::Warn);
    assert!(r.check("bar1").is_none());
    assert_eq!(verdict(&r, "dma_buf"), Verdict::Unknown);
    assert_eq!(verdict(&r, "cufile"), Verdict::Unknown);
    assert!(detail(&r, "cufile").contains("not found"));
    assert_eq!(r.path, DataPath::PinnedBounce);
    assert_eq!(r.platform_best, DataPath::PinnedBounce);
    assert!(r.path_reason.contains("no NVIDIA GPU"));
}

#[test]
fn io_uring_disabled() {
    let r = run("io_uring_disabled");
    let c = r.check("io_uring").unwrap();
    assert_eq!(c.verdict, Verdict::Fail);
    assert!(c.detail.contains("= 2"));
    assert!(c.fix.as_deref().unwrap().contains("io_uring_disabled=0"));
    assert_eq!(r.path, DataPath::PinnedBounce);
}

#[test]
fn model_on_tmpfs() {
    let r = run("model_on_tmpfs");
    let c = r.check("o_direct").unwrap();
    assert_eq!(c.verdict, Verdict::Warn);
    assert!(c.detail.contains("tmpfs"), "{}", c.detail);
    // 6.1 is older than 6.6, where tmpfs started to accept O_DIRECT.
    assert!(c.detail.contains("< 6.6"), "{}", c.detail);
    assert!(c.fix.is_some());
}

#[test]
fn gpu_no_p2p() {
    let r = run("gpu_no_p2p");
    assert_eq!(verdict(&r, "gpu"), Verdict::Ok);
    assert!(detail(&r, "gpu").contains("GeForce RTX 4090"));
    assert_eq!(verdict(&r, "nvidia_driver"), Verdict::Ok);
    assert!(detail(&r, "nvidia_driver").contains("550.163.01"));
    assert_eq!(verdict(&r, "kernel_module"), Verdict::Warn);
    let bar = r.check("bar1 0000:01:00.0").unwrap();
    assert_eq!(bar.verdict, Verdict::Warn);
    assert!(bar.detail.contains("256 MiB"));
    let rebar = r.check("resizable_bar 0000:01:00.0").unwrap();
    assert_eq!(rebar.verdict, Verdict::Warn);
    assert!(rebar.detail.contains("32 GiB"), "{}", rebar.detail);
    assert_eq!(verdict(&r, "iommu"), Verdict::Ok);
    assert!(detail(&r, "iommu").contains("DMA-FQ"));
    let topo = r.check("topology nvme0 0000:01:00.0").unwrap();
    assert_eq!(topo.verdict, Verdict::Warn);
    assert!(topo.detail.contains("different root ports"));
    assert_eq!(verdict(&r, "acs"), Verdict::Unknown);
    let p2p = r.check("p2p_dma_buf").unwrap();
    assert_eq!(p2p.verdict, Verdict::Fail);
    assert!(p2p.detail.contains("proprietary"));
    assert_eq!(verdict(&r, "gds"), Verdict::Warn);
    let dma = r.check("dma_buf").unwrap();
    assert_eq!(dma.verdict, Verdict::Fail);
    assert!(dma.detail.contains("proprietary"), "{}", dma.detail);
    assert_eq!(verdict(&r, "cufile"), Verdict::Unknown);
    assert_eq!(verdict(&r, "dkms_patch"), Verdict::Warn);
    assert_eq!(r.path, DataPath::PinnedBounce);
    assert_eq!(r.platform_best, DataPath::PinnedBounce);
}

#[test]
fn patched_geforce() {
    let r = run("patched_geforce");
    assert_eq!(verdict(&r, "kernel_module"), Verdict::Ok);
    assert_eq!(verdict(&r, "bar1"), Verdict::Ok);
    assert!(detail(&r, "bar1").contains("32 GiB"));
    assert_eq!(verdict(&r, "resizable_bar"), Verdict::Ok);
    assert_eq!(verdict(&r, "iommu"), Verdict::Ok);
    assert!(detail(&r, "iommu").contains("identity"));
    assert_eq!(verdict(&r, "p2p_dma_buf"), Verdict::Ok);
    assert!(detail(&r, "p2p_dma_buf").contains("patch"));
    assert_eq!(verdict(&r, "dkms_patch"), Verdict::Ok);
    assert!(detail(&r, "kernel").contains("follow_pfnmap_start"));
    let dma = r.check("dma_buf").unwrap();
    assert_eq!(dma.verdict, Verdict::Warn);
    assert!(
        dma.detail.contains("exported as a dma-buf"),
        "{}",
        dma.detail
    );
    assert!(dma.detail.contains("--path dmabuf"), "{}", dma.detail);
    assert_eq!(r.platform_best, DataPath::DmaBuf);
    assert_eq!(r.path, DataPath::PinnedBounce);
    assert!(
        r.path_reason.contains("cannot register dma-bufs"),
        "{}",
        r.path_reason
    );
}

/// A copy of fixture `tree` without the paths `drop` (relative to the root).
fn copy_without(tree: &str, drop: &str) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path, skip: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let (src, dst) = (e.path(), to.join(e.file_name()));
            if src == skip {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                // sysfs-style links are relative, so they point into the copy
                std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
            } else if ft.is_dir() {
                copy(&src, &dst, skip);
            } else {
                std::fs::copy(&src, &dst).unwrap();
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/doctor")
        .join(tree);
    let dir = tempfile::tempdir().unwrap();
    copy(&root, dir.path(), &root.join(drop));
    dir
}

#[test]
fn gds_without_udev_database_stays_on_the_bounce() {
    let dir = copy_without("gds_present", "run/udev");
    let view = SystemView::new(dir.path().to_path_buf());
    let r = diagnose(
        &view,
        &Options {
            model_dir: Some(PathBuf::from("/models")),
            ..Options::default()
        },
    );
    let cf = r.check("cufile").unwrap();
    assert_eq!(cf.verdict, Verdict::Warn);
    assert!(cf.detail.contains("/run/udev/data"), "{}", cf.detail);
    assert_eq!(r.path, DataPath::PinnedBounce);
    assert_eq!(r.platform_best, DataPath::Gds);
    assert!(r.path_reason.contains("udev"), "{}", r.path_reason);
}

#[test]
fn gds_present() {
    let r = run("gds_present");
    assert_eq!(verdict(&r, "kernel_module"), Verdict::Ok);
    let topo = r.check("topology nvme0 0000:03:00.0").unwrap();
    assert_eq!(topo.verdict, Verdict::Ok);
    assert!(topo.detail.contains("0000:01:00.0"), "{}", topo.detail);
    // 64-bit BAR0: BAR1 is the second memory region (index 2), 128 GiB.
    assert_eq!(verdict(&r, "bar1"), Verdict::Ok);
    assert!(
        detail(&r, "bar1").contains("128 GiB"),
        "{}",
        detail(&r, "bar1")
    );
    assert_eq!(verdict(&r, "resizable_bar"), Verdict::Unknown);
    assert_eq!(verdict(&r, "p2p_dma_buf"), Verdict::Ok);
    let gds = r.check("gds").unwrap();
    assert_eq!(gds.verdict, Verdict::Ok);
    assert!(gds.detail.contains("libcufile present"), "{}", gds.detail);
    // The fixture holds /usr/local/cuda/lib64/libcufile.so.0: found, never loaded.
    let cf = r.check("cufile").unwrap();
    assert_eq!(cf.verdict, Verdict::Ok);
    assert!(
        cf.detail.contains("/usr/local/cuda/lib64/libcufile.so.0"),
        "{}",
        cf.detail
    );
    assert!(cf.detail.contains("not loaded"), "{}", cf.detail);
    assert_eq!(verdict(&r, "dma_buf"), Verdict::Warn);
    assert_eq!(verdict(&r, "dkms_patch"), Verdict::Ok);
    assert_eq!(r.platform_best, DataPath::Gds);
    assert_eq!(r.path, DataPath::Gds);
    assert!(r.path_reason.contains("cuFile"), "{}", r.path_reason);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["path"], "gds");
}

#[test]
fn report_serializes_with_checks_and_path() {
    let r = run("gpu_no_p2p");
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["path"], "pinned_bounce");
    let checks = v["checks"].as_array().unwrap();
    let p2p = checks.iter().find(|c| c["name"] == "p2p_dma_buf").unwrap();
    assert_eq!(p2p["verdict"], "fail");
    assert!(p2p["fix"].is_string());
}

#[test]
fn missing_root_yields_unknowns_not_errors() {
    let view = SystemView::new("/nonexistent/llmstream-doctor");
    let r = diagnose(&view, &Options::default());
    assert_eq!(verdict(&r, "kernel"), Verdict::Unknown);
    assert_eq!(verdict(&r, "o_direct"), Verdict::Unknown);
    assert_eq!(r.path, DataPath::PinnedBounce);
}

#[test]
fn stale_patch_state_does_not_count() {
    let r = run("stale_patch");
    let d = r.check("dkms_patch").unwrap();
    assert_eq!(d.verdict, Verdict::Warn);
    assert!(
        d.detail.contains("550.120") && d.detail.contains("550.163.01"),
        "{}",
        d.detail
    );
    assert_eq!(verdict(&r, "p2p_dma_buf"), Verdict::Fail);
    assert_eq!(r.platform_best, DataPath::PinnedBounce);
}
