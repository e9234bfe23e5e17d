//! Throughput measurement of [`matvec`](super::matvec) per weight type, for
//! `llmstream bench-cpu` and the `quant_bench` example.

use std::time::{Duration, Instant};

use llmstream::gguf::GgmlType;

use super::blocks::{q4_1, q4_k, q5_1, q5_k, q6_k};
use super::dot::Backend;
use super::{layout, matvec_opts, MatOptions, QMatrix, QuantError};

// `synthetic_weights` writes Q5_1 and Q5_K scales at the Q4_1 and Q4_K offsets.
const _: () = assert!(q4_1::M == q5_1::M && q4_k::D == q5_k::D && q4_k::DMIN == q5_k::DMIN);

/// Every weight type with a fused dot product.
pub const WEIGHT_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// One measurement.
#[derive(Debug, Clone)]
pub struct BenchResult {
    pub ty: GgmlType,
    pub backend: Backend,
    pub rows: usize,
    pub cols: usize,
    /// Bytes of weights read per call.
    pub weight_bytes: usize,
    pub calls: u32,
    /// Mean wall time of one `matvec`.
    pub per_call: Duration,
    /// Fastest single call (robust against other load on the machine).
    pub best: Duration,
}

impl BenchResult {
    /// Weight bytes streamed per second in the fastest call, in GB/s (10^9).
    pub fn gbps(&self) -> f64 {
        self.gbps_in(self.best)
    }

    /// Weight bytes streamed per second over all the calls (the mean), in GB/s: what a
    /// pipeline of different matrices sees, where the fastest call overstates it.
    pub fn mean_gbps(&self) -> f64 {
        self.gbps_in(self.per_call)
    }

    /// The matrix's bytes per `d`, in GB/s (0 for a zero duration).
    fn gbps_in(&self, d: Duration) -> f64 {
        let s = d.as_secs_f64();
        if s > 0.0 {
            // usize -> f64 is exact below 2^53 bytes, far above any matrix here.
            #[allow(clippy::cast_precision_loss)]
            let b = self.weight_bytes as f64;
            b / s / 1e9
        } else {
            0.0
        }
    }
}

/// Deterministic filler (xorshift64*).
struct Filler(u64);

impl Filler {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A `rows x cols` matrix of type `ty` with pseudo-random contents and finite, small scales
/// (so that no NaN or infinity slows the float paths down).
pub fn synthetic_weights(ty: GgmlType, rows: usize, cols: usize) -> Result<Vec<u8>, QuantError> {
    let (block, size) = layout(ty, "synthetic_weights")?;
    if cols % block != 0 {
        return Err(QuantError::NotWholeBlocks {
            what: "synthetic_weights",
            ty,
            n: cols,
            block,
        });
    }
    let len = rows
        .checked_mul(cols / block)
        .and_then(|b| b.checked_mul(size))
        .ok_or(QuantError::Overflow {
            what: "synthetic_weights",
        })?;
    let mut rng = Filler(0x9E37_79B9_7F4A_7C15);
    let mut data: Vec<u8> = (0..len).map(|_| rng.next().to_le_bytes()[7]).collect();
    // a small positive f16 (about 0.0039) for every scale field, a small f32/f16/bf16 value
    // for the float types
    let small_f16 = [0x00, 0x1C];
    for b in data.chunks_exact_mut(size) {
        match ty {
            GgmlType::F32 => b.copy_from_slice(&[0, 0, 0x80, 0x3B]),
            GgmlType::F16 => b.copy_from_slice(&small_f16),
            GgmlType::BF16 => b.copy_from_slice(&[0x80, 0x3B]),
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => b[..2].copy_from_slice(&small_f16),
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                b[..2].copy_from_slice(&small_f16);
                b[q4_1::M..q4_1::M + 2].copy_from_slice(&small_f16);
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                b[q4_k::D..q4_k::D + 2].copy_from_slice(&small_f16);
                b[q4_k::DMIN..q4_k::DMIN + 2].copy_from_slice(&small_f16);
            }
            GgmlType::Q6_K => b[q6_k::D..q6_k::D + 2].copy_from_slice(&small_f16),
            _ => {}
        }
    }
    Ok(data)
}

/// Times `matvec` of a synthetic `rows x cols` matrix of type `ty` on `backend` for about
/// `budget` (at least 3 calls, after one warm-up call), on the current quant thread pool.
pub fn bench_matvec(
    ty: GgmlType,
    backend: Backend,
    rows: usize,
    cols: usize,
    budget: Duration,
) -> Result<BenchResult, QuantError> {
    let opts = MatOptions {
        backend,
        ..MatOptions::default()
    };
    bench_matvec_opts(ty, opts, rows, cols, budget)
}

/// [`bench_matvec`] with explicit [`MatOptions`]: one matrix, kept hot in the caches.
pub fn bench_matvec_opts(
    ty: GgmlType,
    opts: MatOptions,
    rows: usize,
    cols: usize,
    budget: Duration,
) -> Result<BenchResult, QuantError> {
    bench_matvec_footprint(ty, opts, rows, cols, 0, budget)
}

/// [`bench_matvec_opts`] cycling through copies of the matrix that together take at least
/// `footprint` bytes, so that each call streams its weights from memory rather than from a
/// cache that still holds them (decode reads every weight once per token). A `footprint`
/// no larger than one matrix measures the matrix kept hot in the caches.
pub fn bench_matvec_footprint(
    ty: GgmlType,
    opts: MatOptions,
    rows: usize,
    cols: usize,
    footprint: usize,
    budget: Duration,
) -> Result<BenchResult, QuantError> {
    Footprint::new(ty, rows, cols, footprint)?.measure(opts, budget)
}

/// Copies of one synthetic matrix, and an input vector, to time `matvec` over again and again
/// (on pools of several sizes, say) without building them anew ([`bench_matvec_footprint`]).
pub struct Footprint {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// Bytes of one matrix.
    one: usize,
    data: Vec<u8>,
    x: Vec<f32>,
    y: Vec<f32>,
}

impl Footprint {
    /// Copies of a synthetic `rows x cols` matrix of type `ty` that take at least `footprint`
    /// bytes together (one copy at least).
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        footprint: usize,
    ) -> Result<Self, QuantError> {
        let mut data = synthetic_weights(ty, rows, cols)?;
        let one = data.len();
        let copies = footprint.div_ceil(one.max(1)).max(1);
        data.try_reserve_exact(one.saturating_mul(copies - 1))
            .map_err(|_| QuantError::Overflow {
                what: "bench footprint",
            })?;
        for _ in 1..copies {
            data.extend_from_within(..one);
        }
        let mut rng = Filler(7);
        let x: Vec<f32> = (0..cols)
            .map(|_| {
                let r = rng.next().to_le_bytes();
                let bits = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
                f32::from_bits(0x3F80_0000 | (bits >> 9)) - 1.5
            })
            .collect();
        Ok(Footprint {
            ty,
            rows,
            cols,
            one,
            data,
            x,
            y: vec![0.0; rows],
        })
    }

    /// Times `matvec` with `opts` over the copies in turn for about `budget` (at least 3
    /// calls, after one warm-up pass over every copy), on the current quant thread pool.
    pub fn measure(
        &mut self,
        opts: MatOptions,
        budget: Duration,
    ) -> Result<BenchResult, QuantError> {
        let (ty, rows, cols) = (self.ty, self.rows, self.cols);
        let mats = self
            .data
            .chunks_exact(self.one.max(1))
            .map(|c| QMatrix::new(ty, rows, cols, c))
            .collect::<Result<Vec<_>, _>>()?;
        for w in &mats {
            matvec_opts(w, &self.x, &mut self.y, opts)?;
        }
        let start = Instant::now();
        let mut calls = 0u32;
        let mut best = Duration::MAX;
        for w in mats.iter().cycle() {
            if calls >= 3 && start.elapsed() >= budget {
                break;
            }
            let t = Instant::now();
            matvec_opts(w, &self.x, &mut self.y, opts)?;
            best = best.min(t.elapsed());
            calls += 1;
        }
        let per_call = start.elapsed() / calls;
        Ok(BenchResult {
            ty,
            backend: opts.backend,
            rows,
            cols,
            weight_bytes: self.one,
            calls,
            per_call,
            best,
        })
    }
}

/// [`bench_matvec`] for every weight type on the detected backend.
pub fn bench_quant_types(
    rows: usize,
    cols: usize,
    budget_per_type: Duration,
) -> Result<Vec<BenchResult>, QuantError> {
    WEIGHT_TYPES
        .iter()
        .map(|&ty| bench_matvec(ty, Backend::detect(), rows, cols, budget_per_type))
        .collect()
}
