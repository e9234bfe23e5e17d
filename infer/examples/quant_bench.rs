//! `matvec` throughput per weight type.
//!
//! `cargo run --release -p llmstream-infer --example quant_bench -- [threads] [rows] [cols] [ms]`
//! (defaults: all CPUs, 4096 x 4096, 1000 ms per type and backend).

use std::time::Duration;

use llmstream_infer::quant::{self, bench, Backend};

fn arg(i: usize, default: usize) -> anyhow::Result<usize> {
    match std::env::args().nth(i) {
        Some(s) => Ok(s.parse()?),
        None => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = arg(1, cpus)?;
    let rows = arg(2, 4096)?;
    let cols = arg(3, 4096)?;
    let budget = Duration::from_millis(u64::try_from(arg(4, 1000)?)?);
    quant::set_threads(threads)?;
    println!(
        "matvec {rows} x {cols}, {} threads, detected backend {:?}",
        quant::threads()?,
        Backend::detect()
    );
    println!(
        "{:<6} {:>10} {:>12} {:>10} {:>12} {:>10}",
        "type", "MiB", "best us", "GB/s", "scalar us", "scalar GB/s"
    );
    for ty in bench::WEIGHT_TYPES {
        let fast = bench::bench_matvec(ty, Backend::detect(), rows, cols, budget)?;
        let slow = bench::bench_matvec(ty, Backend::Scalar, rows, cols, budget / 4)?;
        #[allow(clippy::cast_precision_loss)]
        let mib = fast.weight_bytes as f64 / (1024.0 * 1024.0);
        println!(
            "{:<6} {:>10.1} {:>12.1} {:>10.2} {:>12.1} {:>10.2}",
            ty.name(),
            mib,
            fast.best.as_secs_f64() * 1e6,
            fast.gbps(),
            slow.best.as_secs_f64() * 1e6,
            slow.gbps()
        );
    }
    Ok(())
}
