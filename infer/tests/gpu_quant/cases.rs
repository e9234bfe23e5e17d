//! Test data and CPU references for the CUDA quant kernels: random weights of every type
//! (random scales too), activations over a wide range of magnitudes, the CPU engine's results,
//! and the tolerance a matvec result is held to.

use llmstream::gguf::GgmlType;
use llmstream_infer::quant::{
    self, activation_bytes, blocks, dequantize, quantize_activations, vec_dot_type, QMatrix,
};

/// The weight types with a matvec kernel.
pub const TYPES: [GgmlType; 11] = quant::bench::WEIGHT_TYPES;

/// xorshift64*: deterministic and seedable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        let bits = u32::try_from(self.next() >> 41).unwrap();
        f32::from_bits(0x3F80_0000 | bits) - 1.0
    }
    /// Uniform in [-1, 1).
    pub fn signed(&mut self) -> f32 {
        2.0 * self.unit() - 1.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn f16_bits(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

/// A random scale in about [1e-3, 1e-1], either sign for `signed`.
fn scale(rng: &mut Rng, signed: bool) -> f32 {
    let m = 10f32.powf(-3.0 + 2.0 * rng.unit());
    if signed && rng.below(4) == 0 {
        -m
    } else {
        m
    }
}

/// Values a lookup must carry through bit for bit: zero, -0, subnormal, infinities, NaNs with
/// payloads.
const SPECIAL_F16: [u16; 8] = [
    0x0000, 0x8000, 0x0001, 0x03ff, 0x7c00, 0xfc00, 0x7e01, 0xfd55,
];

/// `rows x cols` weights of type `ty`: random quant bits and random scales. With `special`,
/// some scales are zero, subnormal, infinite or NaN (for bit-exact lookups, not matvec).
pub fn weights(ty: GgmlType, rows: usize, cols: usize, seed: u64, special: bool) -> Vec<u8> {
    let block = usize::try_from(ty.block_size()).unwrap();
    let size = usize::try_from(ty.type_size()).unwrap();
    assert_eq!(cols % block, 0);
    let mut rng = Rng::new(seed);
    let n = rows * cols / block * size;
    let mut data: Vec<u8> = (0..n).map(|_| rng.next().to_le_bytes()[3]).collect();
    let special_f16 = |rng: &mut Rng, signed: bool| -> [u8; 2] {
        if special && rng.below(3) == 0 {
            let i = usize::try_from(rng.below(SPECIAL_F16.len() as u64)).unwrap();
            SPECIAL_F16[i].to_le_bytes()
        } else {
            f16_bits(scale(rng, signed))
        }
    };
    for b in data.chunks_exact_mut(size) {
        match ty {
            GgmlType::F32 => {
                let v = if special && rng.below(5) == 0 {
                    let s = [
                        0.0f32,
                        -0.0,
                        f32::INFINITY,
                        f32::from_bits(0x7fa0_0001),
                        1e-42,
                    ];
                    s[usize::try_from(rng.below(5)).unwrap()]
                } else {
                    rng.signed()
                };
                b.copy_from_slice(&v.to_le_bytes());
            }
            GgmlType::F16 => {
                let v = special_f16(&mut rng, true);
                let v = if special { v } else { f16_bits(rng.signed()) };
                b.copy_from_slice(&v);
            }
            GgmlType::BF16 => {
                let bits = if special && rng.below(5) == 0 {
                    [0x7f81u16, 0xff80, 0x0001, 0x8000][usize::try_from(rng.below(4)).unwrap()]
                } else {
                    half::bf16::from_f32(rng.signed()).to_bits()
                };
                b.copy_from_slice(&bits.to_le_bytes());
            }
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
                let v = special_f16(&mut rng, true);
                b[..2].copy_from_slice(&v);
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                let (d, m) = (special_f16(&mut rng, false), special_f16(&mut rng, true));
                b[..2].copy_from_slice(&d);
                b[2..4].copy_from_slice(&m);
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let (d, m) = (special_f16(&mut rng, false), special_f16(&mut rng, false));
                b[blocks::q4_k::D..blocks::q4_k::D + 2].copy_from_slice(&d);
                b[blocks::q4_k::DMIN..blocks::q4_k::DMIN + 2].copy_from_slice(&m);
            }
            GgmlType::Q6_K => {
                let v = special_f16(&mut rng, true);
                b[blocks::q6_k::D..blocks::q6_k::D + 2].copy_from_slice(&v);
            }
            _ => panic!("no weights for {ty:?}"),
        }
    }
    data
}

/// `n_tok x cols` activations: per 32-element group one of several regimes (ordinary values,
/// large, tiny, zeros, all negative, one outlier), so that every quantization path is taken.
pub fn activations(n_tok: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed ^ 0xA5A5);
    let mut x = vec![0.0f32; n_tok * cols];
    for g in x.chunks_mut(32) {
        let regime = rng.below(8);
        for v in g.iter_mut() {
            let u = rng.signed();
            *v = match regime {
                0..=2 => u,
                3 => u * 1e3,
                4 => u * 1e-3,
                5 => 0.0,
                6 => -u.abs() - 0.25,
                _ => u * 1e-6,
            };
        }
        if regime == 7 {
            let i = usize::try_from(rng.below(g.len() as u64)).unwrap();
            g[i] = 50.0;
        }
    }
    x
}

/// Activations for byte-exact quantization only: NaNs (with payloads), infinities, -0,
/// subnormals, values around the f16 range limits, ties of the rounding, huge values.
pub fn special_activations(n_tok: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed ^ 0x5EC1A1);
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001), // signalling NaN
        f32::from_bits(0xffc1_2345),
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        1e-40,
        -1e-45,
        65504.0,
        65520.0,
        -65519.0,
        1e30,
        -3e38,
        0.5,
        2.5,
        -1.5,
        127.0,
        6e-8,
    ];
    let mut x = activations(n_tok, cols, seed);
    for g in x.chunks_mut(32) {
        match rng.below(6) {
            0 => {
                // a few specials in an ordinary block
                for _ in 0..3 {
                    let i = usize::try_from(rng.below(g.len() as u64)).unwrap();
                    let s = usize::try_from(rng.below(specials.len() as u64)).unwrap();
                    g[i] = specials[s];
                }
            }
            1 => {
                // a whole block of tiny values: the scales overflow to infinity
                for v in g.iter_mut() {
                    *v = f32::from_bits(u32::try_from(rng.below(64)).unwrap()) * rng.signed();
                }
            }
            2 => {
                // NaN last in its block (ggml's max fold returns it)
                if let Some(v) = g.last_mut() {
                    *v = f32::NAN;
                }
            }
            _ => {}
        }
    }
    x
}

/// The CPU engine's quantized activations, `n_tok` rows.
pub fn cpu_quantize(wty: GgmlType, x: &[f32], cols: usize) -> Vec<u8> {
    let vty = vec_dot_type(wty).unwrap();
    let row = activation_bytes(vty, cols).unwrap();
    let n_tok = x.len() / cols;
    let mut out = vec![0u8; n_tok * row];
    for (xr, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(row)) {
        quantize_activations(vty, xr, o).unwrap();
    }
    out
}

/// The CPU engine's product (`quant::matvec` for one row, `quant::matmul` for more),
/// `[n_tok][rows]`.
pub fn cpu_matmul(ty: GgmlType, rows: usize, cols: usize, w: &[u8], x: &[f32]) -> Vec<f32> {
    let m = QMatrix::new(ty, rows, cols, w).unwrap();
    let n_tok = x.len() / cols;
    let mut y = vec![0.0f32; n_tok * rows];
    if n_tok == 1 {
        quant::matvec(&m, x, &mut y).unwrap();
    } else {
        quant::matmul(&m, x, n_tok, &mut y).unwrap();
    }
    y
}

/// The block bytes holding quant bits (not scales) of type `ty`.
fn quant_ranges(ty: GgmlType) -> &'static [(usize, usize)] {
    use blocks::*;
    match ty {
        GgmlType::Q4_0 => &[(q4_0::QS, q4_0::SIZE)],
        GgmlType::Q4_1 => &[(q4_1::QS, q4_1::SIZE)],
        GgmlType::Q5_0 => &[(q5_0::QH, q5_0::SIZE)],
        GgmlType::Q5_1 => &[(q5_1::QH, q5_1::SIZE)],
        GgmlType::Q8_0 => &[(q8_0::QS, q8_0::SIZE)],
        GgmlType::Q4_K => &[(q4_k::QS, q4_k::SIZE)],
        GgmlType::Q5_K => &[(q5_k::QH, q5_k::SIZE)],
        GgmlType::Q6_K => &[(q6_k::QL, q6_k::SCALES)],
        _ => &[],
    }
}

/// Per output, the sum over the row of `(|w| + |w0|) * |x|`, where `w` are the dequantized
/// weights, `w0` the weights with their quant bits zeroed (the block minimum or offset, which
/// the kernels add separately) and `x` the dequantized activations: a bound of the magnitude
/// of every term the kernels add. Tolerance of a matvec: `TOL * bound`.
pub fn bounds(ty: GgmlType, rows: usize, cols: usize, w: &[u8], xq: &[u8]) -> Vec<f32> {
    let vty = vec_dot_type(ty).unwrap();
    let xrow = activation_bytes(vty, cols).unwrap();
    let n_tok = xq.len() / xrow;
    let rb = w.len() / rows;
    let size = usize::try_from(ty.type_size()).unwrap();
    let mut xs = vec![0.0f32; n_tok * cols];
    for (q, o) in xq.chunks_exact(xrow).zip(xs.chunks_exact_mut(cols)) {
        dequantize(vty, q, o).unwrap();
    }
    let mut out = vec![0.0f32; n_tok * rows];
    let mut wr = vec![0.0f32; cols];
    let mut w0 = vec![0.0f32; cols];
    for r in 0..rows {
        let row = &w[r * rb..(r + 1) * rb];
        dequantize(ty, row, &mut wr).unwrap();
        let mut zeroed = row.to_vec();
        for b in zeroed.chunks_exact_mut(size) {
            for &(s, e) in quant_ranges(ty) {
                b[s..e].fill(0);
            }
        }
        if quant_ranges(ty).is_empty() {
            w0.fill(0.0);
        } else {
            dequantize(ty, &zeroed, &mut w0).unwrap();
        }
        for t in 0..n_tok {
            let x = &xs[t * cols..(t + 1) * cols];
            let s: f64 = (0..cols)
                .map(|i| (f64::from(wr[i].abs()) + f64::from(w0[i].abs())) * f64::from(x[i].abs()))
                .sum();
            #[allow(clippy::cast_possible_truncation)]
            let s = s as f32;
            out[t * rows + r] = s;
        }
    }
    out
}

/// Relative tolerance of matvec results against the CPU, as a fraction of [`bounds`].
pub const TOL: f32 = 1e-5;

/// Whether `got` is within `TOL * bound` of `want` (NaNs equal NaNs, infinities must agree).
pub fn close(got: f32, want: f32, bound: f32) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return want == got;
    }
    (got - want).abs() <= TOL * bound + f32::MIN_POSITIVE
}

/// The CPU's lookup of rows `ids` (zeros for ids outside `0..rows`), `[ids.len()][cols]`.
pub fn cpu_rows(ty: GgmlType, rows: usize, cols: usize, w: &[u8], ids: &[i32]) -> Vec<f32> {
    let rb = w.len() / rows;
    let mut out = vec![0.0f32; ids.len() * cols];
    for (&id, o) in ids.iter().zip(out.chunks_exact_mut(cols)) {
        if let Ok(r) = usize::try_from(id) {
            if r < rows {
                dequantize(ty, &w[r * rb..(r + 1) * rb], o).unwrap();
            }
        }
    }
    out
}

/// Matvec shapes `(rows, cols, n_tok)` for type `ty`: odd row counts, one block, rows
/// divisible by 8 (llama.cpp's repacked path for Q4_0/Q4_K), more tokens than one launch
/// takes, and rows too long to stage whole for 8 tokens (column tiles).
pub fn shapes(ty: GgmlType) -> Vec<(usize, usize, usize)> {
    let block = usize::try_from(ty.block_size()).unwrap();
    let k = block.max(32);
    let mut v = vec![
        (37, 8 * k, 1),
        (13, 2 * k, 3),
        (64, 4 * k, 8),
        (9, 3 * k, 13),
        (3, 28672, 8),
        (2, 28672, 1),
    ];
    if block == 1 {
        v.push((5, 33, 2)); // rows not 16-byte aligned: element loads
        v.push((6, 1, 1));
    } else {
        v.push((7, block, 2)); // one block per row
    }
    v
}
