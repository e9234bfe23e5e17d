//! Run-time compilation of the kernel sources with NVRTC, a PTX cache on disk, and the loaded
//! module with every kernel looked up once.
//!
//! The sources (`kernels/*.cu`) are embedded in the binary, so no CUDA toolkit is needed to
//! build; at run time the driver and `libnvrtc` are loaded dynamically. PTX is compiled for the
//! device's architecture once and cached in `$LLMSTREAM_CACHE_DIR/kernels` (default
//! `~/.cache/llmstream/kernels`), keyed by a hash of the sources, the options, the architecture
//! and the NVRTC version.

use super::{GpuError, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The kernel sources, concatenated in this order into one translation unit.
const SOURCES: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../../../kernels/common.cuh")),
    ("quant.cu", include_str!("../../../kernels/quant.cu")),
    ("ops.cu", include_str!("../../../kernels/ops.cu")),
    ("fast.cu", include_str!("../../../kernels/fast.cu")),
];

/// Every kernel the launch wrappers use.
pub(crate) fn kernel_names() -> impl Iterator<Item = &'static str> {
    super::quant::KERNELS
        .iter()
        .chain(super::ops::KERNELS.iter())
        .chain(super::fast::KERNELS.iter())
        .copied()
}

/// The whole translation unit as NVRTC sees it.
pub fn source() -> String {
    let mut s = String::new();
    for (name, text) in SOURCES {
        s.push_str("// ---- ");
        s.push_str(name);
        s.push_str(" ----\n");
        s.push_str(text);
        s.push('\n');
    }
    s
}

fn compile_options(major: i32, minor: i32) -> Vec<String> {
    vec![
        format!("--gpu-architecture=compute_{major}{minor}"),
        "--std=c++17".into(),
        "-default-device".into(),
        "--extra-device-vectorization".into(),
    ]
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("LLMSTREAM_CACHE_DIR") {
        return Some(PathBuf::from(d).join("kernels"));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("llmstream/kernels"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/llmstream/kernels"))
}

/// Whether `libnvrtc` can be loaded (cudarc panics on a missing library: kept inside here).
fn nvrtc_version() -> Result<(i32, i32)> {
    use cudarc::nvrtc::sys;
    // SAFETY: only tries to dlopen the library under its usual names.
    let present = std::panic::catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false);
    if !present {
        return Err(GpuError::Unavailable(
            "libnvrtc could not be loaded (install the CUDA NVRTC runtime, or add its directory \
             to LD_LIBRARY_PATH)"
                .into(),
        ));
    }
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: the library is present (checked above); both pointers are valid for writes.
    let r = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(GpuError::Unavailable(format!("nvrtcVersion: {r:?}")));
    }
    Ok((major, minor))
}

/// Compile the sources for `compute_{major}{minor}` (no device needed). Returns the PTX text.
pub fn compile(major: i32, minor: i32) -> Result<String> {
    let arch = format!("sm_{major}{minor}");
    nvrtc_version()?;
    let opts = cudarc::nvrtc::CompileOptions {
        options: compile_options(major, minor),
        name: Some("llmstream_kernels.cu".into()),
        ..Default::default()
    };
    let src = source();
    let ptx = std::panic::catch_unwind(|| cudarc::nvrtc::compile_ptx_with_opts(&src, opts))
        .map_err(|_| GpuError::Unavailable("NVRTC panicked while compiling".into()))?
        .map_err(|e| match e {
            cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. } => GpuError::Compile {
                arch: arch.clone(),
                message: format!("{nvrtc:?}"),
                log: log.to_string_lossy().into_owned(),
            },
            other => GpuError::Compile {
                arch: arch.clone(),
                message: format!("{other:?}"),
                log: String::new(),
            },
        })?;
    Ok(ptx.to_src())
}

/// PTX for this architecture from the disk cache, or compiled now (and cached); `nvrtc` is the
/// loaded NVRTC's version.
fn cached_ptx(major: i32, minor: i32, nvrtc: (i32, i32)) -> Result<String> {
    let (vmaj, vmin) = nvrtc;
    let src = source();
    let opts = compile_options(major, minor).join(" ");
    let key = fnv1a(&[
        src.as_bytes(),
        opts.as_bytes(),
        format!("{vmaj}.{vmin}").as_bytes(),
    ]);
    let file = cache_dir().map(|d| d.join(format!("{key:016x}-sm_{major}{minor}.ptx")));
    if let Some(f) = &file {
        if let Ok(text) = std::fs::read_to_string(f) {
            tracing::debug!(path = %f.display(), "kernels from the PTX cache");
            return Ok(text);
        }
    }
    let t0 = std::time::Instant::now();
    let ptx = compile(major, minor)?;
    tracing::info!(
        arch = format!("sm_{major}{minor}"),
        ms = t0.elapsed().as_millis(),
        "compiled kernels with NVRTC"
    );
    if let Some(f) = &file {
        // A cache that cannot be written only costs a compile next time.
        // Unique per process, thread and moment: concurrent compiles never share a temp file.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = f.with_extension(format!(
            "tmp{}-{:?}-{nanos}",
            std::process::id(),
            std::thread::current().id()
        ));
        let written = f
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, &ptx))
            .and_then(|()| std::fs::rename(&tmp, f));
        if let Err(e) = written {
            tracing::debug!(path = %f.display(), error = %e, "PTX cache not written");
        }
    }
    Ok(ptx)
}

/// A CUDA device with the kernels loaded and one compute stream.
#[derive(Debug)]
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    funcs: HashMap<&'static str, CudaFunction>,
    arch: (i32, i32),
    pdl: bool,
}

impl Gpu {
    /// Open device `ordinal`, compile (or load cached) kernels and look every one up.
    pub fn new(ordinal: usize) -> Result<Self> {
        // cudarc panics (and the panic hook prints) when libcuda is missing: look first.
        // SAFETY: only tries to dlopen the driver library under its usual names.
        let present =
            std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() })
                .unwrap_or(false);
        if !present {
            return Err(GpuError::Unavailable(
                "libcuda could not be loaded (no NVIDIA driver?)".into(),
            ));
        }
        let nvrtc = nvrtc_version()?;
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| {
                GpuError::Unavailable("libcuda could not be loaded (no NVIDIA driver?)".into())
            })?
            .map_err(|e| GpuError::Unavailable(format!("device {ordinal}: {e:?}")))?;
        // Host waits for the GPU sleep instead of spinning: the CPU is needed for storage
        // reads and, later, CPU-side layers.
        ctx.set_blocking_synchronize()
            .map_err(|e| GpuError::driver("cuCtxSetFlags", e))?;
        // SAFETY: called before this context has any allocation or stream of ours; the engine
        // orders its streams with explicit events, so cudarc's per-buffer tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let arch = ctx
            .compute_capability()
            .map_err(|e| GpuError::driver("cuDeviceGetAttribute", e))?;
        let ptx = cached_ptx(arch.0, arch.1, nvrtc)?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|e| GpuError::driver("cuModuleLoadData", e))?;
        let mut funcs = HashMap::new();
        for name in kernel_names() {
            let f = module
                .load_function(name)
                .map_err(|_| GpuError::MissingKernel(name))?;
            funcs.insert(name, f);
        }
        let stream = ctx
            .new_stream()
            .map_err(|e| GpuError::driver("cuStreamCreate", e))?;
        Ok(Gpu {
            ctx,
            stream,
            _module: module,
            funcs,
            arch,
            pdl: arch.0 >= 9 && std::env::var("LLMSTREAM_PDL").map_or(true, |v| v != "0"),
        })
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The compute stream every wrapper launches on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Compute capability `(major, minor)`.
    pub fn arch(&self) -> (i32, i32) {
        self.arch
    }

    /// Whether the kernels that support it are launched with programmatic dependent launch
    /// (compute capability 9.0 and later; `LLMSTREAM_PDL=0` turns it off).
    pub fn pdl(&self) -> bool {
        self.pdl
    }

    /// A loaded kernel by name.
    pub fn function(&self, name: &'static str) -> Result<&CudaFunction> {
        self.funcs.get(name).ok_or(GpuError::MissingKernel(name))
    }

    /// Wait for everything queued on the compute stream.
    pub fn sync(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| GpuError::driver("cuStreamSynchronize", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_compile_with_nvrtc_when_present() {
        match compile(9, 0) {
            Ok(ptx) => {
                // the PTX for ptxas -v (registers, spills) when asked
                if let Ok(p) = std::env::var("LLMSTREAM_DUMP_PTX") {
                    std::fs::write(&p, &ptx).expect("writing LLMSTREAM_DUMP_PTX");
                }
                for name in kernel_names() {
                    assert!(
                        ptx.contains(&format!(".entry {name}(")),
                        "{name} missing from the PTX"
                    );
                }
            }
            Err(GpuError::Unavailable(why)) => eprintln!("skipped: {why}"),
            Err(e) => panic!("{e}"),
        }
    }
}
