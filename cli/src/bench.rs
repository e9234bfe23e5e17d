//! `llmstream bench FILE`: every path measured in one run on a cold page cache, so the ratios
//! between them hold even on a shared, noisy machine. With `--path`, the direct paths into VRAM
//! instead (pinned bounce, cuFile, dma-buf), checked by checksum: see [`direct`].

mod direct;

use crate::common::parse_size;
use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use llmstream::{
    BackendChoice, BackendKind, BufferKind, Config, Context, DirectChoice, EngineChoice,
    ReaderConfig, Source,
};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// File (or block device) to read.
    pub file: PathBuf,
    /// auto, cuda or host.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Reader engine: auto, uring or threads.
    #[arg(long, default_value = "auto")]
    pub engine: String,
    /// O_DIRECT: auto, on or off.
    #[arg(long, default_value = "auto")]
    pub direct: String,
    /// Reads in flight.
    #[arg(long)]
    pub queue_depth: Option<u32>,
    /// Bytes per read request (e.g. 1M).
    #[arg(long, value_parser = parse_size)]
    pub request_size: Option<usize>,
    /// Bytes per staging slot (e.g. 8M).
    #[arg(long, value_parser = parse_size)]
    pub staging_size: Option<usize>,
    /// Number of staging slots.
    #[arg(long)]
    pub staging_buffers: Option<usize>,
    /// Bytes of the file to use (default: all of it).
    #[arg(long, value_parser = parse_size)]
    pub bytes: Option<usize>,
    /// Bytes per streamed request in the device test (like a layer; default 256M).
    #[arg(long, value_parser = parse_size, default_value = "256M")]
    pub chunk: usize,
    /// Skip dropping the page cache before each measurement.
    #[arg(long)]
    pub warm: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Compare streaming a GGUF model through llmstreamd (LLMSTREAM_SOCKET) with in-process,
    /// for each count of concurrent clients in --clients.
    #[arg(long)]
    pub daemon: bool,
    /// Concurrent clients for --daemon (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub clients: Vec<usize>,
    /// Times each client streams every layer, for --daemon.
    #[arg(long, default_value_t = 3)]
    pub passes: u32,
    /// Read the file into VRAM by these paths, verify each by CRC-32 and compare them
    /// (bounce, cufile, both, dmabuf, all) instead of the storage benchmark.
    #[arg(long, value_enum)]
    pub path: Option<direct::PathSel>,
    /// cuFile reader threads (with --path).
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// cuFile configuration (with --path): auto (a generated one allowing compatibility mode,
    /// unless CUFILE_ENV_PATH_JSON is set), system, or a JSON file.
    #[arg(long, default_value = "auto")]
    pub cufile_config: String,
}

struct Ctxs {
    ctx: Context,
    src: Arc<Source>,
    bytes: u64,
}

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1e9
}

fn drop_cache(src: &Source, warm: bool) {
    if warm {
        return;
    }
    src.drop_cache();
    // As root, also drop the whole page cache so no other copy of the file hides in it.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let mut reader = ReaderConfig {
        engine: a.engine.parse::<EngineChoice>()?,
        direct: a.direct.parse::<DirectChoice>()?,
        ..ReaderConfig::default()
    };
    if let Some(q) = a.queue_depth {
        reader.queue_depth = q;
    }
    if let Some(r) = a.request_size {
        reader.request_size = r;
    }
    if let Some(s) = a.staging_size {
        reader.staging_buffer_size = s;
    }
    if let Some(n) = a.staging_buffers {
        reader.staging_buffers = n;
    }
    let cfg = Config {
        backend: a.backend.parse::<BackendChoice>()?,
        device: 0,
        reader: reader.with_env()?,
    };
    if a.daemon {
        return crate::bench_daemon::run(&cfg, &a.file, &a.clients, a.passes, a.json);
    }
    let cufile_config = match a.path {
        Some(p) if p.uses_cufile() => direct::cufile_config(&a.cufile_config)?,
        _ => String::new(),
    };
    let ctx = Context::new(cfg.clone()).context("starting the streaming context")?;
    if let Some(paths) = a.path {
        let d = direct::DirectArgs {
            file: a.file.clone(),
            paths,
            bytes: a.bytes,
            chunk: a.chunk,
            threads: a.threads,
            cufile_config,
            warm: a.warm,
            json: a.json,
        };
        return direct::run(&ctx, &d);
    }
    let src = ctx
        .open(&a.file)
        .with_context(|| format!("opening {}", a.file.display()))?;
    let bytes = a.bytes.map_or(src.len(), |b| (b as u64).min(src.len()));
    anyhow::ensure!(bytes > 0, "{} is empty", a.file.display());
    let c = Ctxs { ctx, src, bytes };
    let tty = std::io::stderr().is_terminal() && !a.json;
    let steps = if c.ctx.backend() == BackendKind::Cuda {
        6
    } else {
        4
    };
    let pb = if tty {
        let pb = ProgressBar::new(steps);
        pb.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    } else {
        ProgressBar::hidden()
    };

    pb.set_message("llmstream → staging");
    drop_cache(&c.src, a.warm);
    let t = Instant::now();
    c.ctx.read_discard_async(&c.src, 0, c.bytes)?.wait()?;
    let to_staging = gbps(c.bytes, t.elapsed().as_secs_f64());
    pb.inc(1);

    pb.set_message("llmstream → device");
    drop_cache(&c.src, a.warm);
    let to_device = stream_to_device(&c, a.chunk)?;
    pb.inc(1);

    pb.set_message("buffered read()");
    drop_cache(&c.src, a.warm);
    let buffered = buffered_read(&a.file, c.bytes)?;
    pb.inc(1);

    pb.set_message("mmap + memcpy");
    drop_cache(&c.src, a.warm);
    let mmap = mmap_memcpy(&a.file, c.bytes)?;
    pb.inc(1);

    let (mut peak, mut pinned) = (None, None);
    if c.ctx.backend() == BackendKind::Cuda {
        pb.set_message("pinned H2D peak (driver)");
        peak = c.ctx.raw_h2d_peak(1 << 30, 8)?.map(|b| b / 1e9);
        pb.inc(1);
        pb.set_message("pinned RAM tier → device (llmstream)");
        pinned = Some(pinned_to_device(&c.ctx, 1 << 30, 8)?);
        pb.inc(1);
    }
    pb.finish_and_clear();

    let stats = c.ctx.stats();
    let io_path = format!(
        "{}+{}",
        stats.engine,
        if c.src.is_direct() {
            "direct"
        } else {
            "buffered"
        }
    );
    let rc = &c.ctx.config().reader;
    if a.json {
        let mut o = serde_json::json!({
            "file": a.file.display().to_string(),
            "bytes": c.bytes,
            "backend": c.ctx.backend().name(),
            "device": c.ctx.backend_description(),
            "io_path": io_path,
            "engine": stats.engine,
            "direct": c.src.is_direct(),
            "queue_depth": rc.queue_depth,
            "request_size": rc.request_size,
            "staging_buffers": rc.staging_buffers,
            "staging_buffer_size": rc.staging_buffer_size,
            "cold_cache": !a.warm,
            "odirect_to_staging_gbps": to_staging,
            "to_device_gbps": to_device,
            "buffered_read_gbps": buffered,
            "mmap_memcpy_gbps": mmap,
            "fallbacks": stats.fallbacks,
        });
        if let (Some(p), Some(q)) = (peak, pinned) {
            o["pinned_h2d_peak_gbps"] = p.into();
            o["pinned_to_device_gbps"] = q.into();
        }
        println!("{o}");
    } else {
        println!(
            "file        {} ({:.2} GB)",
            a.file.display(),
            c.bytes as f64 / 1e9
        );
        println!("backend     {}", c.ctx.backend_description());
        println!(
            "reader      {io_path}, queue depth {}, requests {} KiB, {} staging slots of {} MiB",
            rc.queue_depth,
            rc.request_size >> 10,
            rc.staging_buffers,
            rc.staging_buffer_size >> 20
        );
        println!(
            "cache       {}",
            if a.warm {
                "warm"
            } else {
                "cold (dropped before each test)"
            }
        );
        println!();
        println!("llmstream → staging        {to_staging:8.3} GB/s");
        println!(
            "llmstream → device (e2e)   {to_device:8.3} GB/s  ({:.2}x staging)",
            to_device / to_staging
        );
        println!(
            "buffered read() 1 MiB      {buffered:8.3} GB/s  (llmstream {:.2}x)",
            to_staging / buffered
        );
        println!(
            "mmap + memcpy              {mmap:8.3} GB/s  (llmstream {:.2}x)",
            to_staging / mmap
        );
        if let (Some(p), Some(q)) = (peak, pinned) {
            println!("pinned H2D peak (driver)   {p:8.3} GB/s");
            println!(
                "pinned RAM → device        {q:8.3} GB/s  ({:.2}x peak)",
                q / p
            );
        }
        for f in &stats.fallbacks {
            println!("fallback: {f}");
        }
    }
    Ok(())
}

/// Stream the file into device memory in `chunk`-sized requests, two buffers in rotation so the
/// read of one overlaps the consumer's use of the other (as a layer pipeline does).
fn stream_to_device(c: &Ctxs, chunk: usize) -> Result<f64> {
    let chunk = (chunk as u64).min(c.bytes).max(1);
    let n = usize::try_from(chunk)?;
    let bufs = [
        c.ctx.alloc(BufferKind::Device, n)?,
        c.ctx.alloc(BufferKind::Device, n)?,
    ];
    let mut pending: [Option<llmstream::ReadHandle>; 2] = [None, None];
    let t = Instant::now();
    let mut off = 0u64;
    let mut i = 0usize;
    while off < c.bytes {
        let len = chunk.min(c.bytes - off);
        if let Some(h) = pending[i % 2].take() {
            h.wait()?;
        }
        pending[i % 2] = Some(c.ctx.read_async(&c.src, off, len, &bufs[i % 2], 0)?);
        off += len;
        i += 1;
    }
    for h in pending.iter_mut().filter_map(Option::take) {
        h.wait()?;
    }
    Ok(gbps(c.bytes, t.elapsed().as_secs_f64()))
}

fn buffered_read(path: &std::path::Path, bytes: u64) -> Result<f64> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    let t = Instant::now();
    while left > 0 {
        let want = usize::try_from(left.min(1 << 20))?;
        let n = f.read(&mut buf[..want])?;
        anyhow::ensure!(n > 0, "unexpected end of file");
        left -= n as u64;
    }
    Ok(gbps(bytes, t.elapsed().as_secs_f64()))
}

fn mmap_memcpy(path: &std::path::Path, bytes: u64) -> Result<f64> {
    let f = std::fs::File::open(path)?;
    // SAFETY: a read-only private mapping of a file this process only reads; the benchmark does
    // not rely on the contents staying unchanged.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .len(usize::try_from(bytes)?)
            .map(&f)?
    };
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    for c in map.chunks(1 << 20) {
        buf[..c.len()].copy_from_slice(c);
    }
    std::hint::black_box(&buf);
    Ok(gbps(bytes, t.elapsed().as_secs_f64()))
}

/// The RAM tier → VRAM path through the library: a resident pinned buffer copied to device
/// memory by the streaming worker in 64 MiB requests.
fn pinned_to_device(ctx: &Context, bytes: usize, iters: u32) -> Result<f64> {
    let src = ctx.alloc(BufferKind::Pinned, bytes)?;
    let dst = ctx.alloc(BufferKind::Device, bytes)?;
    let piece = 64 << 20;
    let once = || -> Result<()> {
        let mut hs = Vec::new();
        let mut off = 0;
        while off < bytes {
            let len = piece.min(bytes - off);
            hs.push(ctx.copy_async(&src, off, &dst, off, len)?);
            off += len;
        }
        for h in hs {
            h.wait()?;
        }
        Ok(())
    };
    once()?;
    let t = Instant::now();
    for _ in 0..iters {
        once()?;
    }
    Ok(gbps(
        bytes as u64 * u64::from(iters),
        t.elapsed().as_secs_f64(),
    ))
}
