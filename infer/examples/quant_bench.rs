//! `matvec` throughput per weight type.
//!
//! `cargo run --release -p llmstream-infer --example quant_bench -- [threads] [rows] [cols] [ms]`
//! (defaults: all CPUs, 4096 x 4096, 1000 ms per type and backend).

use std::time::Duration;

use llmstream_infer::quant::{self, bench, llama_cpp_repacks, Backend, MatOptions};

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
        "{:<9} {:>7} {:>12} {:>10} {:>12} {:>10}",
        "type", "MiB", "best us", "GB/s", "scalar us", "scalar GB/s"
    );
    for ty in bench::WEIGHT_TYPES {
        line(ty.name(), ty, MatOptions::default(), rows, cols, budget)?;
        if llama_cpp_repacks(ty, rows) {
            // the same matrix summed like ggml_vec_dot (llama.cpp without repacking)
            let opts = MatOptions {
                llama_cpp_repack: false,
                ..MatOptions::default()
            };
            line(&format!("{}/vd", ty.name()), ty, opts, rows, cols, budget)?;
        }
    }
    Ok(())
}

fn line(
    label: &str,
    ty: llmstream::gguf::GgmlType,
    opts: MatOptions,
    rows: usize,
    cols: usize,
    budget: Duration,
) -> anyhow::Result<()> {
    {
        let fast = bench::bench_matvec_opts(ty, opts, rows, cols, budget)?;
        let scalar = MatOptions {
            backend: Backend::Scalar,
            ..opts
        };
        let slow = bench::bench_matvec_opts(ty, scalar, rows, cols, budget / 4)?;
        #[allow(clippy::cast_precision_loss)]
        let mib = fast.weight_bytes as f64 / (1024.0 * 1024.0);
        println!(
            "{:<9} {:>7.1} {:>12.1} {:>10.2} {:>12.1} {:>10.2}",
            label,
            mib,
            fast.best.as_secs_f64() * 1e6,
            fast.gbps(),
            slow.best.as_secs_f64() * 1e6,
            slow.gbps()
        );
    }
    Ok(())
}
