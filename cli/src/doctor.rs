//! `llmstream doctor [--json] [--root DIR] [--model-dir DIR]`: what this machine allows on the
//! data path (io_uring, O_DIRECT, GPUs, BAR1, IOMMU, P2P, GDS, the DKMS patches) and which path
//! llmstream takes.

use anyhow::Result;
use llmstream::doctor::{diagnose, Options, Report, SystemView};
use std::io::{self, Write};
use std::path::PathBuf;

/// Arguments of `llmstream doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read sysfs/procfs below this directory instead of `/` (live probes only run with `/`).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Directory (or file) holding the models, for the O_DIRECT check; default: the current
    /// directory when the root is `/`.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
}

/// Run the checks and print them on stdout.
pub fn run(args: &DoctorArgs) -> Result<()> {
    let view = SystemView::new(&args.root);
    let model_dir = match &args.model_dir {
        Some(d) => Some(d.clone()),
        None if view.is_live() => Some(std::env::current_dir()?),
        None => None,
    };
    let opts = Options {
        model_dir,
        ..Options::default()
    };
    let report = diagnose(&view, &opts);
    let mut out = io::BufWriter::new(io::stdout().lock());
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_text(&mut out, &report)
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn write_text(out: &mut impl Write, report: &Report) -> io::Result<()> {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        writeln!(
            out,
            "{:<7} {:<width$}  {}",
            c.verdict.as_str().to_uppercase(),
            c.name,
            c.detail
        )?;
        if let Some(fix) = &c.fix {
            writeln!(out, "{:<7} {:<width$}  fix: {fix}", "", "")?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "path: {} ({})",
        report.path.as_str(),
        report.path_reason
    )?;
    writeln!(out, "platform allows: {}", report.platform_best.as_str())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use llmstream::doctor::{Check, DataPath, Verdict};

    #[test]
    fn table_has_verdicts_fixes_and_path() {
        let report = Report {
            checks: vec![
                Check {
                    name: "io_uring".into(),
                    verdict: Verdict::Fail,
                    detail: "kernel.io_uring_disabled = 2".into(),
                    fix: Some("sysctl -w kernel.io_uring_disabled=0".into()),
                },
                Check {
                    name: "kernel".into(),
                    verdict: Verdict::Ok,
                    detail: "Linux 6.8".into(),
                    fix: None,
                },
            ],
            path: DataPath::PinnedBounce,
            path_reason: "no NVIDIA GPU".into(),
            platform_best: DataPath::PinnedBounce,
        };
        let mut out = Vec::new();
        write_text(&mut out, &report).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("FAIL") && lines[0].contains("io_uring"));
        assert!(lines[1].trim_start().starts_with("fix: sysctl"));
        assert!(lines[2].starts_with("OK") && lines[2].contains("kernel"));
        assert!(text.contains("path: pinned_bounce (no NVIDIA GPU)"));
    }
}
