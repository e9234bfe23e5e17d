//! `llmstream bench --daemon FILE`: every layer of a GGUF model streamed by 1 and by N client
//! contexts at once, through llmstreamd (layers in the daemon's shared RAM tier are copied from
//! the shared mapping, the rest read from storage by the client) and in-process, in one run, so
//! the ratio between the two paths holds on a noisy machine.
//!
//! Each client is a [`Context`] of its own on a thread of its own, with its own daemon
//! connection and its own mapping of the tier, as separate processes would have. The models are
//! opened (and the daemon's tier filled) before the clock starts.

use anyhow::{Context as _, Result};
use llmstream::{BufferKind, Config, Context, Model};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// One measurement: `clients` streaming every layer `passes` times.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    /// Client contexts at once.
    pub clients: usize,
    /// Aggregate GB/s in-process.
    pub in_process_gbps: f64,
    /// Aggregate GB/s through the daemon.
    pub daemon_gbps: f64,
    /// `daemon_gbps / in_process_gbps`.
    pub ratio: f64,
}

fn open(cfg: &Config, file: &Path, via_daemon: bool) -> Result<(Context, Model)> {
    let ctx = Context::new(cfg.clone()).context("starting a streaming context")?;
    let model = if via_daemon {
        ctx.open_model(file)?
    } else {
        // The in-process path, whatever the environment says.
        Model::from_source(ctx.open(file)?)?
    };
    Ok((ctx, model))
}

/// Stream all layers `passes` times into one reused buffer; bytes moved.
fn stream(ctx: &Context, model: &Model, passes: u32) -> Result<u64> {
    let max = (0..model.layer_count())
        .map(|i| model.layer_bytes(i))
        .collect::<llmstream::Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let buf = ctx.alloc(BufferKind::Device, usize::try_from(max)?)?;
    let mut moved = 0;
    for _ in 0..passes {
        for i in 0..model.layer_count() {
            model.load_layer(ctx, i, &buf, 0)?;
            moved += model.layer_bytes(i)?;
        }
    }
    Ok(moved)
}

/// Aggregate GB/s of `clients` contexts streaming at once.
fn measure(cfg: &Config, file: &Path, clients: usize, passes: u32, daemon: bool) -> Result<f64> {
    let opened = (0..clients)
        .map(|_| open(cfg, file, daemon))
        .collect::<Result<Vec<_>>>()?;
    if daemon {
        for (ctx, m) in &opened {
            anyhow::ensure!(
                m.source().via_daemon(),
                "the model was not opened through llmstreamd: {:?}",
                ctx.stats().fallbacks
            );
        }
    }
    let start = Arc::new(Barrier::new(clients + 1));
    let threads = opened
        .into_iter()
        .map(|(ctx, m)| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                stream(&ctx, &m, passes)
            })
        })
        .collect::<Vec<_>>();
    start.wait();
    let t = Instant::now();
    let mut bytes = 0;
    for th in threads {
        bytes += th
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    Ok(bytes as f64 / t.elapsed().as_secs_f64().max(1e-9) / 1e9)
}

/// Run the comparison for each count in `clients`; print a table (or JSON).
pub fn run(cfg: &Config, file: &Path, clients: &[usize], passes: u32, json: bool) -> Result<()> {
    let socket = llmstream::daemon::live_socket().context(
        "no llmstreamd socket (start llmstreamd and set LLMSTREAM_SOCKET to its socket)",
    )?;
    // One client through the daemon first: it fills the tier (timed), and shows its size.
    let t = Instant::now();
    let (ctx, probe) = open(cfg, file, true)?;
    let open_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        probe.source().via_daemon(),
        "llmstreamd at {} was not used: {:?}",
        socket.display(),
        ctx.stats().fallbacks
    );
    let layer_bytes: u64 = (0..probe.layer_count())
        .map(|i| probe.layer_bytes(i))
        .sum::<llmstream::Result<u64>>()?;
    let tier = probe.source().shared_tier_bytes();
    let mut runs = Vec::new();
    for &n in clients {
        let in_process_gbps = measure(cfg, file, n, passes, false)?;
        let daemon_gbps = measure(cfg, file, n, passes, true)?;
        runs.push(Run {
            clients: n,
            in_process_gbps,
            daemon_gbps,
            ratio: daemon_gbps / in_process_gbps,
        });
    }
    drop((probe, ctx));
    if json {
        let o = serde_json::json!({
            "file": file.display().to_string(),
            "socket": socket.display().to_string(),
            "layer_bytes": layer_bytes,
            "tier_bytes": tier,
            "first_open_s": open_secs,
            "passes": passes,
            "runs": runs,
        });
        println!("{o}");
        return Ok(());
    }
    println!(
        "file      {} ({:.3} GB of layers, {:.3} GB in the daemon's shared tier)",
        file.display(),
        layer_bytes as f64 / 1e9,
        tier as f64 / 1e9
    );
    println!("daemon    {}", socket.display());
    println!("first open through the daemon (tier fill included): {open_secs:.3} s");
    println!("each client streams every layer {passes} times\n");
    println!("clients  in-process GB/s  daemon GB/s  daemon/in-process");
    for r in &runs {
        println!(
            "{:>7}  {:>15.3}  {:>11.3}  {:>17.2}",
            r.clients, r.in_process_gbps, r.daemon_gbps, r.ratio
        );
    }
    Ok(())
}
