//! `llmstream bench-cpu`: throughput of the CPU engine's fused dequantize-and-dot matrix-vector
//! products (one token, as in decode), in GB/s of weights, per weight type, matrix shape and
//! kernel backend (AVX2, AVX-512, and which one `llmstream run` chooses).

use anyhow::{bail, Context as _, Result};
use llmstream::gguf::GgmlType;
use llmstream_infer::quant::{self, bench, llama_cpp_repacks, Backend, MatOptions};
use std::time::Duration;

use crate::common::parse_size;

#[derive(clap::Args, Debug)]
pub struct BenchCpuArgs {
    /// Threads of the quant pool (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Weight types, comma-separated (e.g. q4_k,q6_k; default: every supported type).
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// Matrix shapes ROWSxCOLS, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4096x4096,14336x4096")]
    pub shapes: Vec<String>,
    /// Backends to measure, comma-separated (scalar, avx2, avx512; default: the SIMD ones
    /// this CPU has).
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<String>,
    /// Weights cycled through per measurement (copies of the matrix), so that each product
    /// streams its weights from memory as decode does; 0 keeps one matrix hot in the caches.
    #[arg(long, value_parser = parse_size, default_value = "512M")]
    pub footprint: usize,
    /// Milliseconds per measurement.
    #[arg(long, default_value_t = 400)]
    pub ms: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn parse_type(s: &str) -> Result<GgmlType> {
    let t = GgmlType::ALL
        .iter()
        .copied()
        .find(|t| t.name().eq_ignore_ascii_case(s.trim()))
        .with_context(|| format!("unknown weight type {s:?}"))?;
    if !bench::WEIGHT_TYPES.contains(&t) {
        bail!(
            "{} has no fused dot product (supported: {})",
            t.name(),
            type_list()
        );
    }
    Ok(t)
}

fn type_list() -> String {
    bench::WEIGHT_TYPES
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn parse_shape(s: &str) -> Result<(usize, usize)> {
    let (r, c) = s
        .trim()
        .split_once(['x', 'X'])
        .with_context(|| format!("shape {s:?} is not ROWSxCOLS"))?;
    let rows = r.parse().with_context(|| format!("rows of shape {s:?}"))?;
    let cols = c
        .parse()
        .with_context(|| format!("columns of shape {s:?}"))?;
    if rows == 0 || cols == 0 || cols % 256 != 0 {
        bail!("shape {s:?}: rows and columns must be positive, columns a multiple of 256");
    }
    Ok((rows, cols))
}

fn parse_backend(s: &str) -> Result<Backend> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "scalar" => Backend::Scalar,
        "avx2" => Backend::Avx2,
        "avx512" | "avx-512" => Backend::Avx512,
        other => bail!("unknown backend {other:?} (scalar, avx2, avx512)"),
    })
}

/// One measured line.
struct Row {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    path: &'static str,
    results: Vec<bench::BenchResult>,
}

pub fn run(a: &BenchCpuArgs) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = a.threads.unwrap_or(cpus).max(1);
    quant::set_threads(threads).context("quant thread pool")?;
    let types = if a.types.is_empty() {
        bench::WEIGHT_TYPES.to_vec()
    } else {
        a.types
            .iter()
            .map(|s| parse_type(s))
            .collect::<Result<_>>()?
    };
    let shapes = a
        .shapes
        .iter()
        .map(|s| parse_shape(s))
        .collect::<Result<Vec<_>>>()?;
    let chosen = Backend::detect();
    let backends = if a.backends.is_empty() {
        [Backend::Avx2, Backend::Avx512]
            .into_iter()
            .filter(|b| b.is_available())
            .collect::<Vec<_>>()
    } else {
        a.backends
            .iter()
            .map(|s| parse_backend(s))
            .collect::<Result<_>>()?
    };
    for b in &backends {
        if !b.is_available() {
            bail!("this CPU cannot run the {} kernels", b.name());
        }
    }
    if backends.is_empty() {
        bail!("this CPU has no SIMD backend: pass --backends scalar");
    }
    let budget = Duration::from_millis(a.ms.max(1));
    if !a.json {
        println!(
            "matvec, one activation row, {threads} threads, chosen backend {}, {} of weights cycled",
            chosen.name(),
            if a.footprint == 0 {
                "none (hot caches)".to_string()
            } else {
                format!("{} MiB", a.footprint >> 20)
            }
        );
        let mut head = format!("{:<6} {:>12} {:>8} {:>8}", "type", "shape", "path", "MiB");
        for b in &backends {
            head.push_str(&format!(" {:>12}", format!("{} GB/s", b.name())));
        }
        println!("{head}");
    }
    let mut out = Vec::new();
    for &(rows, cols) in &shapes {
        for &ty in &types {
            let opts = MatOptions::default();
            let path = if llama_cpp_repacks(ty, rows) {
                "gemv"
            } else {
                "vec_dot"
            };
            let mut results = Vec::new();
            for &backend in &backends {
                let o = MatOptions { backend, ..opts };
                results.push(
                    bench::bench_matvec_footprint(ty, o, rows, cols, a.footprint, budget)
                        .with_context(|| {
                            format!("{} {rows}x{cols} {}", ty.name(), backend.name())
                        })?,
                );
            }
            let row = Row {
                ty,
                rows,
                cols,
                path,
                results,
            };
            if !a.json {
                print_row(&row, chosen);
            }
            out.push(row);
        }
    }
    if a.json {
        let items: Vec<_> = out
            .iter()
            .flat_map(|r| {
                r.results.iter().map(move |m| {
                    serde_json::json!({
                        "type": r.ty.name(),
                        "rows": r.rows,
                        "cols": r.cols,
                        "path": r.path,
                        "backend": m.backend.name(),
                        "chosen": m.backend == chosen,
                        "weight_bytes": m.weight_bytes,
                        "calls": m.calls,
                        "best_us": m.best.as_secs_f64() * 1e6,
                        "mean_us": m.per_call.as_secs_f64() * 1e6,
                        "gbps": m.gbps(),
                    })
                })
            })
            .collect();
        let o = serde_json::json!({
            "threads": threads,
            "chosen_backend": chosen.name(),
            "footprint_bytes": a.footprint,
            "results": items,
        });
        println!("{o}");
    }
    Ok(())
}

fn print_row(r: &Row, chosen: Backend) {
    let bytes = r.results.first().map_or(0, |m| m.weight_bytes);
    // f64 display of a byte count: exact far beyond any matrix here
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / f64::from(1u32 << 20);
    let mut line = format!(
        "{:<6} {:>12} {:>8} {:>8.1}",
        r.ty.name(),
        format!("{}x{}", r.rows, r.cols),
        r.path,
        mib
    );
    for m in &r.results {
        let mark = if m.backend == chosen { "*" } else { " " };
        line.push_str(&format!(" {:>11.2}{mark}", m.gbps()));
    }
    println!("{line}");
}
