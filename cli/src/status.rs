//! `llmstream status [--json] [--socket PATH]`: the state of the llmstreamd daemon this process
//! would use: clients, models, shared RAM tier use, bytes served, errors.

use anyhow::{Context as _, Result};
use llmstream::daemon::proto::client::Client;
use llmstream::daemon::proto::StatusReport;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `llmstream status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The daemon's socket (default: `LLMSTREAM_SOCKET`, else /run/llmstream/llmstreamd.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Json<'a> {
    socket: &'a std::path::Path,
    server: &'a str,
    status: &'a StatusReport,
}

/// Ask the daemon and print its answer.
pub fn run(a: &StatusArgs) -> Result<()> {
    let socket = match &a.socket {
        Some(s) => s.clone(),
        None => llmstream::daemon::socket_path().context(
            "LLMSTREAM_SOCKET is empty or `none`: no daemon is used (pass --socket to ask one)",
        )?,
    };
    let mut c = Client::connect_with_timeout(&socket, Some(Duration::from_secs(10)))
        .with_context(|| format!("no llmstreamd answers at {}", socket.display()))?;
    let s = c.status().context("status request")?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let written = if a.json {
        let j = Json {
            socket: &socket,
            server: &c.server,
            status: &s,
        };
        serde_json::to_writer_pretty(&mut out, &j)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_text(&mut out, &socket, &c.server, &s)
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Bytes as a short decimal figure.
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

fn write_text(
    out: &mut impl Write,
    socket: &std::path::Path,
    server: &str,
    s: &StatusReport,
) -> io::Result<()> {
    writeln!(out, "llmstreamd {server} at {}", socket.display())?;
    writeln!(out, "clients       {}", s.clients)?;
    writeln!(out, "models        {}", s.models)?;
    writeln!(out, "errors        {}", s.errors)?;
    writeln!(
        out,
        "bytes served  {} (read from clients' files)",
        size(s.bytes_served)
    )?;
    writeln!(
        out,
        "shared tier   {} of {} budget; {} handed to clients",
        size(s.tier_bytes),
        size(s.tier_budget),
        size(s.tier_bytes_shared)
    )?;
    if !s.tiers.is_empty() {
        writeln!(out, "  {:>10}  {:>5}  model", "bytes", "refs")?;
        for t in &s.tiers {
            writeln!(out, "  {:>10}  {:>5}  {}", size(t.bytes), t.refs, t.label)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use llmstream::daemon::proto::TierStatus;

    #[test]
    fn text_lists_counters_and_tiers() {
        let s = StatusReport {
            clients: 2,
            models: 3,
            bytes_served: 16_800_000,
            errors: 1,
            tier_budget: 64 << 20,
            tier_bytes: 16_781_312,
            tier_bytes_shared: 33_562_624,
            tiers: vec![TierStatus {
                label: "/m/a.gguf".into(),
                bytes: 16_777_792,
                refs: 2,
            }],
        };
        let mut out = Vec::new();
        write_text(&mut out, std::path::Path::new("/s.sock"), "0.1.0", &s).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("llmstreamd 0.1.0 at /s.sock\n"), "{text}");
        assert!(text.contains("clients       2\n"), "{text}");
        assert!(text.contains("errors        1\n"), "{text}");
        assert!(
            text.contains("shared tier   16.8 MB of 67.1 MB budget; 33.6 MB handed"),
            "{text}"
        );
        assert!(text.contains("     2  /m/a.gguf"), "{text}");
    }
}
