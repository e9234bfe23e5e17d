//! `llmstream bench FILE --path bounce|cufile|both|dmabuf|all`: the file read into VRAM by each
//! path in one run, each result checked against a CRC-32 of a buffered read of the file (the
//! VRAM copied back to the host), with GB/s per path and the cuFile/bounce ratio.

use super::{drop_cache, gbps};
use anyhow::{bail, Context as _, Result};
use llmstream::backend::direct::{
    nvidia_fs_loaded, probe_dma_buf, CuFileSession, DeviceLoader, DmaBufReport, LoadPreference,
};
use llmstream::{BackendKind, Buffer, BufferKind, Context};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Which paths to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PathSel {
    /// O_DIRECT into pinned staging, then H2D (the streaming worker).
    Bounce,
    /// cuFile straight into VRAM (GDS, or its compatibility mode without nvidia-fs).
    Cufile,
    /// bounce and cufile, with their ratio.
    Both,
    /// Export VRAM as a dma-buf and probe io_uring registration and READ_FIXED.
    Dmabuf,
    /// bounce, cufile and dmabuf.
    All,
}

impl PathSel {
    /// Whether cuFile will be used (its configuration must be set before any thread starts).
    pub fn uses_cufile(self) -> bool {
        self.cufile()
    }
    fn bounce(self) -> bool {
        matches!(self, Self::Bounce | Self::Both | Self::All)
    }
    fn cufile(self) -> bool {
        matches!(self, Self::Cufile | Self::Both | Self::All)
    }
    fn dmabuf(self) -> bool {
        matches!(self, Self::Dmabuf | Self::All)
    }
}

/// Options of the direct-path bench.
#[derive(Debug, Clone)]
pub struct DirectArgs {
    pub file: PathBuf,
    pub paths: PathSel,
    pub bytes: Option<usize>,
    pub chunk: usize,
    pub threads: usize,
    /// What [`cufile_config`] set up (it runs before the context exists).
    pub cufile_config: String,
    pub warm: bool,
    pub json: bool,
}

/// Validate the options before any GPU work.
pub fn validate(a: &DirectArgs) -> Result<()> {
    if a.chunk == 0 || a.chunk % 4096 != 0 {
        bail!(
            "--chunk must be a non-zero multiple of 4096 bytes (got {})",
            a.chunk
        );
    }
    if a.threads == 0 || a.threads > 64 {
        bail!("--threads must be 1..=64 (got {})", a.threads);
    }
    if a.bytes == Some(0) {
        bail!("--bytes must be > 0");
    }
    Ok(())
}

/// A cuFile configuration that allows compatibility mode and logs to the temp directory, used
/// unless the caller set CUFILE_ENV_PATH_JSON or asked for the system one. Sets the environment,
/// so it must run before the streaming context (and CUDA) start threads.
pub fn cufile_config(sel: &str) -> Result<String> {
    if let Some(v) = std::env::var_os("CUFILE_ENV_PATH_JSON") {
        return Ok(format!("CUFILE_ENV_PATH_JSON={}", v.to_string_lossy()));
    }
    match sel {
        "system" => Ok("system (/etc/cufile.json or built-in defaults)".into()),
        "auto" => {
            let dir = std::env::temp_dir();
            let path = dir.join(format!("llmstream-cufile-{}.json", std::process::id()));
            let cfg = json!({
                "logging": { "dir": dir.display().to_string(), "level": "ERROR" },
                "properties": { "allow_compat_mode": true }
            });
            std::fs::write(&path, cfg.to_string())
                .with_context(|| format!("writing {}", path.display()))?;
            // Set before libcufile is loaded and before any other thread exists.
            std::env::set_var("CUFILE_ENV_PATH_JSON", &path);
            Ok(format!(
                "generated {} (allow_compat_mode true)",
                path.display()
            ))
        }
        p => {
            anyhow::ensure!(Path::new(p).is_file(), "--cufile-config {p}: no such file");
            std::env::set_var("CUFILE_ENV_PATH_JSON", p);
            Ok(format!("CUFILE_ENV_PATH_JSON={p}"))
        }
    }
}

/// CRC-32 of the first `bytes` of the file through plain buffered reads (the reference).
fn reference_crc(path: &Path, bytes: usize) -> Result<u32> {
    let mut f = std::fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 8 << 20];
    let mut left = bytes;
    while left > 0 {
        let want = left.min(buf.len());
        let n = f.read(&mut buf[..want])?;
        anyhow::ensure!(n > 0, "{} ended early", path.display());
        h.update(&buf[..n]);
        left -= n;
    }
    Ok(h.finalize())
}

/// CRC-32 of the device buffer, copied back in 64 MiB pieces.
fn device_crc(buf: &Buffer, bytes: usize) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut host = vec![0u8; (64 << 20).min(bytes)];
    let mut off = 0;
    while off < bytes {
        let n = host.len().min(bytes - off);
        buf.copy_to_host(off, &mut host[..n])?;
        h.update(&host[..n]);
        off += n;
    }
    Ok(h.finalize())
}

/// Overwrite the device buffer with 0xA5 so a path that writes nothing cannot pass the check.
fn poison(ctx: &Context, buf: &Buffer, bytes: usize) -> Result<()> {
    let piece = (64usize << 20).min(bytes);
    let src = ctx.alloc(BufferKind::Pinned, piece)?;
    let p = src
        .host_ptr()
        .context("host buffer without a host address")?;
    // SAFETY: `src` is a fresh host (pinned) buffer of `piece` bytes that nothing else
    // references yet.
    unsafe { std::ptr::write_bytes(p, 0xA5, piece) };
    let mut off = 0;
    let mut hs = Vec::new();
    while off < bytes {
        let n = piece.min(bytes - off);
        hs.push(ctx.copy_async(&src, 0, buf, off, n)?);
        off += n;
    }
    for h in hs {
        h.wait()?;
    }
    Ok(())
}

struct Outcome {
    json: Value,
    gbps: Option<f64>,
}

fn check(buf: &Buffer, bytes: usize, want: u32) -> Result<(u32, bool)> {
    let got = device_crc(buf, bytes)?;
    Ok((got, got == want))
}

fn run_bounce(
    ctx: &Context,
    a: &DirectArgs,
    buf: &Buffer,
    bytes: usize,
    want: u32,
) -> Result<Outcome> {
    poison(ctx, buf, bytes)?;
    let loader = DeviceLoader::new(ctx, LoadPreference::PinnedBounce);
    let src = ctx.open(&a.file)?;
    drop_cache(&src, a.warm);
    let t = Instant::now();
    loader.load(&a.file, 0, bytes, buf, a.chunk)?;
    let secs = t.elapsed().as_secs_f64();
    let (got, ok) = check(buf, bytes, want)?;
    let rate = gbps(bytes as u64, secs);
    Ok(Outcome {
        json: json!({
            "ok": ok, "gbps": rate, "seconds": secs, "crc32": format!("{got:08x}"),
            "checksum_match": ok, "direct": src.is_direct(),
            "engine": ctx.stats().engine,
        }),
        gbps: ok.then_some(rate),
    })
}

fn run_cufile(
    ctx: &Context,
    a: &DirectArgs,
    buf: &Buffer,
    bytes: usize,
    want: u32,
) -> Result<Outcome> {
    let config = a.cufile_config.clone();
    let nvfs = nvidia_fs_loaded();
    let unavailable = |e: String| Outcome {
        json: json!({
            "ok": false, "error": e, "config": config,
            "nvidia_fs": nvfs, "fallback": "pinned_bounce",
        }),
        gbps: None,
    };
    let session = match CuFileSession::new(ctx) {
        Ok(s) => s,
        Err(e) => return Ok(unavailable(e.to_string())),
    };
    poison(ctx, buf, bytes)?;
    // cuFile refuses some files outright (e.g. when it cannot read the volume's attributes
    // from udev): that is cuFile being unavailable for this file, not a failed benchmark.
    let file = match session.open(&a.file) {
        Ok(f) => f,
        Err(e) => return Ok(unavailable(e.to_string())),
    };
    let registered = session.register(buf);
    let reg_json = match &registered {
        Ok(_) => json!(true),
        Err(e) => json!(format!("not registered: {e}")),
    };
    if let Ok(src) = ctx.open(&a.file) {
        drop_cache(&src, a.warm);
    }
    let chunks = bytes.div_ceil(a.chunk);
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..a.threads.min(chunks))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= chunks {
                            return Ok(());
                        }
                        let off = i * a.chunk;
                        let n = a.chunk.min(bytes - off);
                        let got = session.read(&file, off as u64, n, buf, off)?;
                        anyhow::ensure!(got == n, "short cuFile read: {got} of {n} bytes at {off}");
                    }
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("reader thread panicked")))
            })
            .collect()
    });
    let secs = t.elapsed().as_secs_f64();
    for r in results {
        r?;
    }
    drop(registered);
    let (got, ok) = check(buf, bytes, want)?;
    let rate = gbps(bytes as u64, secs);
    Ok(Outcome {
        json: json!({
            "ok": ok, "gbps": rate, "seconds": secs, "crc32": format!("{got:08x}"),
            "checksum_match": ok, "library": session.library(), "config": config,
            "nvidia_fs": nvfs,
            "mode": if nvfs { "gds" } else { "compat" },
            "o_direct": file.is_direct(), "buffered_fd_for_unaligned": file.has_buffered(),
            "buffer_registered": reg_json,
            "threads": a.threads, "chunk": a.chunk,
        }),
        gbps: ok.then_some(rate),
    })
}

fn print_dmabuf(r: &DmaBufReport) {
    let yn = |b: bool| if b { "ok  " } else { "FAIL" };
    println!("dma-buf");
    println!(
        "  device attribute DMA_BUF_SUPPORTED: {}",
        r.device_supported
            .map_or("unknown".to_string(), |b| b.to_string())
    );
    println!("  {} export      {}", yn(r.export.ok), r.export.detail);
    if let Some(u) = &r.uring {
        println!("  {} mmap        {}", yn(u.mmap.ok), u.mmap.detail);
        if let Some(s) = &u.register {
            println!("  {} register    {}", yn(s.ok), s.detail);
        }
        if let Some(s) = &u.read_fixed {
            println!("  {} read_fixed  {}", yn(s.ok), s.detail);
        }
    }
    if let Some(v) = r.verified {
        println!("  {} bytes in VRAM match the file", yn(v));
    }
    println!("  fallback: {}", r.fallback);
}

/// Run the selected paths and print the results.
pub fn run(ctx: &Context, a: &DirectArgs) -> Result<()> {
    validate(a)?;
    let needs_gpu = a.paths.cufile() || a.paths.dmabuf();
    if needs_gpu && ctx.backend() != BackendKind::Cuda {
        bail!(
            "--path {} needs a CUDA GPU; this context runs on {} (use --path bounce)",
            format!("{:?}", a.paths).to_lowercase(),
            ctx.backend_description()
        );
    }
    let len = std::fs::metadata(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?
        .len();
    let bytes = a.bytes.map_or(len, |b| (b as u64).min(len));
    anyhow::ensure!(bytes > 0, "{} is empty", a.file.display());
    let bytes = usize::try_from(bytes)?;
    let mut out = json!({
        "file": a.file.display().to_string(),
        "bytes": bytes,
        "device": ctx.backend_description(),
        "cold_cache": !a.warm,
    });
    let (mut bounce, mut cufile) = (None, None);
    if a.paths.bounce() || a.paths.cufile() {
        if let Some((free, _)) = ctx.device_memory() {
            anyhow::ensure!(
                bytes < free,
                "{bytes} bytes do not fit the {free} bytes of free VRAM; pass --bytes"
            );
        }
        let want = reference_crc(&a.file, bytes)?;
        out["reference_crc32"] = format!("{want:08x}").into();
        let buf = ctx.alloc(BufferKind::Device, bytes)?;
        if a.paths.bounce() {
            let o = run_bounce(ctx, a, &buf, bytes, want)?;
            out["bounce"] = o.json;
            bounce = o.gbps;
        }
        if a.paths.cufile() {
            let o = run_cufile(ctx, a, &buf, bytes, want)?;
            out["cufile"] = o.json;
            cufile = o.gbps;
        }
        if let (Some(b), Some(c)) = (bounce, cufile) {
            out["cufile_over_bounce"] = (c / b).into();
        }
    }
    let dma = if a.paths.dmabuf() {
        let r = probe_dma_buf(ctx, 64 << 20, Some(&a.file))?;
        out["dmabuf"] = serde_json::to_value(&r)?;
        Some(r)
    } else {
        None
    };
    if a.json {
        println!("{out}");
    } else {
        println!("file      {} ({} bytes)", a.file.display(), bytes);
        println!("device    {}", ctx.backend_description());
        if let Some(c) = out.get("reference_crc32") {
            println!(
                "reference crc32 {} (buffered read)",
                c.as_str().unwrap_or("?")
            );
        }
        for name in ["bounce", "cufile"] {
            let Some(o) = out.get(name) else { continue };
            if let Some(e) = o.get("error") {
                println!("{name:<8}  unavailable: {}", e.as_str().unwrap_or("?"));
                continue;
            }
            println!(
                "{name:<8}  {:8.3} GB/s  crc32 {} {}",
                o["gbps"].as_f64().unwrap_or(0.0),
                o["crc32"].as_str().unwrap_or("?"),
                if o["checksum_match"] == true {
                    "MATCH"
                } else {
                    "MISMATCH"
                }
            );
            if name == "cufile" {
                println!(
                    "          mode {}, library {}, O_DIRECT {}, buffer registered {}, config {}",
                    o["mode"], o["library"], o["o_direct"], o["buffer_registered"], o["config"]
                );
            }
        }
        if let Some(r) = out.get("cufile_over_bounce").and_then(Value::as_f64) {
            println!("cufile / bounce = {r:.3}");
        }
        if let Some(r) = &dma {
            print_dmabuf(r);
        }
    }
    let failed = ["bounce", "cufile"]
        .iter()
        .filter_map(|n| out.get(*n))
        .any(|o| o.get("checksum_match") == Some(&Value::Bool(false)));
    if failed {
        bail!("a path's VRAM content does not match the file (see crc32 above)");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use llmstream::{BackendChoice, Config};

    fn args(file: PathBuf) -> DirectArgs {
        DirectArgs {
            file,
            paths: PathSel::Bounce,
            bytes: None,
            chunk: 1 << 20,
            threads: 4,
            cufile_config: "auto".into(),
            warm: true,
            json: true,
        }
    }

    #[test]
    fn arguments_are_validated() {
        let mut a = args("x".into());
        assert!(validate(&a).is_ok());
        a.chunk = 1000;
        assert!(validate(&a).unwrap_err().to_string().contains("--chunk"));
        a.chunk = 4096;
        a.threads = 0;
        assert!(validate(&a).unwrap_err().to_string().contains("--threads"));
        a.threads = 1;
        a.bytes = Some(0);
        assert!(validate(&a).is_err());
    }

    #[test]
    fn bounce_on_the_host_backend_verifies_and_gpu_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data");
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i * 31 % 253).to_le_bytes()[0])
            .collect();
        std::fs::write(&p, &data).unwrap();
        let ctx = Context::new(Config {
            backend: BackendChoice::Host,
            ..Config::default()
        })
        .unwrap();
        let a = args(p.clone());
        run(&ctx, &a).unwrap();
        // The checked content is the file's: the reference and the buffer agree.
        let want = reference_crc(&p, data.len()).unwrap();
        assert_eq!(want, crc32fast::hash(&data));
        let mut g = args(p);
        g.paths = PathSel::Cufile;
        let e = run(&ctx, &g).unwrap_err().to_string();
        assert!(e.contains("needs a CUDA GPU"), "{e}");
    }
}
