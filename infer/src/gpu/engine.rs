//! The GPU forward pass with tiered weights: resident layers in VRAM, pinned-RAM layers copied
//! to VRAM slots on a copy stream while earlier layers compute, storage layers read by the
//! library's O_DIRECT reader straight into VRAM slots (one bulk read per layer).
//!
//! Ordering uses streams and events only: the compute stream waits on a slot's "copied" event,
//! the copy stream waits on the slot's "free" event recorded after the layer that last used it.
//! The host thread blocks (sleeping) only on storage reads and, before reusing a slot for a
//! storage read, on that slot's "free" event; it synchronises once per token to read the id.

use super::fast;
use super::plan::{apply_split, plan, Plan, PlanInput, Rates, Split, Tier};
use super::{ops as gops, quant as gq, DevBuf, DevSpan, Gpu, GpuError};
use crate::calibration::{Calibration, MachineId};
use crate::config::{HParams, RopeMode};
use crate::cpu_layers::CpuLayers;
use crate::error::{InferError, Result};
use crate::quant;
use cudarc::driver::{sys, CudaEvent, CudaStream};
use llmstream::gguf::GgmlType;
use llmstream::{BackendChoice, Buffer, BufferKind, Config, Context, Model, ReadHandle};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

impl From<GpuError> for InferError {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::Unavailable(why) => InferError::NoGpu(why),
            other => InferError::Gpu(other.to_string()),
        }
    }
}

fn drv(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> InferError {
    move |e| InferError::Gpu(format!("{op}: {e:?}"))
}

/// How to load and run a model on the GPU.
#[derive(Debug, Clone)]
pub struct GpuConfig {
    /// CUDA device ordinal.
    pub device: usize,
    /// VRAM llmstream may use; `None`: free VRAM less a reserve.
    pub vram_budget: Option<u64>,
    /// Host memory for the pinned tier; `None`: `MemAvailable` less a reserve.
    pub ram_budget: Option<u64>,
    /// Streamed layers copied ahead of use.
    pub depth: usize,
    /// Context length (KV cache positions).
    pub n_ctx: usize,
    /// Most tokens per forward call (prompts are split into chunks of this size).
    pub max_batch: usize,
    /// Decode (one token) with the fused kernels where a layer's weights allow them
    /// (`Q4_K`/`Q6_K`): normalisation with quantization, Q/K/V in one launch with RoPE and the
    /// cache store in its epilogue (normal-mode RoPE, no biases; else one launch for them),
    /// attention with quantization, products added to the residual
    /// stream, gate/up with SwiGLU; the output head's norm with quantization too. Same bits as
    /// the unfused launches; `false` (or `LLMSTREAM_FUSED=0`) runs the unfused ones.
    pub fused: bool,
    /// Which layers outside VRAM the CPU computes (hybrid decode).
    pub split: Split,
    /// Layers the CPU computes whatever the plan (overrides `split`).
    pub cpu_layers: Option<Vec<usize>>,
    /// Let the GPU feed itself the token it picked while the host reads it, where every layer
    /// is resident ([`GpuEngine::next_token_ahead`]; `LLMSTREAM_AHEAD=0` turns it off).
    pub ahead: bool,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            device: 0,
            vram_budget: None,
            ram_budget: None,
            depth: 1,
            n_ctx: 4096,
            max_batch: 256,
            fused: std::env::var("LLMSTREAM_FUSED").map_or(true, |v| v != "0"),
            split: Split::Gpu,
            cpu_layers: None,
            ahead: std::env::var("LLMSTREAM_AHEAD").map_or(true, |v| v != "0"),
        }
    }
}

/// Bytes of layers the CPU probe runs through, at least (more than a last-level cache).
const PROBE_BYTES: u64 = 1 << 30;

/// The CPU's rate over layers `which` while the link copies pinned host memory to the GPU, as
/// it does during a hybrid token (both read host memory: the CPU alone measures faster).
fn cpu_rate_under_copies(
    gpu: &Gpu,
    ctx: &Context,
    model: &Model,
    hp: &HParams,
    which: &[usize],
) -> Result<f64> {
    const CHUNK: usize = 256 << 20;
    let mut probe = CpuLayers::probe(ctx, model, hp, which)?;
    let copy = gpu.context().new_stream().map_err(drv("cuStreamCreate"))?;
    // Without room for the copies (page-locked memory or VRAM refused) the CPU is probed alone.
    let (host, dev) = match (
        ctx.alloc(BufferKind::Pinned, CHUNK),
        DevBuf::zeroed(gpu.stream(), CHUNK),
    ) {
        (Ok(h), Ok(d)) => (h, d),
        (h, d) => {
            tracing::warn!(
                pinned = h.err().map(|e| e.to_string()),
                vram = d.err().map(|e| e.to_string()),
                "CPU probe without concurrent copies"
            );
            return probe.rate();
        }
    };
    gpu.sync()?;
    let Some(hptr) = host.host_ptr() else {
        return Err(InferError::Gpu("pinned buffer without host memory".into()));
    };
    // about 0.25 s of copies at 50 GB/s, longer than the probe's four layer runs
    for _ in 0..48 {
        // SAFETY: `hptr..hptr + CHUNK` is the pinned buffer `host`, and `dev` holds CHUNK
        // bytes; both outlive the copies, which are waited for below before either is dropped;
        // nothing writes the host buffer meanwhile.
        unsafe {
            let src = std::slice::from_raw_parts(hptr.cast_const(), CHUNK);
            cudarc::driver::result::memcpy_htod_async(dev.span().ptr(), src, copy.cu_stream())
                .map_err(drv("cuMemcpyHtoDAsync"))?;
        }
    }
    let rate = probe.rate();
    copy.synchronize().map_err(drv("cuStreamSynchronize"))?;
    drop((host, dev));
    rate
}

/// The calibration cache (`llmstream calibrate`) when it holds for this machine, its GPU and
/// the quant pool's thread count; a damaged cache is reported and ignored (the probes run).
fn cached_calibration(ctx: &Context) -> Option<Calibration> {
    let path = Calibration::default_path()?;
    let cal = match Calibration::load(&path) {
        Ok(c) => c?,
        Err(e) => {
            tracing::warn!("{e}: probing the rates instead");
            return None;
        }
    };
    let threads = crate::quant::threads().ok()?;
    let here = MachineId::detect(crate::calibration::gpu_name(ctx));
    if cal.matches(&here, threads) {
        Some(cal)
    } else {
        tracing::info!(
            path = %path.display(),
            "calibration taken on another machine or thread count: probing the rates"
        );
        None
    }
}

/// The GPU's rate over decode-layer weights when no resident layer can be timed (bytes/s; an
/// H100 decodes a 70B-shaped Q4_K_M layer at about this rate).
const ASSUMED_GPU_LAYER_BPS: f64 = 1.2e12;

/// Throttle points (layers, or one-token calls on resident layers) the host may enqueue ahead
/// of the GPU.
const AHEAD: usize = 8;

/// Longest the host polls for a token id after the layers are done (the output head and the
/// argmax of a large vocabulary take ~100 us on an H100) before it sleeps.
const SPIN_LIMIT: std::time::Duration = std::time::Duration::from_millis(2);

/// VRAM kept free when the budget is automatic (other processes, driver, fragmentation).
pub const VRAM_RESERVE: u64 = 1 << 30;
/// Host memory kept free when the RAM budget is automatic.
pub const RAM_RESERVE: u64 = 4 << 30;

#[derive(Debug, Clone, Copy)]
struct TRef {
    off: usize,
    bytes: usize,
    ty: GgmlType,
    rows: usize,
    cols: usize,
}

#[derive(Debug, Clone, Copy)]
struct LayerMap {
    attn_norm: TRef,
    wq: TRef,
    wk: TRef,
    wv: TRef,
    wo: TRef,
    bq: Option<TRef>,
    bk: Option<TRef>,
    bv: Option<TRef>,
    ffn_norm: TRef,
    gate: TRef,
    up: TRef,
    down: TRef,
}

fn tref(model: &Model, name: &str, base: u64) -> Result<TRef> {
    let t = model.tensor(name)?;
    let cols = usize::try_from(t.dims.first().copied().unwrap_or(1))
        .map_err(|_| InferError::Invalid(format!("{name}: too large")))?;
    let rows = usize::try_from(t.dims.iter().skip(1).product::<u64>())
        .map_err(|_| InferError::Invalid(format!("{name}: too large")))?;
    let off = usize::try_from(t.offset - base)
        .map_err(|_| InferError::Invalid(format!("{name}: offset")))?;
    let bytes =
        usize::try_from(t.size).map_err(|_| InferError::Invalid(format!("{name}: size")))?;
    Ok(TRef {
        off,
        bytes,
        ty: t.ggml_type,
        rows,
        cols,
    })
}

fn layer_map(model: &Model, i: usize) -> Result<LayerMap> {
    let l = model.layer(i)?;
    if !l.contiguous {
        return Err(InferError::Invalid(format!(
            "layer {i} is not contiguous in the file (one bulk read per layer needs that)"
        )));
    }
    let base = l.span.start;
    let t = |s: &str| tref(model, &format!("blk.{i}.{s}"), base);
    let opt = |s: &str| {
        if model.tensor(&format!("blk.{i}.{s}")).is_ok() {
            t(s).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(LayerMap {
        attn_norm: t("attn_norm.weight")?,
        wq: t("attn_q.weight")?,
        wk: t("attn_k.weight")?,
        wv: t("attn_v.weight")?,
        wo: t("attn_output.weight")?,
        bq: opt("attn_q.bias")?,
        bk: opt("attn_k.bias")?,
        bv: opt("attn_v.bias")?,
        ffn_norm: t("ffn_norm.weight")?,
        gate: t("ffn_gate.weight")?,
        up: t("ffn_up.weight")?,
        down: t("ffn_down.weight")?,
    })
}

fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Per-token accounting of the last forward call(s) since [`GpuEngine::take_stats`].
#[derive(Debug, Clone, Default)]
pub struct TokenStats {
    /// Forward calls counted.
    pub calls: u64,
    /// GPU time of the calls (ms), from events at the start and end of each call.
    pub gpu_ms: f64,
    /// Of that, time the compute stream waited for a layer's copy (ms).
    pub wait_h2d_ms: f64,
    /// Host time blocked on storage reads or on slots to free for them (ms).
    pub wait_storage_ms: f64,
    /// Bytes copied from pinned RAM to VRAM.
    pub bytes_ram: u64,
    /// Bytes read from storage into VRAM.
    pub bytes_storage: u64,
    /// Weight bytes read from resident VRAM layers.
    pub bytes_vram: u64,
    /// Weight bytes the CPU computed over.
    pub bytes_cpu: u64,
    /// Host time in CPU layers, hops included (ms).
    pub cpu_ms: f64,
    /// Of that, time waiting for the GPU to hand over the hidden state (ms).
    pub cpu_wait_ms: f64,
    /// Of that, time computing the layers (ms): `bytes_cpu` over it is the CPU's rate inside
    /// the pipeline.
    pub cpu_run_ms: f64,
}

impl TokenStats {
    /// JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        let per = |v: f64| v / (self.calls.max(1) as f64);
        serde_json::json!({
            "calls": self.calls,
            "gpu_ms_per_call": per(self.gpu_ms),
            "compute_ms_per_call": per((self.gpu_ms - self.wait_h2d_ms).max(0.0)),
            "wait_h2d_ms_per_call": per(self.wait_h2d_ms),
            "wait_storage_ms_per_call": per(self.wait_storage_ms),
            "bytes_per_call": {
                "vram": self.bytes_vram / self.calls.max(1),
                "ram": self.bytes_ram / self.calls.max(1),
                "storage": self.bytes_storage / self.calls.max(1),
                "cpu": self.bytes_cpu / self.calls.max(1),
            },
            "cpu_layers_ms_per_call": per(self.cpu_ms),
            "cpu_layers_wait_gpu_ms_per_call": per(self.cpu_wait_ms),
            "cpu_layers_compute_ms_per_call": per(self.cpu_run_ms),
            "cpu_layers_gbps": if self.cpu_run_ms > 0.0 {
                self.bytes_cpu as f64 / (self.cpu_run_ms * 1e6)
            } else {
                0.0
            },
        })
    }
}

struct Acts {
    x: DevBuf,
    h: DevBuf,
    q: DevBuf,
    k: DevBuf,
    v: DevBuf,
    att: DevBuf,
    o: DevBuf,
    g: DevBuf,
    u: DevBuf,
    xq: DevBuf,
    logits: DevBuf,
    ws: DevBuf,
    ids: DevBuf,
    out_id: DevBuf,
    sample_ws: DevBuf,
}

/// The activation buffers one layer call uses, sized for its tokens ([`GpuEngine::spans`]).
#[derive(Debug, Clone, Copy)]
struct Spans {
    h: DevSpan,
    q: DevSpan,
    k: DevSpan,
    v: DevSpan,
    att: DevSpan,
    o: DevSpan,
    g: DevSpan,
    u: DevSpan,
}

/// The hidden state's way to and from CPU layers: a page-locked buffer and the event the host
/// sleeps on until the GPU has written it. When the buffer is mapped into the device's address
/// space (`dev`), the SMs move the state with a copy kernel on the compute stream, reading or
/// writing host memory over PCIe; else (or with `LLMSTREAM_HOP=dma`) DMA copies on the compute
/// stream carry it. Kernels, because a DMA copy to the GPU shares the copy engines with the
/// streamed layers' copies and waited behind a layer's copy in flight (up to ~10 ms at 70B).
struct Hop {
    buf: Buffer,
    /// Device address of `buf` when it is mapped.
    dev: Option<u64>,
    ready: CudaEvent,
}

/// Whether hops may use the mapped-memory copy kernel (`LLMSTREAM_HOP=dma` turns it off).
fn hop_by_kernel() -> bool {
    std::env::var("LLMSTREAM_HOP").map_or(true, |v| v != "dma")
}

impl Hop {
    /// A hop for at least `len` bytes (one token's hidden state at first; it grows for a
    /// prompt batch).
    fn new(ctx: &Context, gpu: &Gpu, len: usize) -> Result<Self> {
        let buf = ctx.alloc(BufferKind::Pinned, len.max(4096))?;
        let ready = gpu
            .context()
            .new_event(Some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC))
            .map_err(drv("cuEventCreate"))?;
        let dev = match buf.host_ptr() {
            Some(hp) if hop_by_kernel() => mapped_address(gpu, hp),
            _ => None,
        };
        Ok(Hop { buf, dev, ready })
    }
}

/// The device address of page-locked host memory at `hp` (the library allocates it mapped), or
/// `None` when the driver does not map it.
fn mapped_address(gpu: &Gpu, hp: *mut u8) -> Option<u64> {
    if let Err(e) = gpu.context().bind_to_thread() {
        tracing::warn!("hop: cuCtxSetCurrent: {e}");
        return None;
    }
    let mut dptr: sys::CUdeviceptr = 0;
    // SAFETY: a valid out-pointer, and `hp` is the start of a live page-locked allocation of
    // this context (the hop's buffer); the call only looks the address up.
    let r = unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dptr, hp.cast(), 0) };
    if r == sys::CUresult::CUDA_SUCCESS && dptr != 0 {
        Some(dptr)
    } else {
        tracing::info!("hop: page-locked buffer not mapped ({r:?}); DMA copies instead");
        None
    }
}

/// Layer slots and events of the streamed tiers.
struct Streamer {
    order: Vec<usize>,
    slots: Vec<DevBuf>,
    slot_lib: Vec<Buffer>,
    copied: Vec<CudaEvent>,
    free: Vec<CudaEvent>,
    free_recorded: Vec<bool>,
    pending: Vec<Option<ReadHandle>>,
    issued: u64,
    consumed: u64,
    copy: Arc<CudaStream>,
    timing: Vec<(CudaEvent, CudaEvent)>,
    timing_used: usize,
}

/// Where the token embedding rows come from.
enum Embedding {
    /// The output matrix (tied to the embedding), resident.
    Tied,
    /// The untied table in host memory: rows dequantized on the CPU.
    Host(Vec<u8>),
    /// The untied table moved to VRAM, so that the GPU can feed itself the token it picked
    /// ([`GpuEngine::next_token_ahead`]).
    Device(DevBuf),
}

/// A forward call's start and end events: nothing to collect, its time to add to the
/// statistics once the end is reached, or its time to drop (the call was undone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timing {
    Idle,
    Collect,
    Drop,
}

/// A model on the GPU.
pub struct GpuEngine {
    gpu: Gpu,
    /// Hyper-parameters.
    pub hp: HParams,
    ctx: Context,
    model: Model,
    /// The placement.
    pub plan: Plan,
    maps: Vec<LayerMap>,
    resident: Vec<Option<DevBuf>>,
    pinned: Vec<Option<Buffer>>,
    streamer: Option<Streamer>,
    output: DevBuf,
    output_ref: TRef,
    output_norm: DevBuf,
    rope_freqs: Option<DevBuf>,
    embd: Embedding,
    embd_ref: TRef,
    /// KV caches of the GPU's layers (`None` for CPU layers: theirs is in host memory).
    kv: Vec<Option<(DevBuf, DevBuf)>>,
    acts: Acts,
    cfg: GpuConfig,
    pos: usize,
    memo: Option<(u64, GgmlType, usize, usize)>,
    stats: TokenStats,
    ev_start: CudaEvent,
    ev_end: CudaEvent,
    /// Start and end events of the last two forward calls, and what to do with each pair's
    /// time: with a call enqueued ahead, the host reads the id of the one before.
    timing_ev: [(CudaEvent, CudaEvent, Timing); 2],
    timing_at: usize,
    /// The weight bytes of the call enqueued ahead of the host ([`GpuEngine::next_token_ahead`])
    /// whose token the host has not fed yet, with that token.
    ahead_call: Option<(u32, u64)>,
    /// The token id's way back ([`GpuEngine::next_token`]): `layers_done` (recorded after the
    /// last layer; the host sleeps on it), `copied` (after the id's copy to `id_host`; the host
    /// spins on it for the output head's last ~100 us, instead of sleeping through it and
    /// waking ~80 us late), the page-locked 4 bytes.
    layers_done: CudaEvent,
    copied: CudaEvent,
    /// For [`GpuEngine::next_token_ahead`]: `picked` is recorded after the pick, and the id's
    /// copy waits for it on `id_stream`, beside the compute stream (which goes on to the next
    /// call at once), then records `id_ready`, on which the host sleeps.
    picked: CudaEvent,
    id_stream: Arc<CudaStream>,
    id_ready: CudaEvent,
    id_host: Buffer,
    /// Events recorded after each layer (once per call for one token on resident layers), in a
    /// ring: the host sleeps on the one of `AHEAD` points ago before enqueueing more, so it
    /// never runs far ahead of the GPU (a full launch queue makes the driver spin a core).
    ahead: Vec<CudaEvent>,
    throttle_points: u64,
    fixed_vram: u64,
    /// Layers the CPU computes, with the hidden state's host copy.
    cpu: Option<CpuLayers>,
    host_x: Vec<f32>,
    /// The page-locked buffer the hidden state hops through to and from CPU layers.
    hop: Option<Hop>,
    /// Held while there are CPU layers: the quant pool's workers spin longer before sleeping.
    pool_spin: Option<quant::LongSpin>,
    /// The rates that chose the split (`cpu_bps` 0 when the CPU was not needed): the GPU's
    /// layer rate and the CPU's over this model's layers under copies, measured at load; the
    /// link's from the calibration cache when it holds for this machine, else probed at load.
    pub rates: Rates,
    /// The calibration cache used (`llmstream calibrate`), when one holds for this machine and
    /// thread count.
    pub calibration: Option<Calibration>,
    /// The CPU's rate over the probed layers' weights the calibration cache predicts (per-type
    /// rates times the ratio under copies), when one holds; the split uses the rate measured at
    /// load (`rates.cpu_bps`).
    pub cpu_calibrated_bps: Option<f64>,
    /// Seconds spent loading.
    pub load_secs: f64,
}

impl std::fmt::Debug for GpuEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuEngine")
            .field("plan", &self.plan)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

fn f32_bytes(n: usize) -> usize {
    n * std::mem::size_of::<f32>()
}

impl Drop for GpuEngine {
    /// Copies still queued (the next token's layers streamed ahead, a hidden state's hop) read
    /// page-locked buffers the fields below free: wait for both streams first.
    fn drop(&mut self) {
        if let Some(s) = &self.streamer {
            if let Err(e) = s.copy.synchronize() {
                tracing::warn!("dropping the GPU engine: copy stream: {e}");
            }
        }
        if let Err(e) = self.gpu.sync() {
            tracing::warn!("dropping the GPU engine: {e}");
        }
    }
}

impl GpuEngine {
    /// Open `path`, plan the tiers, and load the resident and pinned layers.
    pub fn load(path: &Path, cfg: GpuConfig) -> Result<Self> {
        let t0 = Instant::now();
        let gpu = Gpu::new(cfg.device)?;
        let mut lcfg = Config::from_env()?;
        lcfg.backend = BackendChoice::Cuda;
        lcfg.device = cfg.device;
        let ctx = Context::new(lcfg)?;
        let model = ctx.open_model(path)?;
        let hp = HParams::from_gguf(model.gguf())?;
        let n_layer = hp.n_layer;
        let maps: Vec<LayerMap> = (0..n_layer)
            .map(|i| layer_map(&model, i))
            .collect::<Result<_>>()?;
        let layer_bytes: Vec<u64> = (0..n_layer)
            .map(|i| model.layer_bytes(i))
            .collect::<std::result::Result<_, _>>()?;

        let tied = model.tensor("output.weight").is_err();
        let out_name = if tied {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        let out_info = model.tensor(out_name)?.clone();
        let output_ref = tref(&model, out_name, out_info.offset)?;
        let embd_info = model.tensor("token_embd.weight")?.clone();
        let embd_ref = tref(&model, "token_embd.weight", embd_info.offset)?;

        let d = hp.n_embd;
        let qd = hp.n_head * hp.head_dim;
        let kvd = hp.n_head_kv * hp.head_dim;
        let nb = cfg.max_batch.max(1);
        let n_ctx = cfg.n_ctx.max(1);
        let vocab = output_ref.rows;
        let max_cols = d.max(hp.n_ff).max(qd);
        let xq_bytes = nb
            * [
                GgmlType::Q4_K,
                GgmlType::Q8_0,
                GgmlType::Q4_1,
                GgmlType::F32,
                GgmlType::F16,
            ]
            .iter()
            .map(|&t| gq::activation_row_bytes(t, max_cols).unwrap_or(f32_bytes(max_cols)))
            .max()
            .unwrap_or(f32_bytes(max_cols))
            .max(max_cols.div_ceil(256) * fast::XBS_DECODE);
        let ws_bytes = gops::attention_workspace_bytes(nb, n_ctx, hp.n_head, hp.head_dim);
        let act_bytes = f32_bytes(nb * (2 * d + qd + 2 * kvd + qd + d + 2 * hp.n_ff))
            + xq_bytes
            + f32_bytes(vocab)
            + ws_bytes;
        let kv_bytes = (2 * n_layer * n_ctx * kvd * 2) as u64;
        let fixed = out_info.size + act_bytes as u64 + kv_bytes + f32_bytes(d) as u64 + (64 << 20);

        let (free_vram, _total) = gpu.context().mem_get_info().map_err(drv("cuMemGetInfo"))?;
        let vram_budget = cfg
            .vram_budget
            .unwrap_or_else(|| (free_vram as u64).saturating_sub(VRAM_RESERVE));
        let ram_budget = cfg.ram_budget.unwrap_or_else(|| {
            mem_available()
                .unwrap_or(0)
                .saturating_sub(RAM_RESERVE)
                .saturating_mul(9)
                / 10
        });
        let calibration = cached_calibration(&ctx);
        // From the cache, else 1 GiB in 256 MiB copies: smaller synchronous copies understate
        // the link by ~10%, and the split moves layers to the CPU by this figure.
        let h2d_bps = match calibration.as_ref().and_then(|c| c.h2d_bps) {
            Some(r) => r,
            None => ctx
                .raw_h2d_peak(256 << 20, 4)
                .ok()
                .flatten()
                .unwrap_or(25e9),
        };
        // The environment, else the calibration's reader rate, else a typical NVMe-less disk.
        let storage_bps = std::env::var("LLMSTREAM_STORAGE_BPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .or_else(|| calibration.as_ref().and_then(|c| c.storage_bps))
            .unwrap_or(1.5e9);
        let mut plan = plan(&PlanInput {
            layer_bytes: layer_bytes.clone(),
            fixed_vram: fixed,
            vram_budget,
            ram_budget,
            depth: cfg.depth,
            stream_ram: cfg.split != Split::Cpu || cfg.cpu_layers.is_some(),
            h2d_bps,
            storage_bps,
            hbm_bps: 2.5e12,
        })
        .map_err(|e| InferError::Invalid(e.to_string()))?;
        // Forced CPU layers are known now (no rates needed), so their weights never go to VRAM;
        // the other splits are chosen after the probes, among the pinned-RAM layers
        // ([`GpuEngine::place_outside_vram`]).
        if let Some(list) = cfg.cpu_layers.as_deref() {
            // the prediction is redone with the measured rates once they are known
            let unmeasured = Rates {
                cpu_bps: 0.0,
                h2d_bps,
                storage_bps,
                gpu_bps: ASSUMED_GPU_LAYER_BPS,
            };
            apply_split(&mut plan, &layer_bytes, cfg.split, Some(list), unmeasured)
                .map_err(InferError::Invalid)?;
        }

        let stream = gpu.stream().clone();
        let alloc = |n: usize| DevBuf::zeroed(&stream, n);
        // Device allocations are zeroed on the compute stream; the library's copies run on its
        // own stream, so make sure the memsets are done before it writes.
        let mut resident = Vec::with_capacity(n_layer);
        for (i, t) in plan.tiers.iter().enumerate() {
            resident.push(if *t == Tier::Vram {
                Some(alloc(
                    usize::try_from(layer_bytes[i]).unwrap_or(usize::MAX),
                )?)
            } else {
                None
            });
        }
        let output = alloc(output_ref.bytes)?;
        gpu.sync()?;
        let src = model.source().clone();
        // SAFETY: `output` is device memory of this context (the primary context the library
        // also uses) and outlives the read, which is waited for here.
        let wrapped = unsafe { ctx.wrap_device(output.span().ptr(), output.len())? };
        ctx.read_async(&src, out_info.offset, out_info.size, &wrapped, 0)?
            .wait()?;
        let mut handles = Vec::new();
        let mut wraps = Vec::new();
        for (i, r) in resident.iter().enumerate() {
            if let Some(buf) = r {
                // SAFETY: as above; `buf` lives in `resident` for the engine's lifetime and the
                // reads are waited for below.
                let w = unsafe { ctx.wrap_device(buf.span().ptr(), buf.len())? };
                handles.push(model.load_layer_async(&ctx, i, &w, 0)?);
                wraps.push(w);
            }
        }
        for h in handles {
            h.wait()?;
        }
        drop(wraps);

        let f32_tensor = |name: &str| -> Result<Vec<u8>> { Ok(model.read_tensor(&ctx, name)?) };
        let output_norm = DevBuf::from_host(&stream, &f32_tensor("output_norm.weight")?)?;
        let rope_freqs = match crate::weights::load_rope_freqs(&ctx, &model, &hp)? {
            Some(f) => Some(DevBuf::from_f32(&stream, &f)?),
            None => None,
        };
        let embd = if tied {
            Embedding::Tied
        } else {
            Embedding::Host(model.read_tensor(&ctx, "token_embd.weight")?)
        };

        // KV caches of the GPU's layers; the pinned-RAM layers get theirs once the split has
        // decided which of them stay on the GPU, and CPU layers keep theirs in host memory.
        let mut kv = Vec::with_capacity(n_layer);
        for t in &plan.tiers {
            kv.push(if matches!(t, Tier::Vram | Tier::Storage) {
                Some((alloc(n_ctx * kvd * 2)?, alloc(n_ctx * kvd * 2)?))
            } else {
                None
            });
        }
        let acts = Acts {
            x: alloc(f32_bytes(nb * d))?,
            h: alloc(f32_bytes(nb * d.max(qd)))?,
            q: alloc(f32_bytes(nb * qd))?,
            k: alloc(f32_bytes(nb * kvd))?,
            v: alloc(f32_bytes(nb * kvd))?,
            att: alloc(f32_bytes(nb * qd))?,
            o: alloc(f32_bytes(nb * d))?,
            g: alloc(f32_bytes(nb * hp.n_ff))?,
            u: alloc(f32_bytes(nb * hp.n_ff))?,
            xq: alloc(xq_bytes)?,
            logits: alloc(f32_bytes(vocab))?,
            ws: alloc(ws_bytes)?,
            ids: alloc(4 * nb)?,
            out_id: alloc(4)?,
            sample_ws: alloc(gops::sample_workspace_bytes(vocab))?,
        };

        gpu.sync()?;
        let event = |flags| {
            gpu.context()
                .new_event(Some(flags))
                .map_err(drv("cuEventCreate"))
        };
        let blocking = sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC;
        let ev_start = event(blocking)?;
        let ev_end = event(blocking)?;
        let timing_ev = [
            (event(blocking)?, event(blocking)?, Timing::Idle),
            (event(blocking)?, event(blocking)?, Timing::Idle),
        ];
        let layers_done = event(blocking)?;
        // no blocking-sync flag: the host polls it
        let copied = event(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)?;
        let id_ready = event(blocking)?;
        let picked = event(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)?;
        let id_stream = gpu.context().new_stream().map_err(drv("cuStreamCreate"))?;
        let id_host = ctx.alloc(BufferKind::Pinned, 4096)?;
        let ahead = (0..AHEAD)
            .map(|_| event(blocking))
            .collect::<Result<Vec<_>>>()?;
        let mut engine = GpuEngine {
            gpu,
            hp,
            ctx,
            model,
            plan,
            maps,
            resident,
            pinned: (0..n_layer).map(|_| None).collect(),
            streamer: None,
            output,
            output_ref,
            output_norm,
            rope_freqs,
            embd,
            embd_ref,
            kv,
            acts,
            cfg,
            pos: 0,
            memo: None,
            stats: TokenStats::default(),
            ev_start,
            ev_end,
            timing_ev,
            timing_at: 0,
            ahead_call: None,
            layers_done,
            copied,
            picked,
            id_stream,
            id_ready,
            id_host,
            ahead,
            throttle_points: 0,
            fixed_vram: fixed,
            cpu: None,
            host_x: Vec::new(),
            hop: None,
            pool_spin: None,
            rates: Rates {
                cpu_bps: 0.0,
                h2d_bps,
                storage_bps,
                gpu_bps: 0.0,
            },
            load_secs: 0.0,
            calibration,
            cpu_calibrated_bps: None,
        };
        engine.place_outside_vram(&layer_bytes)?;
        engine.device_embedding(fixed, vram_budget)?;
        tracing::info!(
            cpu = engine.plan.count(Tier::Cpu),
            cpu_gbps = engine.rates.cpu_bps / 1e9,
            gpu_layer_gbps = engine.rates.gpu_bps / 1e9,
            vram = engine.plan.count(Tier::Vram),
            ram = engine.plan.count(Tier::Ram),
            storage = engine.plan.count(Tier::Storage),
            vram_budget,
            ram_budget,
            "tier plan"
        );
        engine.load_secs = t0.elapsed().as_secs_f64();
        Ok(engine)
    }

    /// The second half of loading: measure the rates the split needs (the GPU over a resident
    /// layer, the CPU over pinned-RAM layers while the link copies), choose the CPU layers
    /// among the pinned-RAM ones ([`apply_split`]), then load the CPU layers, the pinned tier,
    /// the remaining KV caches and the streaming slots.
    fn place_outside_vram(&mut self, layer_bytes: &[u64]) -> Result<()> {
        let n_layer = self.hp.n_layer;
        let outside = (0..n_layer).any(|i| self.plan.tiers[i] != Tier::Vram);
        if !outside {
            return Ok(());
        }
        let forced = self.cfg.cpu_layers.clone();
        let first = |t: Tier| self.plan.tiers.iter().position(|x| *x == t);
        let first_vram = first(Tier::Vram);
        let probe_layer = first(Tier::Ram).or_else(|| first(Tier::Cpu));
        let wants_cpu = forced.is_some() || self.cfg.split != Split::Gpu;
        self.rates.gpu_bps = match first_vram {
            Some(li) => self.gpu_layer_rate(li)?,
            None => {
                tracing::warn!("no resident layer to time: the GPU's layer rate is assumed");
                ASSUMED_GPU_LAYER_BPS
            }
        };
        if let (true, Some(li)) = (wants_cpu, probe_layer) {
            // The split follows what the CPU does on this model's own layers, measured now
            // under copies: the calibration's per-type rates come from large matrices back to
            // back and overstate a whole layer (its small products, norms, attention and
            // dispatches): on the GPU machine 120 GB/s cached against 97 measured over 70B
            // layers, and the plan from the cached rate decoded 6.77 tok/s against 7.17 (same
            // call). The cached estimate stays for comparison (`cpu_gbps_calibrated`) and as
            // the fallback when the probe cannot run.
            let mut which = vec![li];
            let mut bytes = self.model.layer_bytes(li)?;
            for (i, t) in self.plan.tiers.iter().enumerate() {
                if bytes >= PROBE_BYTES || which.len() >= 8 {
                    break;
                }
                if i != li && matches!(t, Tier::Ram | Tier::Cpu) {
                    which.push(i);
                    bytes += self.model.layer_bytes(i)?;
                }
            }
            // the cache's estimate over the same layers' matrices
            let by_type: Vec<(GgmlType, u64)> = which
                .iter()
                .flat_map(|&i| {
                    let m = self.maps[i];
                    [m.wq, m.wk, m.wv, m.wo, m.gate, m.up, m.down]
                })
                .map(|t| (t.ty, t.bytes as u64))
                .collect();
            let cached = self
                .calibration
                .as_ref()
                .and_then(|c| Some(c.cpu_layer_bps(&by_type)? * c.cpu_under_copies.unwrap_or(1.0)));
            self.cpu_calibrated_bps = cached;
            self.rates.cpu_bps = match (
                cpu_rate_under_copies(&self.gpu, &self.ctx, &self.model, &self.hp, &which),
                cached,
            ) {
                (Ok(r), _) => r,
                (Err(e), Some(r)) => {
                    tracing::warn!("CPU probe failed ({e}): the calibrated rate instead");
                    r
                }
                (Err(e), None) => return Err(e),
            };
        }
        apply_split(
            &mut self.plan,
            layer_bytes,
            self.cfg.split,
            forced.as_deref(),
            self.rates,
        )
        .map_err(InferError::Invalid)?;

        let cpu_list: Vec<usize> = (0..n_layer)
            .filter(|&i| self.plan.tiers[i] == Tier::Cpu)
            .collect();
        if !cpu_list.is_empty() {
            // between CPU layers the host waits for a GPU segment (about a millisecond): the
            // pool's workers stay awake across it, for as long as this engine lives, instead of
            // being woken for every CPU layer
            self.pool_spin = Some(quant::hold_long_pool_spin());
            self.cpu = Some(CpuLayers::load(
                &self.ctx,
                &self.model,
                &self.hp,
                &cpu_list,
                self.cfg.n_ctx.max(1),
            )?);
        }
        let kvd = self.hp.n_head_kv * self.hp.head_dim;
        let n_ctx = self.cfg.n_ctx.max(1);
        let stream = self.gpu.stream().clone();
        let mut handles = Vec::new();
        for (i, &bytes) in layer_bytes.iter().enumerate().take(n_layer) {
            if self.plan.tiers[i] != Tier::Ram {
                continue;
            }
            if self.kv[i].is_none() {
                self.kv[i] = Some((
                    DevBuf::zeroed(&stream, n_ctx * kvd * 2)?,
                    DevBuf::zeroed(&stream, n_ctx * kvd * 2)?,
                ));
            }
            let b = self.ctx.alloc(
                BufferKind::Pinned,
                usize::try_from(bytes).unwrap_or(usize::MAX),
            )?;
            handles.push(self.model.load_layer_async(&self.ctx, i, &b, 0)?);
            self.pinned[i] = Some(b);
        }
        for h in handles {
            h.wait()?;
        }
        self.streamer = self.new_streamer()?;
        self.gpu.sync()?;
        Ok(())
    }

    /// Slots and events for the streamed layers (`None` when every GPU layer is resident).
    fn new_streamer(&self) -> Result<Option<Streamer>> {
        let streamed: Vec<usize> = self
            .plan
            .tiers
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(**t, Tier::Ram | Tier::Storage))
            .map(|(i, _)| i)
            .collect();
        if streamed.is_empty() {
            return Ok(None);
        }
        if self.plan.slots == 0 {
            return Err(InferError::Gpu("streamed layers without VRAM slots".into()));
        }
        {
            let gctx = self.gpu.context().clone();
            let copy = gctx.new_stream().map_err(drv("cuStreamCreate"))?;
            let slot_len = usize::try_from(self.plan.slot_bytes).unwrap_or(usize::MAX);
            let mut slots = Vec::new();
            let mut slot_lib = Vec::new();
            let mut copied = Vec::new();
            let mut free = Vec::new();
            // Sleeping waits (the host must not spin on a core the CPU work needs).
            let blocking = Some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC);
            for _ in 0..self.plan.slots {
                let s = DevBuf::zeroed(self.gpu.stream(), slot_len)?;
                // SAFETY: the slot lives in the streamer as long as the wrapper.
                slot_lib.push(unsafe { self.ctx.wrap_device(s.span().ptr(), s.len())? });
                slots.push(s);
                copied.push(gctx.new_event(blocking).map_err(drv("cuEventCreate"))?);
                free.push(gctx.new_event(blocking).map_err(drv("cuEventCreate"))?);
            }
            Ok(Some(Streamer {
                order: streamed,
                free_recorded: vec![false; self.plan.slots],
                pending: (0..self.plan.slots).map(|_| None).collect(),
                slots,
                slot_lib,
                copied,
                free,
                issued: 0,
                consumed: 0,
                copy,
                timing: Vec::new(),
                timing_used: 0,
            }))
        }
    }

    /// The GPU's rate over the weights of resident layer `li` (bytes/s): the layer's one-token
    /// decode at position 0 (as `forward` runs it), mean of four runs after a warm-up, timed
    /// with events. The KV entries it writes are overwritten by the first real token.
    fn gpu_layer_rate(&mut self, li: usize) -> Result<f64> {
        let Some(w) = self.resident[li].as_ref().map(DevBuf::span) else {
            return Err(InferError::Gpu(format!("layer {li} is not resident")));
        };
        let m = self.maps[li];
        let (d, hd) = (self.hp.n_embd, self.hp.head_dim);
        let x = self.acts.x.sub(0, f32_bytes(d))?;
        let spans = self.spans(1)?;
        #[allow(clippy::cast_precision_loss)]
        let scale = 1.0 / (hd as f32).sqrt();
        let factors = self.rope_freqs.as_ref().map(DevBuf::span);
        let stream = self.gpu.stream().clone();
        let zeros = vec![0u8; f32_bytes(d)];
        let runs = 4;
        for r in 0..=runs {
            if r == 1 {
                self.ev_start
                    .record(&stream)
                    .map_err(drv("cuEventRecord"))?;
            }
            // the input stays small whatever the weights do to it
            self.acts.x.write(&stream, 0, &zeros)?;
            self.pos = 0;
            self.layer(li, w, &m, 1, x, spans, scale, factors)?;
        }
        self.ev_end.record(&stream).map_err(drv("cuEventRecord"))?;
        self.ev_end
            .synchronize()
            .map_err(drv("cuEventSynchronize"))?;
        let ms = self
            .ev_start
            .elapsed_ms(&self.ev_end)
            .map_err(drv("cuEventElapsedTime"))?;
        self.memo = None;
        #[allow(clippy::cast_precision_loss)] // byte counts far below 2^53
        let bytes = self.model.layer_bytes(li)? as f64 * f64::from(runs);
        Ok(bytes / (f64::from(ms) * 1e-3).max(1e-9))
    }

    /// The ideal time per token of this placement with the rates measured at load
    /// ([`super::plan::split_bound`]), seconds.
    pub fn split_bound_s(&self) -> f64 {
        let bytes: Vec<u64> = (0..self.hp.n_layer)
            .map(|i| self.model.layer_bytes(i).unwrap_or(0))
            .collect();
        super::plan::split_bound(&self.plan.tiers, &bytes, self.rates)
    }

    /// VRAM the plan reserved whatever the placement (output matrix, KV cache, activations).
    pub fn fixed_vram(&self) -> u64 {
        self.fixed_vram
    }

    /// The model's parsed GGUF header (metadata, tokenizer, tensors).
    pub fn gguf(&self) -> &llmstream::gguf::GgufFile {
        self.model.gguf()
    }

    /// Positions processed so far.
    pub fn pos(&self) -> usize {
        self.pos - usize::from(self.ahead_call.is_some())
    }

    /// Context length.
    pub fn n_ctx(&self) -> usize {
        self.cfg.n_ctx
    }

    /// Forget the sequence.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.ahead_call = None;
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.output_ref.rows
    }

    /// Take the accumulated per-call statistics. A call enqueued ahead whose token the host
    /// has not fed yet counts with the calls to come.
    pub fn take_stats(&mut self) -> TokenStats {
        let mut out = std::mem::take(&mut self.stats);
        if let Some((_, bytes)) = self.ahead_call {
            out.calls = out.calls.saturating_sub(1);
            out.bytes_vram = out.bytes_vram.saturating_sub(bytes);
            self.stats.calls = 1;
            self.stats.bytes_vram = bytes;
        }
        out
    }

    /// The library context's streaming statistics.
    pub fn library_stats(&self) -> llmstream::Stats {
        self.ctx.stats()
    }

    /// Activation quantization for weight type `ty`, skipped when `x` already is.
    fn quantize(&mut self, x: DevSpan, ty: GgmlType, cols: usize, n: usize) -> Result<()> {
        let vdt = quant::vec_dot_type(ty).map_err(|e| InferError::Quant(e.to_string()))?;
        let key = (x.ptr(), vdt, cols, n);
        if self.memo == Some(key) {
            return Ok(());
        }
        let bytes = gq::activation_row_bytes(ty, cols)? * n;
        gq::quantize(
            &self.gpu,
            ty,
            x.sub(0, f32_bytes(cols * n))?,
            cols,
            n,
            self.acts.xq.sub(0, bytes)?,
        )?;
        self.memo = Some(key);
        Ok(())
    }

    /// One layer with the general launches (any weight type, any number of tokens).
    #[allow(clippy::too_many_arguments)] // the layer's weights and the activations it uses
    fn plain_layer(
        &mut self,
        li: usize,
        w: DevSpan,
        m: &LayerMap,
        n: usize,
        x: DevSpan,
        Spans {
            h,
            q,
            k,
            v,
            att,
            o,
            g,
            u,
        }: Spans,
        scale: f32,
        factors: Option<DevSpan>,
    ) -> Result<()> {
        let hp = self.hp.clone();
        let (d, hd) = (hp.n_embd, hp.head_dim);
        let (qd, kvd) = (hp.n_head * hd, hp.n_head_kv * hd);
        let ws = self.acts.ws.span();
        self.memo = None;
        gops::rms_norm(
            &self.gpu,
            x,
            w.sub(m.attn_norm.off, m.attn_norm.bytes)?,
            h,
            n,
            d,
            hp.rms_eps,
        )?;
        self.matmul(w, m.wq, h, n, q)?;
        self.matmul(w, m.wk, h, n, k)?;
        self.matmul(w, m.wv, h, n, v)?;
        for (b, y, width) in [(m.bq, q, qd), (m.bk, k, kvd), (m.bv, v, kvd)] {
            if let Some(b) = b {
                gops::add_bias(&self.gpu, y, w.sub(b.off, b.bytes)?, n, width)?;
            }
        }
        for (y, heads) in [(q, hp.n_head), (k, hp.n_head_kv)] {
            gops::rope(
                &self.gpu,
                y,
                n,
                heads,
                hd,
                hp.n_rot,
                self.pos,
                hp.rope_freq_base,
                hp.rope_freq_scale,
                factors,
                hp.rope_mode,
            )?;
        }
        let (kc, vc) = self.kv_of(li)?;
        gops::kv_store(&self.gpu, k, v, kc, vc, self.cfg.n_ctx, kvd, self.pos, n)?;
        gops::attention(
            &self.gpu,
            q,
            kc,
            vc,
            att,
            ws,
            n,
            self.pos,
            hp.n_head,
            hp.n_head_kv,
            hd,
            scale,
        )?;
        self.memo = None;
        self.matmul(w, m.wo, att, n, o)?;
        gops::add(&self.gpu, x, o, n * d)?;
        self.memo = None;
        gops::rms_norm(
            &self.gpu,
            x,
            w.sub(m.ffn_norm.off, m.ffn_norm.bytes)?,
            h,
            n,
            d,
            hp.rms_eps,
        )?;
        self.matmul(w, m.gate, h, n, g)?;
        self.matmul(w, m.up, h, n, u)?;
        gops::swiglu(&self.gpu, g, u, n * hp.n_ff)?;
        self.memo = None;
        self.matmul(w, m.down, g, n, o)?;
        gops::add(&self.gpu, x, o, n * d)?;
        Ok(())
    }

    /// Layer `li` on the CPU: the hidden state (`n` rows) to the host, the layer, back.
    /// The copy stream keeps streaming the next layers meanwhile.
    fn cpu_layer(&mut self, li: usize, n: usize) -> Result<()> {
        let t = Instant::now();
        let len = f32_bytes(n * self.hp.n_embd);
        let stream = self.gpu.stream().clone();
        let x = self.acts.x.sub(0, len)?;
        // the hop buffer is kept between layers and tokens (no allocation per CPU layer); it
        // grows for a larger batch, once the last copy back from the old one is done
        if self.hop.as_ref().is_none_or(|h| h.buf.len() < len) {
            if self.hop.is_some() {
                stream.synchronize().map_err(drv("cuStreamSynchronize"))?;
            }
            self.hop = Some(Hop::new(&self.ctx, &self.gpu, len)?);
        }
        let Some(hop) = self.hop.as_ref() else {
            return Err(InferError::Gpu("no hop buffer".into()));
        };
        let Some(hp) = hop.buf.host_ptr() else {
            return Err(InferError::Gpu("hop buffer without host memory".into()));
        };
        // the raw copies below need the context current on this thread
        self.gpu
            .context()
            .bind_to_thread()
            .map_err(drv("cuCtxSetCurrent"))?;
        // SAFETY: `dev..dev + len` is the device mapping of the hop's page-locked buffer (at
        // least `len` bytes), owned by the engine, whose drop waits for the stream.
        let mapped = hop.dev.map(|dev| unsafe { DevSpan::from_raw(dev, len) });
        if let Some(m) = mapped {
            gops::copy_words(&self.gpu, m, x, len / 4)?;
        } else {
            // SAFETY: `hp..hp + len` is the hop's page-locked buffer (at least `len` bytes),
            // owned by the engine, whose drop waits for the stream; the host touches it only
            // between `ready` (below, after every earlier copy out of it on this stream) and the
            // copy back enqueued after it, and `x` holds `len` bytes.
            unsafe {
                let host = std::slice::from_raw_parts_mut(hp, len);
                cudarc::driver::result::memcpy_dtoh_async(host, x.ptr(), stream.cu_stream())
                    .map_err(drv("cuMemcpyDtoHAsync"))?;
            }
        }
        // the host sleeps (a blocking-sync event) until the GPU has produced x
        hop.ready.record(&stream).map_err(drv("cuEventRecord"))?;
        hop.ready.synchronize().map_err(drv("cuEventSynchronize"))?;
        self.stats.cpu_wait_ms += t.elapsed().as_secs_f64() * 1e3;
        self.host_x.clear();
        hop.buf.with_host_slice(|b| {
            self.host_x.extend(
                b[..len]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        })?;
        let Some(cpu) = self.cpu.as_mut() else {
            return Err(InferError::Gpu(format!("layer {li}: no CPU layers loaded")));
        };
        let run = Instant::now();
        cpu.run(li, &mut self.host_x, self.pos, n)?;
        self.stats.cpu_run_ms += run.elapsed().as_secs_f64() * 1e3;
        self.stats.bytes_cpu += cpu.layer_bytes(li).unwrap_or(0);
        // SAFETY: as above: the copy out of the buffer completed (`ready`), the copy back is
        // enqueued on the stream before anything else can touch the buffer.
        unsafe {
            let host = std::slice::from_raw_parts_mut(hp, len);
            for (c, v) in host.chunks_exact_mut(4).zip(&self.host_x) {
                c.copy_from_slice(&v.to_le_bytes());
            }
            if mapped.is_none() {
                cudarc::driver::result::memcpy_htod_async(x.ptr(), &*host, stream.cu_stream())
                    .map_err(drv("cuMemcpyHtoDAsync"))?;
            }
        }
        if let Some(m) = mapped {
            // the host's writes above are done before the launch that reads them
            gops::copy_words(&self.gpu, x, m, len / 4)?;
        }
        self.stats.cpu_ms += t.elapsed().as_secs_f64() * 1e3;
        Ok(())
    }

    /// Layer `li` on the GPU with weights `w`: the fused decode path when it applies, else the
    /// general launches.
    #[allow(clippy::too_many_arguments)] // the layer's weights and the activations it uses
    fn layer(
        &mut self,
        li: usize,
        w: DevSpan,
        m: &LayerMap,
        n: usize,
        x: DevSpan,
        spans: Spans,
        scale: f32,
        factors: Option<DevSpan>,
    ) -> Result<()> {
        if n == 1 && self.fusable(m) {
            self.fused_layer(li, w, m, x, spans, scale, factors)
        } else {
            self.plain_layer(li, w, m, n, x, spans, scale, factors)
        }
    }

    /// The activation buffers for a call of `n` tokens.
    fn spans(&self, n: usize) -> Result<Spans> {
        let hp = &self.hp;
        let (d, qd, kvd) = (
            hp.n_embd,
            hp.n_head * hp.head_dim,
            hp.n_head_kv * hp.head_dim,
        );
        let a = &self.acts;
        Ok(Spans {
            h: a.h.sub(0, f32_bytes(n * d))?,
            q: a.q.sub(0, f32_bytes(n * qd))?,
            k: a.k.sub(0, f32_bytes(n * kvd))?,
            v: a.v.sub(0, f32_bytes(n * kvd))?,
            att: a.att.sub(0, f32_bytes(n * qd))?,
            o: a.o.sub(0, f32_bytes(n * d))?,
            g: a.g.sub(0, f32_bytes(n * hp.n_ff))?,
            u: a.u.sub(0, f32_bytes(n * hp.n_ff))?,
        })
    }

    /// The KV cache of GPU layer `li`.
    fn kv_of(&self, li: usize) -> Result<(DevSpan, DevSpan)> {
        match &self.kv[li] {
            Some((k, v)) => Ok((k.span(), v.span())),
            None => Err(InferError::Gpu(format!(
                "layer {li} has no KV cache on the GPU"
            ))),
        }
    }

    /// Layers that decode with the fused kernels (see [`GpuConfig::fused`]).
    pub fn fused_layers(&self) -> usize {
        self.maps.iter().filter(|m| self.fusable(m)).count()
    }

    /// Whether layer `m` can take the fused decode path.
    fn fusable(&self, m: &LayerMap) -> bool {
        let hp = &self.hp;
        // the slot is 256-byte aligned: a weight is as aligned as its offset in the layer
        let q8k = |t: &TRef| fast::supports(t.ty, t.cols) && fast::aligned(t.ty, t.off as u64);
        self.cfg.fused
            && [m.wq, m.wk, m.wv, m.wo, m.gate, m.up, m.down]
                .iter()
                .all(q8k)
            && m.wq.cols == hp.n_embd
            && m.wk.cols == hp.n_embd
            && m.wv.cols == hp.n_embd
            && m.gate.cols == hp.n_embd
            && m.up.cols == hp.n_embd
            && m.gate.rows == m.up.rows
            && m.down.cols == m.gate.rows
            && m.wo.rows == hp.n_embd
            && m.wo.cols == hp.n_head * hp.head_dim
            && m.down.rows == hp.n_embd
            && hp.n_rot > 0
    }

    /// One decode layer with the fused kernels (see [`GpuConfig::fused`]).
    #[allow(clippy::too_many_arguments)] // the layer's weights and the activations it uses
    fn fused_layer(
        &mut self,
        li: usize,
        w: DevSpan,
        m: &LayerMap,
        x: DevSpan,
        Spans {
            h, q, k, v, att, g, ..
        }: Spans,
        scale: f32,
        factors: Option<DevSpan>,
    ) -> Result<()> {
        let hp = self.hp.clone();
        let (d, hd) = (hp.n_embd, hp.head_dim);
        let xq = self.acts.xq.span();
        self.memo = None;
        let prod = |t: TRef, y: DevSpan, accumulate: bool| -> Result<fast::Product> {
            Ok(fast::Product {
                ty: t.ty,
                w: w.sub(t.off, t.bytes)?,
                rows: t.rows,
                y: y.sub(0, f32_bytes(t.rows))?,
                accumulate,
            })
        };
        let qkv = [
            prod(m.wq, q, false)?,
            prod(m.wk, k, false)?,
            prod(m.wv, v, false)?,
        ];
        let (kc, vc) = self.kv_of(li)?;
        // RoPE and the cache store in the products' epilogue: normal mode (adjacent pairs), no
        // biases to add between them
        let rope = (hp.rope_mode == RopeMode::Normal
            && [m.bq, m.bk, m.bv].iter().all(Option::is_none)
            && m.wq.rows == hp.n_head * hd
            && m.wk.rows == hp.n_head_kv * hd
            && m.wv.rows == m.wk.rows)
            .then_some(fast::RopeKv {
                k_cache: kc,
                v_cache: vc,
                n_ctx: self.cfg.n_ctx,
                pos: self.pos,
                head_dim: hd,
                n_rot: hp.n_rot,
                base: hp.rope_freq_base,
                freq_scale: hp.rope_freq_scale,
                factors,
            });
        gops::rms_norm_q8k(
            &self.gpu,
            x,
            w.sub(m.attn_norm.off, m.attn_norm.bytes)?,
            h,
            (xq, fast::XBS_DECODE),
            1,
            d,
            hp.rms_eps,
        )?;
        fast::products(&self.gpu, xq, fast::XBS_DECODE, d, &qkv, rope.as_ref())?;
        if rope.is_none() {
            for (b, y, width) in [
                (m.bq, q, m.wq.rows),
                (m.bk, k, m.wk.rows),
                (m.bv, v, m.wv.rows),
            ] {
                if let Some(b) = b {
                    gops::add_bias(&self.gpu, y, w.sub(b.off, b.bytes)?, 1, width)?;
                }
            }
            gops::rope_kv(
                &self.gpu,
                (q, k, v),
                (kc, vc),
                self.cfg.n_ctx,
                1,
                (hp.n_head, hp.n_head_kv, hd, hp.n_rot),
                self.pos,
                (hp.rope_freq_base, hp.rope_freq_scale),
                factors,
                hp.rope_mode,
            )?;
        }
        // `x += W xq` (the output and down projections)
        let gpu = &self.gpu;
        let into_residual = |t: TRef| -> Result<()> {
            fast::matvecs(gpu, xq, fast::XBS_DECODE, t.cols, &[prod(t, x, true)?])
                .map_err(Into::into)
        };
        gops::attention_q8k(
            &self.gpu,
            (q, kc, vc, att, self.acts.ws.span()),
            self.pos,
            (hp.n_head, hp.n_head_kv, hd),
            scale,
            xq,
        )?;
        into_residual(m.wo)?;
        self.memo = None;
        gops::rms_norm_q8k(
            &self.gpu,
            x,
            w.sub(m.ffn_norm.off, m.ffn_norm.bytes)?,
            h,
            (xq, fast::XBS_DECODE),
            1,
            d,
            hp.rms_eps,
        )?;
        fast::gate_up(
            &self.gpu,
            xq,
            fast::XBS_DECODE,
            d,
            (m.gate.ty, w.sub(m.gate.off, m.gate.bytes)?),
            (m.up.ty, w.sub(m.up.off, m.up.bytes)?),
            m.gate.rows,
            g.sub(0, f32_bytes(m.gate.rows))?,
        )?;
        fast::quantize_decode(gpu, g.sub(0, f32_bytes(m.down.cols))?, m.down.cols, xq)?;
        into_residual(m.down)?;
        self.memo = None;
        Ok(())
    }

    fn matmul(&mut self, w: DevSpan, t: TRef, x: DevSpan, n: usize, y: DevSpan) -> Result<()> {
        self.quantize(x, t.ty, t.cols, n)?;
        let bytes = gq::activation_row_bytes(t.ty, t.cols)? * n;
        gq::matvec(
            &self.gpu,
            t.ty,
            w.sub(t.off, t.bytes)?,
            t.rows,
            t.cols,
            self.acts.xq.sub(0, bytes)?,
            n,
            y.sub(0, f32_bytes(t.rows * n))?,
        )?;
        Ok(())
    }

    /// Issue streamed transfers up to `upto` (global streamed index, inclusive); with
    /// `ram_only`, stop before the first storage layer (its read makes the host wait for the
    /// slot).
    fn issue(&mut self, upto: u64, ram_only: bool) -> Result<()> {
        let Some(s) = self.streamer.as_mut() else {
            return Ok(());
        };
        let nslots = s.slots.len() as u64;
        let per_token = s.order.len() as u64;
        while s.issued <= upto {
            let j = s.issued;
            let slot = usize::try_from(j % nslots).unwrap_or(0);
            let layer = s.order[usize::try_from(j % per_token).unwrap_or(0)];
            if ram_only && self.plan.tiers[layer] != Tier::Ram {
                break;
            }
            match self.plan.tiers[layer] {
                Tier::Ram => {
                    if s.free_recorded[slot] {
                        s.copy
                            .wait(&s.free[slot])
                            .map_err(drv("cuStreamWaitEvent"))?;
                    }
                    let Some(src) = self.pinned[layer].as_ref() else {
                        return Err(InferError::Gpu(format!("layer {layer}: no pinned copy")));
                    };
                    let Some(hp) = src.host_ptr() else {
                        return Err(InferError::Gpu("pinned buffer without host memory".into()));
                    };
                    let len = src.len();
                    // SAFETY: `hp..hp+len` is the pinned buffer of this layer, owned by the
                    // engine, never written after load; the slot holds at least `len` bytes
                    // (slots are sized for the largest layer); the copy is ordered after the
                    // last reader of the slot by the wait above.
                    unsafe {
                        let host = std::slice::from_raw_parts(hp.cast_const(), len);
                        cudarc::driver::result::memcpy_htod_async(
                            s.slots[slot].span().ptr(),
                            host,
                            s.copy.cu_stream(),
                        )
                        .map_err(drv("cuMemcpyHtoDAsync"))?;
                    }
                    s.copied[slot]
                        .record(&s.copy)
                        .map_err(drv("cuEventRecord"))?;
                    self.stats.bytes_ram += len as u64;
                }
                Tier::Storage => {
                    let t = Instant::now();
                    if s.free_recorded[slot] {
                        s.free[slot]
                            .synchronize()
                            .map_err(drv("cuEventSynchronize"))?;
                    }
                    let h = self
                        .model
                        .load_layer_async(&self.ctx, layer, &s.slot_lib[slot], 0)?;
                    s.pending[slot] = Some(h);
                    self.stats.wait_storage_ms += t.elapsed().as_secs_f64() * 1e3;
                    self.stats.bytes_storage += self.model.layer_bytes(layer)?;
                }
                Tier::Vram | Tier::Cpu => {}
            }
            s.issued += 1;
        }
        Ok(())
    }

    /// Weights of layer `i`, waiting for its transfer when it is streamed.
    fn layer_span(&mut self, i: usize) -> Result<(DevSpan, Option<usize>)> {
        if let Some(b) = &self.resident[i] {
            return Ok((b.span(), None));
        }
        let depth = self.cfg.depth as u64;
        let j = match &self.streamer {
            Some(s) => s.consumed,
            None => return Err(InferError::Gpu(format!("layer {i} has no weights"))),
        };
        self.issue(j + depth, false)?;
        let compute = self.gpu.stream().clone();
        let gctx = self.gpu.context().clone();
        let Some(s) = self.streamer.as_mut() else {
            return Err(InferError::Gpu("no streamer".into()));
        };
        let slot = usize::try_from(j % s.slots.len() as u64).unwrap_or(0);
        match self.plan.tiers[i] {
            Tier::Ram => {
                if s.timing_used == s.timing.len() {
                    let timed = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
                    let a = gctx.new_event(timed).map_err(drv("cuEventCreate"))?;
                    let b = gctx.new_event(timed).map_err(drv("cuEventCreate"))?;
                    s.timing.push((a, b));
                }
                let (a, b) = &s.timing[s.timing_used];
                s.timing_used += 1;
                a.record(&compute).map_err(drv("cuEventRecord"))?;
                compute
                    .wait(&s.copied[slot])
                    .map_err(drv("cuStreamWaitEvent"))?;
                b.record(&compute).map_err(drv("cuEventRecord"))?;
            }
            Tier::Storage => {
                let t = Instant::now();
                if let Some(h) = s.pending[slot].take() {
                    h.wait()?;
                }
                self.stats.wait_storage_ms += t.elapsed().as_secs_f64() * 1e3;
            }
            Tier::Vram | Tier::Cpu => {}
        }
        s.consumed += 1;
        Ok((s.slots[slot].span(), Some(slot)))
    }

    /// The streamed layer in `slot` has its kernels enqueued: record the slot's free event and
    /// queue the next pinned-RAM copy into it at once, so the link keeps copying while the host
    /// is busy (a CPU layer of a hybrid split) instead of waiting for the next `layer_span`.
    fn release(&mut self, slot: Option<usize>) -> Result<()> {
        let Some(slot) = slot else {
            return Ok(());
        };
        let depth = self.cfg.depth as u64;
        let consumed = match self.streamer.as_mut() {
            Some(s) => {
                s.free[slot]
                    .record(self.gpu.stream())
                    .map_err(drv("cuEventRecord"))?;
                s.free_recorded[slot] = true;
                s.consumed
            }
            None => return Ok(()),
        };
        // streamed layers `consumed - 1` (just released) and before are done with their slots,
        // so the `depth + 1` slots hold copies up to `consumed + depth`
        self.issue(consumed + depth, true)
    }

    /// Run `tokens` at the next positions; the logits of the last one stay on the GPU.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<()> {
        if let Some((id, _)) = self.ahead_call {
            if tokens == [id] {
                // the call enqueued ahead ran this token already (next_token_ahead)
                self.ahead_call = None;
                return Ok(());
            }
            self.cancel_ahead();
        }
        let n = tokens.len();
        if n == 0 {
            return Err(InferError::Invalid("no tokens to run".into()));
        }
        if n > self.cfg.max_batch {
            for c in tokens.chunks(self.cfg.max_batch) {
                self.forward(c)?;
            }
            return Ok(());
        }
        if self.pos + n > self.cfg.n_ctx {
            return Err(InferError::Invalid(format!(
                "context full: {} + {n} tokens exceed {} positions",
                self.pos, self.cfg.n_ctx
            )));
        }
        for &t in tokens {
            if t as usize >= self.embd_ref.rows {
                return Err(InferError::Invalid(format!(
                    "token id {t} outside the vocabulary ({})",
                    self.embd_ref.rows
                )));
            }
        }
        self.call(Some(tokens), n)
    }

    /// One forward call of `n` tokens: `tokens`, or (`None`, n = 1) the token the GPU picked
    /// last, looked up on the GPU (the device table must exist: [`Self::can_run_ahead`]).
    fn call(&mut self, tokens: Option<&[u32]>, n: usize) -> Result<()> {
        let stream = self.gpu.stream().clone();
        let slot = self.timing_at;
        if self.timing_ev[slot].2 != Timing::Idle {
            self.timing_ev[slot]
                .1
                .synchronize()
                .map_err(drv("cuEventSynchronize"))?;
            self.collect_timing()?;
        }
        self.timing_ev[slot]
            .0
            .record(&stream)
            .map_err(drv("cuEventRecord"))?;
        if let Some(s) = self.streamer.as_mut() {
            s.timing_used = 0;
        }
        let hp = self.hp.clone();
        let (d, hd) = (hp.n_embd, hp.head_dim);
        let vocab = self.n_vocab();
        // Embeddings: on the GPU from a device table (the tied output matrix, or the untied
        // table when it was put in VRAM), else on the CPU.
        let x = self.acts.x.sub(0, f32_bytes(n * d))?;
        let device_table = self.device_table();
        if let (Some(tokens), Embedding::Host(table)) = (tokens, &self.embd) {
            let e = self.embd_ref;
            let row = e.bytes / e.rows;
            let mut host = vec![0f32; n * d];
            for (i, &t) in tokens.iter().enumerate() {
                let t = t as usize;
                quant::dequantize(
                    e.ty,
                    &table[t * row..(t + 1) * row],
                    &mut host[i * d..(i + 1) * d],
                )
                .map_err(|er| InferError::Quant(er.to_string()))?;
            }
            let bytes: Vec<u8> = host.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.acts.x.write(&stream, 0, &bytes)?;
        } else {
            let Some(table) = device_table else {
                return Err(InferError::Gpu("no embedding table on the GPU".into()));
            };
            let ids = match tokens {
                Some(tokens) => {
                    let ids: Vec<u8> = tokens.iter().flat_map(|&t| t.to_le_bytes()).collect();
                    self.acts.ids.write(&stream, 0, &ids)?;
                    self.acts.ids.sub(0, 4 * n)?
                }
                None => self.acts.out_id.span(),
            };
            let e = self.embd_ref;
            gq::get_rows(&self.gpu, e.ty, table, e.rows, e.cols, ids, n, x)?;
        }
        let spans = self.spans(n)?;
        #[allow(clippy::cast_precision_loss)]
        let scale = 1.0 / (hd as f32).sqrt();
        let factors = self.rope_freqs.as_ref().map(DevBuf::span);
        // An event between two layers' launches ends the programmatic dependent launch of the
        // second (its first kernel waits for the whole previous layer, then starts: ~3.5 us a
        // layer on the 8B shape). A one-token call on resident layers enqueues a few hundred
        // launches, so it is throttled once per call instead of once per layer.
        let per_layer = n > 1 || self.plan.tiers.iter().any(|&t| t != Tier::Vram);
        if !per_layer {
            self.throttle(&stream)?;
        }
        for li in 0..hp.n_layer {
            if self.plan.tiers[li] == Tier::Cpu {
                self.cpu_layer(li, n)?;
            } else {
                let (w, slot) = self.layer_span(li)?;
                let m = self.maps[li];
                if slot.is_none() {
                    self.stats.bytes_vram += self.model.layer_bytes(li)?;
                }
                self.layer(li, w, &m, n, x, spans, scale, factors)?;
                self.release(slot)?;
            }
            if per_layer {
                self.throttle(&stream)?;
            }
        }
        self.pos += n;
        self.layers_done
            .record(&stream)
            .map_err(drv("cuEventRecord"))?;
        // Output norm and logits of the last token.
        let last = x.sub(f32_bytes((n - 1) * d), f32_bytes(d))?;
        let hn = self.acts.h.sub(0, f32_bytes(d))?;
        self.memo = None;
        let out = self.output.span();
        let oref = TRef {
            off: 0,
            ..self.output_ref
        };
        let logits = self.acts.logits.sub(0, f32_bytes(vocab))?;
        if self.cfg.fused
            && fast::supports(oref.ty, oref.cols)
            && fast::aligned(oref.ty, out.ptr())
            && oref.cols == d
        {
            // the fused layer's two launches (the norm writing the decode layout, the product):
            // the bits of the general path below, one launch fewer
            let xq = self.acts.xq.span();
            gops::rms_norm_q8k(
                &self.gpu,
                last,
                self.output_norm.span(),
                hn,
                (xq, fast::XBS_DECODE),
                1,
                d,
                hp.rms_eps,
            )?;
            let head = fast::Product {
                ty: oref.ty,
                w: out.sub(0, oref.bytes)?,
                rows: oref.rows,
                y: logits,
                accumulate: false,
            };
            fast::matvecs(&self.gpu, xq, fast::XBS_DECODE, d, &[head])?;
        } else {
            gops::rms_norm(
                &self.gpu,
                last,
                self.output_norm.span(),
                hn,
                1,
                d,
                hp.rms_eps,
            )?;
            self.matmul(out, oref, hn, 1, logits)?;
        }
        self.memo = None;
        self.stats.bytes_vram += self.output_ref.bytes as u64;
        let ev = &mut self.timing_ev[slot];
        ev.1.record(&stream).map_err(drv("cuEventRecord"))?;
        ev.2 = Timing::Collect;
        self.timing_at = slot ^ 1;
        self.stats.calls += 1;
        Ok(())
    }

    /// The embedding table on the GPU: the output matrix when tied, else the untied table
    /// when [`Self::device_embedding`] put it there.
    fn device_table(&self) -> Option<DevSpan> {
        match &self.embd {
            Embedding::Tied => Some(self.output.span()),
            Embedding::Host(_) => None,
            Embedding::Device(b) => Some(b.span()),
        }
    }

    /// Move the untied embedding table to VRAM (else the CPU keeps looking rows up) when the
    /// GPU may feed itself its picked tokens ([`Self::next_token_ahead`]): every layer
    /// resident, the table's row lookup on the GPU, and room for it within the budget and
    /// the free memory with the reserve kept. The host copy is dropped then.
    fn device_embedding(&mut self, fixed: u64, vram_budget: u64) -> Result<()> {
        let Embedding::Host(table) = &self.embd else {
            return Ok(());
        };
        if !self.cfg.ahead || !self.resident_only() || !gq::rows_supported(self.embd_ref.ty) {
            return Ok(());
        }
        let used = fixed
            + self
                .resident
                .iter()
                .flatten()
                .map(|b| b.len() as u64)
                .sum::<u64>();
        let (free, _) = self
            .gpu
            .context()
            .mem_get_info()
            .map_err(drv("cuMemGetInfo"))?;
        let need = table.len() as u64;
        if used + need > vram_budget || (free as u64) < need + VRAM_RESERVE / 4 {
            tracing::info!(
                table = need,
                "the embedding table stays on the host: the next token is fed from there"
            );
            return Ok(());
        }
        // the copy is done with the host table before it is dropped
        match DevBuf::from_host(self.gpu.stream(), table).and_then(|b| {
            self.gpu.sync()?;
            Ok(b)
        }) {
            Ok(b) => self.embd = Embedding::Device(b),
            Err(e) => tracing::info!("the embedding table stays on the host: {e}"),
        }
        Ok(())
    }

    /// Whether every layer is in VRAM and computed there (no streaming, no CPU layers).
    fn resident_only(&self) -> bool {
        self.streamer.is_none()
            && self.cpu.is_none()
            && self.plan.tiers.iter().all(|&t| t == Tier::Vram)
    }

    /// Whether [`Self::next_token_ahead`] can enqueue the next call before the host reads the
    /// token: resident layers, the embedding table on the GPU with a row for every id, a free
    /// position, no call ahead already.
    pub fn can_run_ahead(&self) -> bool {
        self.cfg.ahead
            && self.ahead_call.is_none()
            // every id the pick can write has a row
            && self.n_vocab() <= self.embd_ref.rows
            && self.pos < self.cfg.n_ctx
            && self.resident_only()
            && self.device_table().is_some()
    }

    /// Undo the call enqueued ahead whose token the host did not feed (the generation ended
    /// there, or other tokens came): its position is free again, its statistics dropped.
    pub fn cancel_ahead(&mut self) {
        let Some((_, bytes)) = self.ahead_call.take() else {
            return;
        };
        // the call's time is not a fed token's (it was the last call)
        self.timing_ev[self.timing_at ^ 1].2 = Timing::Drop;
        self.pos -= 1;
        self.stats.calls = self.stats.calls.saturating_sub(1);
        self.stats.bytes_vram = self.stats.bytes_vram.saturating_sub(bytes);
    }

    /// A throttle point: the host sleeps until the GPU has passed the one `AHEAD` points ago,
    /// then marks this one.
    fn throttle(&mut self, stream: &Arc<CudaStream>) -> Result<()> {
        let nth = self.throttle_points;
        let ring = usize::try_from(nth % AHEAD as u64).unwrap_or(0);
        if nth >= AHEAD as u64 {
            self.ahead[ring]
                .synchronize()
                .map_err(drv("cuEventSynchronize"))?;
        }
        self.ahead[ring]
            .record(stream)
            .map_err(drv("cuEventRecord"))?;
        self.throttle_points += 1;
        Ok(())
    }

    /// Greedy (or sampled, when `sample` is given with a uniform number) next token from the
    /// logits of the last forward call. Synchronises with the GPU.
    pub fn next_token(&mut self, sample: Option<(&gops::GpuSampleParams, f32)>) -> Result<u32> {
        self.pick_on_gpu(sample)?;
        let id = self.read_id()?;
        self.collect_timing()?;
        Ok(id)
    }

    /// As [`Self::next_token`], and where [`Self::can_run_ahead`] allows, the call that feeds
    /// the picked token is enqueued before the host reads it, looking the token up on the GPU:
    /// the GPU goes on to the next token while the host wakes, and the host's next
    /// `forward(&[id])` of that token stands for the call (another call undoes it first,
    /// [`Self::cancel_ahead`]). `pos` counts the call once it is fed; `logits` are its.
    pub fn next_token_ahead(
        &mut self,
        sample: Option<(&gops::GpuSampleParams, f32)>,
    ) -> Result<u32> {
        if !self.can_run_ahead() {
            return self.next_token(sample);
        }
        self.pick_on_gpu(sample)?;
        let stream = self.gpu.stream().clone();
        self.picked.record(&stream).map_err(drv("cuEventRecord"))?;
        self.id_stream
            .wait(&self.picked)
            .map_err(drv("cuStreamWaitEvent"))?;
        // out_id is not written again before the host has read it: the next pick is enqueued
        // after that
        self.copy_id(&self.id_stream, &self.id_ready)?;
        let before = self.stats.bytes_vram;
        self.call(None, 1)?;
        // the host sleeps: waking late costs the GPU nothing now
        self.id_ready
            .synchronize()
            .map_err(drv("cuEventSynchronize"))?;
        let id = self.id_from_host()?;
        self.ahead_call = Some((id, self.stats.bytes_vram - before));
        self.collect_timing()?;
        Ok(id)
    }

    /// The argmax (or the sample from a uniform number) of the last call's logits, into
    /// `out_id`.
    fn pick_on_gpu(&mut self, sample: Option<(&gops::GpuSampleParams, f32)>) -> Result<()> {
        let vocab = self.n_vocab();
        let logits = self.acts.logits.sub(0, f32_bytes(vocab))?;
        match sample {
            None => gops::argmax(&self.gpu, logits, vocab, self.acts.out_id.span())?,
            Some((p, u)) => gops::sample(
                &self.gpu,
                logits,
                vocab,
                p,
                u,
                self.acts.sample_ws.span(),
                self.acts.out_id.span(),
            )?,
        }
        Ok(())
    }

    /// The id `out_id` holds once the stream gets there: copied to page-locked memory; the host
    /// sleeps until the layers are done, then polls for the copy (waking from a sleep takes
    /// ~80 us, the GPU idle meanwhile: 2.5% of an 8B token). Polling is bounded: after
    /// [`SPIN_LIMIT`] it sleeps.
    fn read_id(&mut self) -> Result<u32> {
        self.copy_id(self.gpu.stream(), &self.copied)?;
        self.layers_done
            .synchronize()
            .map_err(drv("cuEventSynchronize"))?;
        let t = Instant::now();
        while !self.copied.try_is_complete().map_err(drv("cuEventQuery"))? {
            if t.elapsed() > SPIN_LIMIT {
                self.copied
                    .synchronize()
                    .map_err(drv("cuEventSynchronize"))?;
                break;
            }
            std::hint::spin_loop();
        }
        self.id_from_host()
    }

    /// Enqueue the copy of `out_id` to the page-locked `id_host` on `stream`, then `done`.
    fn copy_id(&self, stream: &Arc<CudaStream>, done: &CudaEvent) -> Result<()> {
        self.gpu
            .context()
            .bind_to_thread()
            .map_err(drv("cuCtxSetCurrent"))?;
        let Some(hp) = self.id_host.host_ptr() else {
            return Err(InferError::Gpu("id buffer without host memory".into()));
        };
        // SAFETY: `hp..hp + 4` lies in the engine's page-locked buffer (4096 bytes), which the
        // host reads only after `done` says the copy is done (id_from_host's callers wait for
        // it); out_id holds 4 bytes.
        unsafe {
            let host = std::slice::from_raw_parts_mut(hp, 4);
            cudarc::driver::result::memcpy_dtoh_async(
                host,
                self.acts.out_id.span().ptr(),
                stream.cu_stream(),
            )
            .map_err(drv("cuMemcpyDtoHAsync"))?;
        }
        done.record(stream).map_err(drv("cuEventRecord"))
    }

    /// The id the last [`Self::copy_id`] brought, once its event is done.
    fn id_from_host(&self) -> Result<u32> {
        let mut id = [0u8; 4];
        self.id_host
            .with_host_slice(|b| id.copy_from_slice(&b[..4]))?;
        Ok(u32::from_le_bytes(id))
    }

    /// Logits of the last forward call, copied to the host (tests, comparisons).
    pub fn logits(&mut self) -> Result<Vec<f32>> {
        let v = self
            .acts
            .logits
            .read_f32(self.gpu.stream(), self.n_vocab())?;
        self.collect_timing()?;
        Ok(v)
    }

    /// Apply the repeat penalty over `history` to the logits on the GPU.
    pub fn repeat_penalty(&mut self, history: &[u32], penalty: f32) -> Result<()> {
        if history.is_empty() || (penalty - 1.0).abs() < f32::EPSILON {
            return Ok(());
        }
        let n = history.len().min(self.cfg.max_batch);
        let tail = &history[history.len() - n..];
        let ids: Vec<u8> = tail.iter().flat_map(|&t| t.to_le_bytes()).collect();
        let stream = self.gpu.stream().clone();
        self.acts.ids.write(&stream, 0, &ids)?;
        let vocab = self.n_vocab();
        gops::repeat_penalty(
            &self.gpu,
            self.acts.logits.sub(0, f32_bytes(vocab))?,
            vocab,
            self.acts.ids.sub(0, 4 * n)?,
            n,
            penalty,
        )?;
        Ok(())
    }

    /// After a synchronisation: add the call's GPU time and H2D waits to the statistics.
    fn collect_timing(&mut self) -> Result<()> {
        for (start, end, timing) in &mut self.timing_ev {
            if *timing != Timing::Idle && end.try_is_complete().map_err(drv("cuEventQuery"))? {
                if *timing == Timing::Collect {
                    if let Ok(ms) = start.elapsed_ms(end) {
                        self.stats.gpu_ms += f64::from(ms);
                    }
                }
                *timing = Timing::Idle;
            }
        }
        if let Some(s) = self.streamer.as_mut() {
            for (a, b) in &s.timing[..s.timing_used] {
                if let Ok(ms) = a.elapsed_ms(b) {
                    self.stats.wait_h2d_ms += f64::from(ms);
                }
            }
            s.timing_used = 0;
        }
        Ok(())
    }
}
