//! `llmstream calibrate`: measure the rates the GPU engine's hybrid split is planned from
//! (the CPU's matrix-vector rate per weight type, what of it is left while the link copies, the
//! link's rate, a storage rate) and cache them per machine; `--show` prints the cache.

use anyhow::{bail, Context as _, Result};
use llmstream::gguf::GgmlType;
use llmstream::{BackendChoice, BackendKind, BufferKind, Config, Context};
use llmstream_infer::calibration::{
    self, choose_threads, sweep_candidates, Calibration, MachineId, ThreadRate, CALIBRATION_VERSION,
};
use llmstream_infer::quant::{self, bench, Backend, MatOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::bench_cpu::{parse_shape, parse_type};
use crate::common::parse_size;

#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// Threads of the quant pool. Default: try all cores, one and two fewer, three quarters
    /// and half, and keep the fewest within 2% of the best `Q4_K` rate; `run` and `chat`
    /// without `-t` then use that count on this CPU. A calibration holds for its thread count
    /// only.
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Weight types, comma-separated (e.g. q4_k,q6_k; default: every supported type).
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// A file (or block device) to measure the library's O_DIRECT reader on: put it on the
    /// drive the models live on.
    #[arg(long)]
    pub storage: Option<PathBuf>,
    /// Bytes of --storage to read (from its start).
    #[arg(long, value_parser = parse_size, default_value = "2G")]
    pub storage_bytes: usize,
    /// auto, cuda or host (auto: cuda when a GPU is usable).
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// The calibration file (default: $LLMSTREAM_CALIBRATION, else
    /// $XDG_CACHE_HOME/llmstream/calibration.toml, else ~/.cache/llmstream/calibration.toml).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Milliseconds per CPU measurement.
    #[arg(long, default_value_t = 400)]
    pub ms: u64,
    /// Matrix measured per type, ROWSxCOLS (default: a 70B model's feed-forward matrix).
    #[arg(long, default_value = "28672x8192")]
    pub shape: String,
    /// Weights cycled through per CPU measurement, far larger than the last-level cache so
    /// that they stream from memory as in decode (server CPUs have 300 MiB of L3: 512 MiB
    /// measured 95 GB/s where decode layers ran at 62-67).
    #[arg(long, value_parser = parse_size, default_value = "2G")]
    pub footprint: usize,
    /// Print the cached calibration and whether it holds for this machine; measure nothing.
    #[arg(long)]
    pub show: bool,
}

/// Bytes of pinned memory one queued link copy moves, and copies kept queued.
const COPY_PIECE: usize = 64 << 20;
const COPIES_QUEUED: usize = 4;

pub fn run(a: &CalibrateArgs) -> Result<()> {
    if a.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let path = match &a.out {
        Some(p) => Some(p.clone()),
        None => Calibration::default_path(),
    };
    let ctx = context(&a.backend)?;
    let machine = MachineId::detect(calibration::gpu_name(&ctx));
    if a.show {
        return show(path.as_deref(), &machine, a.threads, a.json);
    }
    measure(a, &ctx, machine, path.as_deref())
}

fn context(backend: &str) -> Result<Context> {
    let choice = backend
        .parse::<BackendChoice>()
        .with_context(|| format!("--backend {backend}"))?;
    let mut cfg = Config::from_env()?;
    cfg.backend = choice;
    Context::new(cfg).with_context(|| format!("starting the {backend} backend"))
}

fn no_path() -> anyhow::Error {
    anyhow::anyhow!(
        "no calibration file: {} is empty or `none`, or neither XDG_CACHE_HOME nor HOME is set; pass --out",
        calibration::PATH_ENV
    )
}

/// Why a loaded calibration does not hold here, or `None` when it does.
fn mismatch(c: &Calibration, machine: &MachineId, threads: usize) -> Option<String> {
    if c.matches(machine, threads) {
        return None;
    }
    let mut why = Vec::new();
    if c.machine.cpu_model != machine.cpu_model {
        why.push(format!(
            "CPU {:?} here, {:?} there",
            machine.cpu_model, c.machine.cpu_model
        ));
    }
    if c.machine.logical_cpus != machine.logical_cpus {
        why.push(format!(
            "{} logical CPUs here, {} there",
            machine.logical_cpus, c.machine.logical_cpus
        ));
    }
    if c.machine.gpu != machine.gpu {
        why.push(format!(
            "GPU {} here, {} there",
            gpu_text(machine.gpu.as_deref()),
            gpu_text(c.machine.gpu.as_deref())
        ));
    }
    if c.threads != threads {
        why.push(format!("{threads} threads here, {} there", c.threads));
    }
    Some(why.join("; "))
}

/// One line of the human output: a label column, then the value.
fn row(label: &str, value: impl std::fmt::Display) {
    println!("{label:<13}{value}");
}

fn machine_text(m: &MachineId) -> String {
    format!(
        "{}, {} logical CPUs, GPU {}",
        m.cpu_model,
        m.logical_cpus,
        gpu_text(m.gpu.as_deref())
    )
}

fn gpu_text(g: Option<&str>) -> String {
    g.map_or_else(|| "none".to_owned(), |g| format!("{g:?}"))
}

fn gbps(bps: f64) -> f64 {
    bps / 1e9
}

/// Prints the cache at `path` and whether it holds here with `threads` (default: what `run`
/// would use without `-t`: the cache's chosen count for this CPU, else every logical CPU).
fn show(
    path: Option<&Path>,
    machine: &MachineId,
    threads: Option<usize>,
    json: bool,
) -> Result<()> {
    let path = path.ok_or_else(no_path)?;
    let cal = Calibration::load(path)?;
    let threads = threads
        .or_else(|| cal.as_ref().and_then(|c| c.chosen_threads(machine)))
        .unwrap_or(machine.logical_cpus);
    let why = cal.as_ref().and_then(|c| mismatch(c, machine, threads));
    if json {
        let o = serde_json::json!({
            "path": path.display().to_string(),
            "calibration": cal,
            "matches": cal.is_some() && why.is_none(),
            "mismatch": why,
            "machine": machine,
            "threads": threads,
        });
        println!("{o}");
        return Ok(());
    }
    let Some(c) = cal else {
        println!(
            "no calibration at {}: run `llmstream calibrate`",
            path.display()
        );
        return Ok(());
    };
    row("calibration", path.display());
    print_calibration(&c);
    match why {
        None => row(
            "holds here",
            format!("yes (this machine, {threads} threads)"),
        ),
        Some(w) => row("holds here", format!("no: {w}")),
    }
    Ok(())
}

fn print_calibration(c: &Calibration) {
    let taken = SystemTime::UNIX_EPOCH + Duration::from_secs(c.taken_unix);
    let age = SystemTime::now().duration_since(taken).map_or_else(
        |_| "in the future".to_owned(),
        |d| format!("{:.1} days ago", d.as_secs_f64() / 86_400.0),
    );
    row("taken", format!("{} (unix), {age}", c.taken_unix));
    row("machine", machine_text(&c.machine));
    row("threads", threads_text(c.threads, &c.thread_sweep));
    for (ty, bps) in &c.cpu_bps {
        row(&format!("cpu {ty}"), format!("{:9.2} GB/s", gbps(*bps)));
    }
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.2} GB/s", gbps(v)));
    row(
        "under copies",
        c.cpu_under_copies.map_or_else(
            || "-".to_owned(),
            |r| format!("{r:.3} of the CPU rate alone"),
        ),
    );
    row("h2d", opt(c.h2d_bps));
    row(
        "storage",
        format!(
            "{}{}",
            opt(c.storage_bps),
            c.storage_path
                .as_deref()
                .map_or_else(String::new, |p| format!(" ({p})"))
        ),
    );
}

/// `threads`, with the sweep it was chosen from when there was one.
fn threads_text(threads: usize, sweep: &[ThreadRate]) -> String {
    if sweep.is_empty() {
        return format!("{threads} (given)");
    }
    let tried: Vec<String> = sweep
        .iter()
        .map(|r| format!("{} {:.1}", r.threads, gbps(r.q4_k_bps)))
        .collect();
    format!(
        "{threads}, chosen from Q4_K GB/s by threads: {}",
        tried.join(", ")
    )
}

/// Measurements not taken, and why.
type Skipped = BTreeMap<&'static str, String>;

fn reason<'a>(skipped: &'a Skipped, what: &str) -> &'a str {
    skipped.get(what).map_or("", String::as_str)
}

/// The weight types of `--types` (every supported one when empty), each once.
fn weight_types(list: &[String]) -> Result<Vec<GgmlType>> {
    if list.is_empty() {
        return Ok(bench::WEIGHT_TYPES.to_vec());
    }
    let mut types = Vec::new();
    for s in list {
        let t = parse_type(s)?;
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Ok(types)
}

/// How one CPU rate is measured.
struct CpuBench {
    rows: usize,
    cols: usize,
    footprint: usize,
    budget: Duration,
}

impl CpuBench {
    /// Bytes of weights per second over all the calls (the mean: the fastest call overstates
    /// what decode sees), on the current quant pool.
    fn rate(&self, ty: GgmlType) -> Result<f64> {
        let m = bench::bench_matvec_footprint(
            ty,
            MatOptions::default(),
            self.rows,
            self.cols,
            self.footprint,
            self.budget,
        )
        .with_context(|| format!("CPU matvec of {} {}x{}", ty.name(), self.rows, self.cols))?;
        let bps = m.mean_gbps() * 1e9;
        if !(bps.is_finite() && bps > 0.0) {
            bail!("CPU matvec of {}: no rate measured", ty.name());
        }
        Ok(bps)
    }

    /// The `Q4_K` rate (mean over the calls, as [`Self::rate`]) with each pool size of
    /// `counts`, over one set of matrices; leaves the pool at the last count.
    fn thread_sweep(&self, counts: &[usize]) -> Result<Vec<ThreadRate>> {
        let ty = GgmlType::Q4_K;
        let mut fp = bench::Footprint::new(ty, self.rows, self.cols, self.footprint)
            .with_context(|| format!("{} {}x{} matrices", ty.name(), self.rows, self.cols))?;
        let mut sweep = Vec::with_capacity(counts.len());
        for &threads in counts {
            quant::set_threads(threads).context("quant thread pool")?;
            let m = fp
                .measure(MatOptions::default(), self.budget)
                .with_context(|| format!("CPU matvec of Q4_K with {threads} threads"))?;
            let q4_k_bps = m.mean_gbps() * 1e9;
            if q4_k_bps.is_finite() && q4_k_bps > 0.0 {
                sweep.push(ThreadRate { threads, q4_k_bps });
            }
        }
        Ok(sweep)
    }
}

/// The `Q4_K` rate while the link copies, over `alone`, and the link's rate meanwhile; `Err`
/// with the reason when the copies could not run or the ratio is not plausible.
fn under_copies(ctx: &Context, cpu: &CpuBench, alone: f64) -> Result<Result<(f64, f64), String>> {
    let (under, link) = match while_copying(ctx, || cpu.rate(GgmlType::Q4_K)) {
        Ok((under, link)) => (under?, link),
        Err(e) => return Ok(Err(format!("copies refused: {}", crate::common::chain(&e)))),
    };
    let ratio = under / alone;
    if ratio.is_finite() && ratio > 0.0 && ratio <= calibration::MAX_UNDER_COPIES {
        Ok(Ok((ratio, link)))
    } else {
        Ok(Err(format!(
            "implausible ratio {ratio:.3} ({:.2} GB/s under copies, {:.2} alone): the machine \
             was busy, run again",
            gbps(under),
            gbps(alone)
        )))
    }
}

fn measure(
    a: &CalibrateArgs,
    ctx: &Context,
    machine: MachineId,
    path: Option<&Path>,
) -> Result<()> {
    let types = weight_types(&a.types)?;
    let (rows, cols) = parse_shape(&a.shape)?;
    let cpu = CpuBench {
        rows,
        cols,
        footprint: a.footprint,
        budget: Duration::from_millis(a.ms.max(1)),
    };
    let (threads, thread_sweep) = match a.threads {
        Some(t) => (t, Vec::new()),
        None => {
            let sweep = cpu.thread_sweep(&sweep_candidates(machine.logical_cpus))?;
            let t = choose_threads(&sweep)
                .ok_or_else(|| anyhow::anyhow!("no thread count gave a Q4_K rate"))?;
            (t, sweep)
        }
    };
    quant::set_threads(threads).context("quant thread pool")?;
    let kernels = Backend::detect();
    let gpu = ctx.backend() == BackendKind::Cuda;
    let no_gpu = if a.backend == "auto" {
        "no GPU (auto found no usable CUDA device)"
    } else {
        "no GPU (host backend)"
    };
    let human = !a.json;
    if human {
        row("machine", machine_text(&machine));
        row("threads", threads_text(threads, &thread_sweep));
        let what = format!(
            "{threads} threads, {} kernels, {rows}x{cols} matrices, {} MiB cycled, {} ms per type",
            kernels.name(),
            a.footprint >> 20,
            cpu.budget.as_millis()
        );
        row("cpu", what);
    }
    let mut cpu_bps = BTreeMap::new();
    // the sweep already measured Q4_K with the chosen count, on the same footprint
    let swept_q4_k = thread_sweep
        .iter()
        .find(|r| r.threads == threads)
        .map(|r| r.q4_k_bps);
    for &ty in &types {
        let bps = match swept_q4_k {
            Some(r) if ty == GgmlType::Q4_K => r,
            _ => cpu.rate(ty)?,
        };
        if human {
            row(
                &format!("cpu {}", ty.name()),
                format!("{:9.2} GB/s", gbps(bps)),
            );
        }
        cpu_bps.insert(ty.name().to_owned(), bps);
    }
    let mut skipped = Skipped::new();

    let (cpu_under_copies, link_during_cpu) = if gpu {
        let alone = match cpu_bps.get(GgmlType::Q4_K.name()) {
            Some(&r) => r,
            None => cpu.rate(GgmlType::Q4_K)?,
        };
        match under_copies(ctx, &cpu, alone)? {
            Ok((ratio, link)) => (Some(ratio), Some(link)),
            Err(why) => {
                skipped.insert("cpu_under_copies", why);
                (None, None)
            }
        }
    } else {
        skipped.insert("cpu_under_copies", no_gpu.to_owned());
        (None, None)
    };
    if human {
        match (cpu_under_copies, link_during_cpu) {
            (Some(r), Some(link)) => row(
                "under copies",
                format!(
                    "{r:.3} of the Q4_K rate alone (link meanwhile {:.2} GB/s)",
                    gbps(link)
                ),
            ),
            _ => row(
                "under copies",
                format!("skipped: {}", reason(&skipped, "cpu_under_copies")),
            ),
        }
    }

    let h2d_bps = if gpu {
        let r = ctx
            .raw_h2d_peak(256 << 20, 8)
            .context("pinned host → device copies")?
            .filter(|r| r.is_finite() && *r > 0.0);
        if r.is_none() {
            skipped.insert("h2d", "the backend measured no rate".to_owned());
        }
        r
    } else {
        skipped.insert("h2d", no_gpu.to_owned());
        None
    };
    if human {
        match h2d_bps {
            Some(r) => row(
                "h2d",
                format!("{:9.2} GB/s (pinned, 256 MiB copies)", gbps(r)),
            ),
            None => row("h2d", format!("skipped: {}", reason(&skipped, "h2d"))),
        }
    }

    let storage = match &a.storage {
        Some(file) => Some(storage_rate(ctx, file, a.storage_bytes)?),
        None => {
            skipped.insert("storage", "no --storage FILE given".to_owned());
            None
        }
    };
    if human {
        match &storage {
            Some(s) => {
                let how = if s.direct {
                    "O_DIRECT"
                } else {
                    "buffered: O_DIRECT refused"
                };
                let what = format!(
                    "{:9.2} GB/s ({} MiB of {}, {how})",
                    gbps(s.bps),
                    s.bytes >> 20,
                    s.path
                );
                row("storage", what);
                if !s.direct {
                    println!(
                        "warning: buffered reads may have come from the page cache, far faster \
                         than the drive"
                    );
                }
            }
            None => row(
                "storage",
                format!("skipped: {}", reason(&skipped, "storage")),
            ),
        }
    }

    let taken_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cal = Calibration {
        version: CALIBRATION_VERSION,
        machine,
        threads,
        taken_unix,
        cpu_bps,
        cpu_under_copies,
        h2d_bps,
        storage_bps: storage.as_ref().map(|s| s.bps),
        storage_path: storage.as_ref().map(|s| s.path.clone()),
        thread_sweep,
    };
    if let Some(p) = path {
        cal.save(p)?;
    }
    if a.json {
        let o = serde_json::json!({
            "path": path.map(|p| p.display().to_string()),
            "saved": path.is_some(),
            "calibration": cal,
            "shape": [rows, cols],
            "footprint_bytes": a.footprint,
            "kernels": kernels.name(),
            "backend": ctx.backend().name(),
            "link_during_cpu_bps": link_during_cpu,
            "storage_direct": storage.as_ref().map(|s| s.direct),
            "storage_bytes": storage.as_ref().map(|s| s.bytes),
            "skipped": skipped,
        });
        println!("{o}");
    } else {
        match path {
            Some(p) => row("saved", p.display()),
            None => row("not saved", no_path()),
        }
    }
    Ok(())
}

struct StorageRate {
    bps: f64,
    bytes: u64,
    path: String,
    direct: bool,
}

/// The library's reader (O_DIRECT where the file system allows) over the first `bytes` of
/// `file`, into its staging buffers only, after asking the kernel to drop the file's pages.
fn storage_rate(ctx: &Context, file: &Path, bytes: usize) -> Result<StorageRate> {
    let src = ctx
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    let bytes = u64::try_from(bytes)?.min(src.len());
    if bytes == 0 {
        bail!("{} is empty (or --storage-bytes is 0)", file.display());
    }
    src.drop_cache();
    let t = Instant::now();
    ctx.read_discard_async(&src, 0, bytes)?
        .wait()
        .with_context(|| format!("reading {}", file.display()))?;
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    // u64 -> f64: byte counts far below 2^53
    #[allow(clippy::cast_precision_loss)]
    let bps = bytes as f64 / secs;
    let path = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
    Ok(StorageRate {
        bps,
        bytes,
        path: path.display().to_string(),
        direct: src.is_direct(),
    })
}

/// Sets a flag when dropped, so the copy thread stops however `f` ends.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `f` while the link copies page-locked host memory to the device without pause (a few
/// 64 MiB copies always queued through the library's copy path), as during a hybrid token;
/// returns what `f` returned and the link's rate meanwhile (bytes per second).
fn while_copying<R>(ctx: &Context, f: impl FnOnce() -> R) -> Result<(R, f64)> {
    let len = COPY_PIECE * COPIES_QUEUED;
    let host = ctx
        .alloc(BufferKind::Pinned, len)
        .context("page-locked host buffer")?;
    let dev = ctx
        .alloc(BufferKind::Device, len)
        .context("device buffer")?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let copier = s.spawn(|| -> Result<f64> {
            let t = Instant::now();
            let mut queued = std::collections::VecDeque::<llmstream::ReadHandle>::new();
            let mut copied = 0u64;
            let mut i = 0usize;
            while !stop.load(Ordering::Acquire) {
                if queued.len() == COPIES_QUEUED {
                    if let Some(h) = queued.pop_front() {
                        h.wait()?;
                        copied += COPY_PIECE as u64;
                    }
                }
                let off = (i % COPIES_QUEUED) * COPY_PIECE;
                queued.push_back(ctx.copy_async(&host, off, &dev, off, COPY_PIECE)?);
                i += 1;
            }
            for h in queued {
                h.wait()?;
                copied += COPY_PIECE as u64;
            }
            // u64 -> f64: byte counts far below 2^53
            #[allow(clippy::cast_precision_loss)]
            Ok(copied as f64 / t.elapsed().as_secs_f64().max(1e-9))
        });
        let r = {
            let _stop = StopOnDrop(&stop);
            f()
        };
        let link = copier
            .join()
            .map_err(|_| anyhow::anyhow!("the copy thread panicked"))??;
        Ok((r, link))
    })
}
