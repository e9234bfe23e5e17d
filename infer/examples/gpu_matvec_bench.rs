//! Decode matvec throughput of the CUDA kernels per weight type, against the device's
//! memory bandwidth.
//!
//! `cargo run --release -p llmstream-infer --example gpu_matvec_bench [-- launches]`
//!
//! For each weight type: a 4096 x 14336 and a 14336 x 4096 matrix (rows x cols), plus the
//! Llama 3 8B shapes for Q4_K and Q6_K (attention 4096 x 4096 and 1024 x 4096, the Q6_K output
//! matrix 128256 x 4096). Each is timed over `launches` (default 200) one-token matvecs with
//! CUDA events after a warm-up, cycling through enough copies of the matrix (256 MiB or more
//! in all) that the 50 MiB L2 cannot hold them. Printed: time per call, GB/s of weight bytes
//! read, and that as a fraction of a device-to-device memcpy of 1 GiB measured in the same run
//! (counting the bytes read and written). Quantized types also show the GB/s for 2, 4, 8 and 16
//! CTAs per SM (the default is marked *), and the time of an 8-token matvec (weights read once).
//! Without a GPU it prints `skipped: ...`.

use std::sync::Arc;

use anyhow::Context;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};
use llmstream::gguf::GgmlType;
use llmstream_infer::gpu::{quant as gq, DevBuf, Gpu, GpuError};
use llmstream_infer::quant::bench::{synthetic_weights, WEIGHT_TYPES};

fn event(ctx: &Arc<CudaContext>) -> anyhow::Result<CudaEvent> {
    ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        .context("cuEventCreate")
}

/// Milliseconds `f` takes on the stream, run `n` times after `warm` untimed runs.
fn time_ms(
    gpu: &Gpu,
    warm: usize,
    n: usize,
    mut f: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for i in 0..warm {
        f(i)?;
    }
    let (start, end) = (event(gpu.context())?, event(gpu.context())?);
    start.record(gpu.stream())?;
    for i in 0..n {
        f(i)?;
    }
    end.record(gpu.stream())?;
    let ms = start.elapsed_ms(&end)?;
    Ok(f64::from(ms))
}

/// Device-to-device copy bandwidth, GB/s of bytes read plus written.
fn memcpy_gbps(gpu: &Gpu, stream: &Arc<CudaStream>) -> anyhow::Result<f64> {
    const BYTES: usize = 1 << 30;
    let src = stream.alloc_zeros::<u8>(BYTES)?;
    let mut dst = stream.alloc_zeros::<u8>(BYTES)?;
    let ms = time_ms(gpu, 2, 10, |_| {
        stream.memcpy_dtod(&src, &mut dst).context("cuMemcpyDtoD")
    })?;
    Ok(2.0 * 10.0 * BYTES as f64 / (ms / 1e3) / 1e9)
}

struct Case {
    ty: GgmlType,
    rows: usize,
    cols: usize,
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for ty in WEIGHT_TYPES {
        v.push(Case {
            ty,
            rows: 4096,
            cols: 14336,
        });
        v.push(Case {
            ty,
            rows: 14336,
            cols: 4096,
        });
    }
    for (ty, rows, cols) in [
        (GgmlType::Q4_K, 4096, 4096),
        (GgmlType::Q4_K, 1024, 4096),
        (GgmlType::Q6_K, 4096, 4096),
        (GgmlType::Q6_K, 1024, 4096),
        (GgmlType::Q6_K, 128_256, 4096),
    ] {
        v.push(Case { ty, rows, cols });
    }
    v
}

fn main() -> anyhow::Result<()> {
    let launches: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().context("launches")?,
        None => 200,
    };
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(GpuError::Unavailable(why)) => {
            println!("skipped: {why}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let stream = Arc::clone(gpu.stream());
    let name = gpu.context().name().unwrap_or_default();
    let copy = memcpy_gbps(&gpu, &stream)?;
    println!(
        "{name} (sm_{}{}): device-to-device memcpy {copy:.0} GB/s (read + write)",
        gpu.arch().0,
        gpu.arch().1
    );
    println!("{launches} one-token matvecs per case; GB/s = weight bytes / time per call");
    println!(
        "{:<5} {:>15} {:>8} {:>9} {:>7} {:>7}   {:<36} {:>9}",
        "type",
        "rows x cols",
        "MiB",
        "us/call",
        "GB/s",
        "memcpy",
        "GB/s at 2 / 4 / 8 / 16 CTAs per SM",
        "8 tok us"
    );
    let default_ctas = gq::matvec_ctas_per_sm();
    for c in cases() {
        let w = synthetic_weights(c.ty, c.rows, c.cols)?;
        let copies = (256usize << 20).div_ceil(w.len()).clamp(1, 8);
        let mats = (0..copies)
            .map(|_| DevBuf::from_host(&stream, &w))
            .collect::<Result<Vec<_>, _>>()?;
        let x: Vec<f32> = (0..8 * c.cols)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let dx = DevBuf::from_f32(&stream, &x)?;
        let xrow = gq::activation_row_bytes(c.ty, c.cols)?;
        let xq = DevBuf::zeroed(&stream, 8 * xrow)?;
        gq::quantize(&gpu, c.ty, dx.span(), c.cols, 8, xq.span())?;
        let y = DevBuf::zeroed(&stream, 4 * 8 * c.rows)?;
        let run = |nt: usize| -> anyhow::Result<f64> {
            let ms = time_ms(&gpu, 20, launches, |i| {
                let m = &mats[i % copies];
                gq::matvec(
                    &gpu,
                    c.ty,
                    m.span(),
                    c.rows,
                    c.cols,
                    xq.span(),
                    nt,
                    y.span(),
                )?;
                Ok(())
            })?;
            Ok(ms * 1e3 / launches as f64)
        };
        let us = run(1)?;
        let gbps = w.len() as f64 / (us / 1e6) / 1e9;
        let quantized = gq::matvec_plan(&gpu, c.ty, c.rows, c.cols, 1).is_ok();
        let mut sweep = String::new();
        if quantized {
            for ctas in [2u32, 4, 8, 16] {
                gq::set_matvec_ctas_per_sm(ctas);
                let t = run(1)?;
                let mark = if ctas == default_ctas { "*" } else { "" };
                sweep.push_str(&format!("{:.0}{mark} ", w.len() as f64 / (t / 1e6) / 1e9));
            }
            gq::set_matvec_ctas_per_sm(default_ctas);
        }
        let us8 = run(8)?;
        println!(
            "{:<5} {:>15} {:>8.1} {:>9.2} {:>7.0} {:>6.0}%   {:<36} {:>9.2}",
            format!("{:?}", c.ty),
            format!("{} x {}", c.rows, c.cols),
            w.len() as f64 / f64::from(1u32 << 20),
            us,
            gbps,
            100.0 * gbps / copy,
            sweep,
            us8
        );
        gpu.sync()?;
    }
    Ok(())
}
