//! Quantized tensor math against the reference fixtures (`tests/fixtures/quant/`, made by
//! `scripts/gen_quant_fixtures.py` from the `gguf` Python package and llama.cpp's own
//! `libggml-cpu`), plus property tests of the SIMD kernels and the matrix API.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use llmstream::gguf::GgmlType;
use llmstream_infer::quant::{
    self, activation_bytes, dequantize, dequantize_row, dot, kernel_for, llama_cpp_repacks,
    llama_cpp_tinyblas, matmul_with, matvec, matvec_opts, matvec_with, quantize_activations,
    vec_dot, vec_dot_type, Backend, MatOptions, Path, QMatrix, QuantError,
};
use proptest::prelude::*;
use serde::Deserialize;

// ------------------------------------------------------------------------------- fixtures

#[derive(Deserialize)]
struct Index {
    ggml_cpu: serde_json::Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Case {
    Dequant {
        #[serde(rename = "type")]
        ty: String,
        source: String,
        n: usize,
        data: [usize; 2],
        out: [usize; 2],
    },
    Quantize {
        #[serde(rename = "type")]
        ty: String,
        n: usize,
        x: [usize; 2],
        out: [usize; 2],
    },
    VecDot {
        #[serde(rename = "type")]
        ty: String,
        vec_dot_type: String,
        n: usize,
        source: String,
        act: String,
        w: [usize; 2],
        x: [usize; 2],
        xq: [usize; 2],
        result_bits: u32,
    },
    Repack {
        #[serde(rename = "type")]
        ty: String,
        rows: usize,
        n: usize,
        source: String,
        w: [usize; 2],
        x: [usize; 2],
        gemv: [usize; 2],
        gemm: [usize; 2],
    },
    Mulmat {
        #[serde(rename = "type")]
        ty: String,
        rows: usize,
        n: usize,
        batch: usize,
        w: [usize; 2],
        x: [usize; 2],
        out: [usize; 2],
    },
}

struct Fixtures {
    index: Index,
    blob: Vec<u8>,
}

impl Fixtures {
    fn load() -> Fixtures {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant");
        let index: Index =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let blob = std::fs::read(dir.join("quant.bin")).unwrap();
        Fixtures { index, blob }
    }

    fn bytes(&self, r: [usize; 2]) -> &[u8] {
        &self.blob[r[0]..r[0] + r[1]]
    }

    fn floats(&self, r: [usize; 2]) -> Vec<f32> {
        self.bytes(r)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

fn ty(name: &str) -> GgmlType {
    GgmlType::ALL
        .iter()
        .copied()
        .find(|t| t.name() == name)
        .unwrap()
}

fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Scalar];
    for s in [Backend::Avx2, Backend::Avx512] {
        if s.is_available() {
            b.push(s);
        } else {
            println!("skipped: {} backend (the CPU lacks its features)", s.name());
        }
    }
    b
}

const WEIGHT_TYPES: [GgmlType; 11] = [
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

/// Every weight type (and Q8_1, Q8_K) has synthetic fixtures, and the real-model rows are
/// there; dequantization equals gguf's `dequantize` bit for bit.
#[test]
fn dequant_matches_gguf_python_exactly() {
    let fx = Fixtures::load();
    let mut seen = std::collections::BTreeSet::new();
    let mut real = std::collections::BTreeSet::new();
    for case in &fx.index.cases {
        let Case::Dequant {
            ty: t,
            source,
            n,
            data,
            out,
        } = case
        else {
            continue;
        };
        let expect = fx.floats(*out);
        assert_eq!(expect.len(), *n);
        let mut got = vec![0.0f32; *n];
        dequantize(ty(t), fx.bytes(*data), &mut got).unwrap();
        for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
            assert_eq!(
                g.to_bits(),
                e.to_bits(),
                "{t} {source} element {i}: {g} vs {e}"
            );
        }
        seen.insert(t.clone());
        if source.contains(':') {
            real.insert(t.clone());
        }
    }
    for t in WEIGHT_TYPES
        .iter()
        .map(|t| t.name())
        .chain(["Q8_1", "Q8_K"])
    {
        assert!(seen.contains(t), "no dequant fixture for {t}");
    }
    for t in ["Q4_1", "Q8_0", "F32"] {
        assert!(real.contains(t), "no SmolLM2 rows of type {t}");
    }
    for t in ["Q4_K", "Q6_K"] {
        if !real.contains(t) {
            println!("skipped: no Qwen2.5 rows of type {t} in the fixtures");
        }
    }
}

/// Activation quantization is byte-identical to ggml's x86 `from_float`.
#[test]
fn activation_quantization_matches_ggml_bytes() {
    let fx = Fixtures::load();
    let mut checked = 0;
    for case in &fx.index.cases {
        let Case::Quantize { ty: t, n, x, out } = case else {
            continue;
        };
        let xs = fx.floats(*x);
        assert_eq!(xs.len(), *n);
        let expect = fx.bytes(*out);
        let mut got = vec![0u8; activation_bytes(ty(t), *n).unwrap()];
        quantize_activations(ty(t), &xs, &mut got).unwrap();
        assert_eq!(got.len(), expect.len(), "{t}");
        if let Some(i) = got.iter().zip(expect).position(|(a, b)| a != b) {
            panic!(
                "{t} n={n}: first differing byte {i}: {} vs {}",
                got[i], expect[i]
            );
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} quantize fixtures");
}

/// Every fused dot product equals llama.cpp's `ggml_vec_dot_*` result bit for bit, on both
/// backends, from ggml's quantized activations and from ours.
#[test]
fn vec_dot_matches_ggml_bits() {
    let fx = Fixtures::load();
    println!("reference ggml cpu features: {}", fx.index.ggml_cpu);
    let mut per_type = std::collections::BTreeMap::<String, usize>::new();
    for case in &fx.index.cases {
        let Case::VecDot {
            ty: t,
            vec_dot_type: vt,
            n,
            source,
            act,
            w,
            x,
            xq,
            result_bits,
        } = case
        else {
            continue;
        };
        let wty = ty(t);
        assert_eq!(vec_dot_type(wty).unwrap().name(), vt);
        let expect = f32::from_bits(*result_bits);
        let mut ours = vec![0u8; activation_bytes(ty(vt), *n).unwrap()];
        quantize_activations(ty(vt), &fx.floats(*x), &mut ours).unwrap();
        for b in backends() {
            for (label, xqb) in [("ggml xq", fx.bytes(*xq)), ("our xq", &ours[..])] {
                let got = vec_dot(wty, b, *n, fx.bytes(*w), xqb).unwrap();
                assert_eq!(
                    got.to_bits(),
                    expect.to_bits(),
                    "{t} {source} {act} {b:?} {label}: {got} vs ggml {expect}"
                );
            }
        }
        *per_type.entry(t.clone()).or_default() += 1;
    }
    for t in WEIGHT_TYPES {
        assert!(per_type.get(t.name()).copied().unwrap_or(0) >= 4, "{t}");
    }
}

/// Our activation rows quantized to `vty`, concatenated.
fn quantize_rows(vty: GgmlType, x: &[f32], cols: usize) -> Vec<u8> {
    let row = activation_bytes(vty, cols).unwrap();
    let mut xq = vec![0u8; row * (x.len() / cols)];
    for (xr, qr) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(row)) {
        quantize_activations(vty, xr, qr).unwrap();
    }
    xq
}

/// llama.cpp's kernels on repacked Q4_0/Q4_K weights (`ggml_gemv_*_8x8`, `ggml_gemm_*_8x8`,
/// run by ggml on its own repacked copy of the weights) equal our `Repack*` kernels bit for
/// bit, on both backends.
#[test]
fn repack_kernels_match_ggml_gemv_and_gemm() {
    let fx = Fixtures::load();
    let mut seen = std::collections::BTreeSet::new();
    for case in &fx.index.cases {
        let Case::Repack {
            ty: t,
            rows,
            n,
            source,
            w,
            x,
            gemv,
            gemm,
        } = case
        else {
            continue;
        };
        let wty = ty(t);
        assert!(llama_cpp_repacks(wty, *rows));
        let wm = QMatrix::new(wty, *rows, *n, fx.bytes(*w)).unwrap();
        let xs = fx.floats(*x);
        let xq = quantize_rows(vec_dot_type(wty).unwrap(), &xs, *n);
        let xq_row = xq.len() / 4;
        for (path, expect) in [
            (Path::RepackGemv, fx.floats(*gemv)),
            (Path::RepackGemm, fx.floats(*gemm)),
        ] {
            for b in backends() {
                let k = kernel_for(wty, b, path).unwrap();
                for j in 0..4 {
                    for r in 0..*rows {
                        let got = k(wm.row(r).unwrap(), &xq[j * xq_row..(j + 1) * xq_row]);
                        let e = expect[j * rows + r];
                        assert_eq!(
                            got.to_bits(),
                            e.to_bits(),
                            "{t} {source} {path:?} {b:?} ({j},{r}): {got} vs {e}"
                        );
                    }
                }
            }
        }
        // Q4_K's repacked sums differ from ggml_vec_dot somewhere (else this would prove
        // nothing)
        let vd = kernel_for(wty, Backend::Scalar, Path::VecDot).unwrap();
        let gv = fx.floats(*gemv);
        let differs =
            (0..*rows).any(|r| vd(wm.row(r).unwrap(), &xq[..xq_row]).to_bits() != gv[r].to_bits());
        if wty == GgmlType::Q4_K {
            assert!(
                differs,
                "{t} {source}: repacked gemv equals vec_dot everywhere"
            );
        }
        seen.insert(t.clone());
    }
    assert!(seen.contains("Q4_0") && seen.contains("Q4_K"), "{seen:?}");
    assert!(kernel_for(GgmlType::Q6_K, Backend::Scalar, Path::RepackGemv).is_err());
}

/// ggml's whole `mul_mat` op (its own kernel choice: `vec_dot`, or llamafile's `tinyBLAS`
/// for float weights in batches) equals `matmul` bit for bit, on both backends.
#[test]
fn matmul_matches_ggml_mul_mat_op() {
    let fx = Fixtures::load();
    let mut tiny = 0;
    for case in &fx.index.cases {
        let Case::Mulmat {
            ty: t,
            rows,
            n,
            batch,
            w,
            x,
            out,
        } = case
        else {
            continue;
        };
        let wm = QMatrix::new(ty(t), *rows, *n, fx.bytes(*w)).unwrap();
        assert!(
            !llama_cpp_repacks(wm.ty, wm.rows),
            "fixture meant without repacking"
        );
        let (xs, expect) = (fx.floats(*x), fx.floats(*out));
        let mut y = vec![0.0f32; batch * rows];
        for b in backends() {
            matmul_with(b, &wm, &xs, *batch, &mut y).unwrap();
            for (i, (g, e)) in y.iter().zip(&expect).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "{t} {rows}x{n} batch {batch} {b:?} output {i}: {g} vs {e}"
                );
            }
        }
        if llama_cpp_tinyblas(wm.ty, *rows, *n, *batch) {
            tiny += 1;
            // tinyBLAS really sums differently from vec_dot here
            let vd = naive_row(&wm, &xs[..*n], Path::VecDot);
            assert!(
                vd.iter()
                    .zip(&expect)
                    .any(|(a, b)| a.to_bits() != b.to_bits()),
                "{t}"
            );
        }
    }
    assert_eq!(tiny, 3, "F32, F16 and BF16 batches through tinyBLAS");
}

/// Per-element bound of `|x - dequant(quant(x))|` for the activation type.
fn act_error_bounds(vty: GgmlType, x: &[f32], xq: &[u8]) -> Vec<f64> {
    let mut xd = vec![0.0f32; x.len()];
    dequantize(vty, xq, &mut xd).unwrap();
    let block = usize::try_from(vty.block_size()).unwrap();
    let mut out = vec![0.0f64; x.len()];
    for (b, (xs, os)) in x.chunks(block).zip(out.chunks_mut(block)).enumerate() {
        let amax = xs.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
        for (v, o) in xs.iter().zip(os.iter_mut()) {
            let v = f64::from(v.abs());
            *o = match vty {
                GgmlType::F32 => 0.0,
                GgmlType::F16 => v * 2f64.powi(-11) + 6e-8,
                GgmlType::BF16 => v * 2f64.powi(-8),
                // half a step (d = amax / 127), plus the f16 (or f32) rounding of d
                _ => 0.5 * amax / 127.0 * (1.0 + 1e-6) + (v + amax / 254.0) * 2f64.powi(-11),
            };
        }
        let _ = b;
    }
    // the bound must hold for our own dequantized activations
    for (i, ((a, b), e)) in x.iter().zip(&xd).zip(&out).enumerate() {
        let diff = f64::from(*a) - f64::from(*b);
        assert!(diff.abs() <= *e + 1e-30, "{vty} element {i}: {a} vs {b}");
    }
    out
}

/// The fused dot products against f64 dot products of the dequantized weights: with the
/// dequantized activations the only difference is f32 accumulation (relative 1e-5 of
/// `sum |w x|`); with the original activations add `sum |w_i| * err_i`, `err_i` the
/// activation quantization bound.
#[test]
fn vec_dot_close_to_dequantized_f64_dot() {
    let fx = Fixtures::load();
    for case in &fx.index.cases {
        let Case::VecDot {
            ty: t,
            vec_dot_type: vt,
            n,
            source,
            act,
            w,
            x,
            xq,
            ..
        } = case
        else {
            continue;
        };
        let (wty, vty) = (ty(t), ty(vt));
        let mut wd = vec![0.0f32; *n];
        dequantize(wty, fx.bytes(*w), &mut wd).unwrap();
        let xs = fx.floats(*x);
        let mut xd = vec![0.0f32; *n];
        dequantize(vty, fx.bytes(*xq), &mut xd).unwrap();
        let err = act_error_bounds(vty, &xs, fx.bytes(*xq));
        let got =
            f64::from(vec_dot(wty, Backend::detect(), *n, fx.bytes(*w), fx.bytes(*xq)).unwrap());
        // Q8_1 carries `s = f16(d * sum(q))`, which multiplies the weights' block minimum:
        // its f16 rounding (relative 2^-11) is part of llama.cpp's result
        let s_err: f64 = if vty == GgmlType::Q8_1 {
            let ws = usize::try_from(wty.type_size()).unwrap();
            fx.bytes(*w)
                .chunks_exact(ws)
                .zip(fx.bytes(*xq).chunks_exact(36))
                .map(|(wb, xb)| {
                    let m = half::f16::from_le_bytes([wb[2], wb[3]]).to_f64();
                    let s = half::f16::from_le_bytes([xb[2], xb[3]]).to_f64();
                    (m * s).abs() * 2f64.powi(-10)
                })
                .sum()
        } else {
            0.0
        };
        let exact_q: f64 = wd
            .iter()
            .zip(&xd)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let abs_q: f64 = wd
            .iter()
            .zip(&xd)
            .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
            .sum();
        assert!(
            (got - exact_q).abs() <= 1e-5 * abs_q + s_err + 1e-30,
            "{t} {source} {act}: {got} vs {exact_q} (scale {abs_q})"
        );
        let exact: f64 = wd
            .iter()
            .zip(&xs)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let abs: f64 = wd
            .iter()
            .zip(&xs)
            .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
            .sum();
        let quant_err: f64 = wd
            .iter()
            .zip(&err)
            .map(|(a, e)| f64::from(a.abs()) * e)
            .sum();
        assert!(
            (got - exact).abs() <= quant_err + 1e-5 * abs + s_err + 1e-30,
            "{t} {source} {act}: {got} vs {exact} (bound {quant_err})"
        );
    }
}

// ------------------------------------------------------------------------ property tests

/// Deterministic pseudo-random bytes (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[7]
    }
    fn unit(&mut self) -> f32 {
        // 24 random bits in [0, 1)
        let bits = u32::try_from(self.next() >> 40).unwrap();
        f32::from_bits(0x3f80_0000 | (bits >> 1)) - 1.0
    }
    fn normal(&mut self) -> f32 {
        // sum of uniforms, good enough for activations
        (0..4).map(|_| self.unit()).sum::<f32>() - 2.0
    }
}

fn f16_le(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

/// `n` elements of weights of type `t`: random bytes with sane scale fields.
fn random_weights(t: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let bs = usize::try_from(t.block_size()).unwrap();
    let ts = usize::try_from(t.type_size()).unwrap();
    let mut out = Vec::with_capacity(n / bs * ts);
    for _ in 0..n / bs {
        let mut b: Vec<u8> = (0..ts).map(|_| rng.byte()).collect();
        let scale = 0.001 + 0.05 * rng.unit();
        let signed = if rng.byte() & 1 == 0 { scale } else { -scale };
        let min = 0.1 * (rng.unit() - 0.5);
        match t {
            GgmlType::F32 => b.copy_from_slice(&rng.normal().to_le_bytes()),
            GgmlType::F16 => b.copy_from_slice(&f16_le(rng.normal())),
            GgmlType::BF16 => {
                let v = rng.normal().to_bits() >> 16;
                b.copy_from_slice(&u16::try_from(v).unwrap().to_le_bytes());
            }
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
                b[0..2].copy_from_slice(&f16_le(signed))
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                b[0..2].copy_from_slice(&f16_le(scale));
                b[2..4].copy_from_slice(&f16_le(min));
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                b[0..2].copy_from_slice(&f16_le(scale / 10.0));
                b[2..4].copy_from_slice(&f16_le(min / 10.0));
            }
            GgmlType::Q6_K => b[208..210].copy_from_slice(&f16_le(signed / 10.0)),
            _ => unreachable!(),
        }
        out.extend_from_slice(&b);
    }
    out
}

fn random_activations(n: usize, rng: &mut Rng, style: u8) -> Vec<f32> {
    (0..n)
        .map(|i| match style % 4 {
            0 => rng.normal(),
            1 => rng.normal() * if rng.byte() < 4 { 50.0 } else { 0.01 },
            // half-integers with exact +-127 maxima: rounding ties everywhere
            2 => {
                if i % 32 == 0 {
                    if rng.byte() & 1 == 0 {
                        127.0
                    } else {
                        -127.0
                    }
                } else {
                    f32::from(rng.byte() % 200) / 2.0 - 50.0
                }
            }
            _ => {
                if i < 256 {
                    0.0
                } else {
                    rng.normal() * 1e-3
                }
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Scalar and AVX2 kernels agree bit for bit on random blocks and activations (all paths).
    #[test]
    fn scalar_and_avx2_agree(seed in any::<u64>(), type_i in 0usize..11, blocks in 1usize..9, style in 0u8..4) {
        if !Backend::Avx2.is_available() {
            return Ok(());
        }
        let t = WEIGHT_TYPES[type_i];
        let n = 256 * blocks + if t.block_size() == 1 { usize::from(style) * 3 } else { 0 };
        let mut rng = Rng(seed | 1);
        let w = random_weights(t, n, &mut rng);
        let x = random_activations(n, &mut rng, style);
        let vty = vec_dot_type(t).unwrap();
        let mut xq = vec![0u8; activation_bytes(vty, n).unwrap()];
        quantize_activations(vty, &x, &mut xq).unwrap();
        let s = vec_dot(t, Backend::Scalar, n, &w, &xq).unwrap();
        let a = vec_dot(t, Backend::Avx2, n, &w, &xq).unwrap();
        prop_assert_eq!(s.to_bits(), a.to_bits(), "{} n={}: scalar {} avx2 {}", t, n, s, a);
        let paths: &[Path] = if llama_cpp_repacks(t, 8) {
            &[Path::RepackGemv, Path::RepackGemm]
        } else if llama_cpp_tinyblas(t, 8, 8, 2) {
            &[Path::Tinyblas]
        } else {
            &[]
        };
        for &path in paths {
            let s = kernel_for(t, Backend::Scalar, path).unwrap()(&w, &xq);
            let a = kernel_for(t, Backend::Avx2, path).unwrap()(&w, &xq);
            prop_assert_eq!(s.to_bits(), a.to_bits(), "{} {:?} n={}: scalar {} avx2 {}", t, path, n, s, a);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Scalar and AVX-512 kernels agree bit for bit on random blocks and activations (all
    /// paths), and so do AVX-512 matrix-vector products of 1..20 rows (the multi-row kernels
    /// with their groups of 8 and 4 and single remainder rows) and scalar rows.
    #[test]
    fn scalar_and_avx512_agree(seed in any::<u64>(), type_i in 0usize..11, blocks in 1usize..5, style in 0u8..4, rows in 1usize..20, repack in any::<bool>()) {
        if !Backend::Avx512.is_available() {
            println!("skipped: AVX-512 backend (the CPU lacks avx512f/bw/vl/vnni)");
            return Ok(());
        }
        let t = WEIGHT_TYPES[type_i];
        // llama.cpp repacks only row counts divisible by 8
        let rows = if repack && llama_cpp_repacks(t, 8) { 8 * (1 + rows % 3) } else { rows };
        let cols = 256 * blocks + if t.block_size() == 1 { usize::from(style) * 3 } else { 0 };
        let mut rng = Rng(seed | 1);
        let data = random_weights(t, rows * cols, &mut rng);
        let w = QMatrix::new(t, rows, cols, &data).unwrap();
        let x = random_activations(cols, &mut rng, style);
        let vty = vec_dot_type(t).unwrap();
        let mut xq = vec![0u8; activation_bytes(vty, cols).unwrap()];
        quantize_activations(vty, &x, &mut xq).unwrap();
        let row = w.row(0).unwrap();
        let mut paths = vec![Path::VecDot];
        if llama_cpp_repacks(t, 8) {
            paths.extend([Path::RepackGemv, Path::RepackGemm]);
        } else if llama_cpp_tinyblas(t, 8, 8, 2) {
            paths.push(Path::Tinyblas);
        }
        for &path in &paths {
            let s = kernel_for(t, Backend::Scalar, path).unwrap()(row, &xq);
            let a = kernel_for(t, Backend::Avx512, path).unwrap()(row, &xq);
            prop_assert_eq!(s.to_bits(), a.to_bits(), "{} {:?} n={}: scalar {} avx512 {}", t, path, cols, s, a);
        }
        let opts = MatOptions { backend: Backend::Avx512, llama_cpp_repack: repack };
        let mut y = vec![0.0f32; rows];
        matvec_opts(&w, &x, &mut y, opts).unwrap();
        let path = if repack && llama_cpp_repacks(t, rows) { Path::RepackGemv } else { Path::VecDot };
        let k = kernel_for(t, Backend::Scalar, path).unwrap();
        for (r, &got) in y.iter().enumerate() {
            let want = k(w.row(r).unwrap(), &xq);
            prop_assert_eq!(want.to_bits(), got.to_bits(), "{} {:?} row {} of {}: scalar {} avx512 {}", t, path, r, rows, want, got);
        }
    }
}

// ---------------------------------------------------------------------------- matrix API

/// The path llama.cpp takes for activation row `j` of a batch of `n`.
fn llama_path(w: &QMatrix<'_>, j: usize, n: usize) -> Path {
    if llama_cpp_tinyblas(w.ty, w.rows, w.cols, n) {
        Path::Tinyblas
    } else if !llama_cpp_repacks(w.ty, w.rows) {
        Path::VecDot
    } else if n > 3 && j < n - n % 4 {
        Path::RepackGemm
    } else {
        Path::RepackGemv
    }
}

/// One activation row times every weight row with the scalar kernel of `path`.
fn naive_row(w: &QMatrix<'_>, x: &[f32], path: Path) -> Vec<f32> {
    let xq = quantize_rows(vec_dot_type(w.ty).unwrap(), x, w.cols);
    let k = kernel_for(w.ty, Backend::Scalar, path).unwrap();
    (0..w.rows).map(|r| k(w.row(r).unwrap(), &xq)).collect()
}

#[test]
fn matvec_and_matmul_match_naive_reference() {
    quant::set_threads(2).unwrap();
    assert_eq!(quant::threads().unwrap(), 2);
    let mut rng = Rng(0x5eed);
    for t in WEIGHT_TYPES {
        // big enough to go parallel (>= 64 KiB of weights) for most types
        let (rows, cols) = (96, 2048);
        let data = random_weights(t, rows * cols, &mut rng);
        let w = QMatrix::new(t, rows, cols, &data).unwrap();
        let n = 5;
        let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
        let mut y = vec![0.0f32; n * rows];
        for b in backends() {
            matmul_with(b, &w, &x, n, &mut y).unwrap();
            for j in 0..n {
                let xr = &x[j * cols..(j + 1) * cols];
                let expect = naive_row(&w, xr, llama_path(&w, j, n));
                let expect_v = naive_row(&w, xr, llama_path(&w, 0, 1));
                let mut yv = vec![0.0f32; rows];
                matvec_with(b, &w, xr, &mut yv).unwrap();
                for r in 0..rows {
                    assert_eq!(
                        yv[r].to_bits(),
                        expect_v[r].to_bits(),
                        "{t} {b:?} matvec row {r}"
                    );
                    assert_eq!(
                        y[j * rows + r].to_bits(),
                        expect[r].to_bits(),
                        "{t} {b:?} matmul ({j},{r})"
                    );
                }
            }
        }
        // and against f64 over dequantized weights and activations
        let mut yv = vec![0.0f32; rows];
        matvec(&w, &x[..cols], &mut yv).unwrap();
        let vty = vec_dot_type(t).unwrap();
        let mut xq = vec![0u8; activation_bytes(vty, cols).unwrap()];
        quantize_activations(vty, &x[..cols], &mut xq).unwrap();
        let mut xd = vec![0.0f32; cols];
        dequantize(vty, &xq, &mut xd).unwrap();
        let mut wr = vec![0.0f32; cols];
        for (r, got) in yv.iter().enumerate() {
            dequantize_row(&w, r, &mut wr).unwrap();
            let exact: f64 = wr
                .iter()
                .zip(&xd)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let scale: f64 = wr
                .iter()
                .zip(&xd)
                .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
                .sum();
            assert!(
                (f64::from(*got) - exact).abs() <= 1e-5 * scale + 1e-30,
                "{t} row {r}"
            );
        }
    }
    // matmul and matvec of the repacked fixtures reproduce ggml's gemm (first 4 rows of a
    // batch) and gemv (single rows, and the 5th row of a batch of 5)
    let fx = Fixtures::load();
    for case in &fx.index.cases {
        let Case::Repack {
            ty: t,
            rows,
            n: cols,
            source,
            w,
            x,
            gemv,
            gemm,
        } = case
        else {
            continue;
        };
        let wm = QMatrix::new(ty(t), *rows, *cols, fx.bytes(*w)).unwrap();
        let (xs, gv, gm) = (fx.floats(*x), fx.floats(*gemv), fx.floats(*gemm));
        let mut x5 = xs.clone();
        x5.extend_from_slice(&xs[..*cols]);
        let mut y5 = vec![0.0f32; 5 * rows];
        for b in backends() {
            matmul_with(b, &wm, &x5, 5, &mut y5).unwrap();
            let mut yv = vec![0.0f32; *rows];
            matvec_with(b, &wm, &xs[..*cols], &mut yv).unwrap();
            for r in 0..*rows {
                for j in 0..4 {
                    assert_eq!(
                        y5[j * rows + r].to_bits(),
                        gm[j * rows + r].to_bits(),
                        "{t} {source} {b:?} gemm ({j},{r})"
                    );
                }
                assert_eq!(
                    y5[4 * rows + r].to_bits(),
                    gv[r].to_bits(),
                    "{t} {source} {b:?} gemv tail row {r}"
                );
                assert_eq!(
                    yv[r].to_bits(),
                    gv[r].to_bits(),
                    "{t} {source} {b:?} matvec row {r}"
                );
            }
        }
        // without repacking (a matrix tied to token_embd, or llama.cpp --no-repack) the
        // products are ggml_vec_dot's
        let opts = MatOptions {
            llama_cpp_repack: false,
            ..MatOptions::default()
        };
        let mut yv = vec![0.0f32; *rows];
        matvec_opts(&wm, &xs[..*cols], &mut yv, opts).unwrap();
        let expect = naive_row(&wm, &xs[..*cols], Path::VecDot);
        assert_eq!(yv, expect, "{t} {source} without repack");
        let mut y2 = vec![0.0f32; 2 * rows];
        quant::matmul_opts(&wm, &x5[..2 * cols], 2, &mut y2, opts).unwrap();
        assert_eq!(
            &y2[..*rows],
            &expect[..],
            "{t} {source} matmul without repack"
        );
        // and the global switch does the same for the default options
        quant::set_llama_cpp_repack(false);
        assert!(!MatOptions::default().llama_cpp_repack);
        quant::set_llama_cpp_repack(true);
    }

    // one thread gives the same bits
    quant::set_threads(1).unwrap();
    let data = random_weights(GgmlType::Q4_K, 64 * 1024, &mut rng);
    let w = QMatrix::new(GgmlType::Q4_K, 64, 1024, &data).unwrap();
    let x: Vec<f32> = (0..1024).map(|_| rng.normal()).collect();
    let mut y1 = vec![0.0f32; 64];
    matvec(&w, &x, &mut y1).unwrap();
    quant::set_threads(2).unwrap();
    let mut y2 = vec![0.0f32; 64];
    matvec(&w, &x, &mut y2).unwrap();
    assert_eq!(y1, y2);
}

// ---------------------------------------------------------------------------- bad inputs

#[test]
fn bad_lengths_and_types_are_errors() {
    let q = vec![0u8; 18 * 4];
    let mut out = vec![0.0f32; 128];
    dequantize(GgmlType::Q4_0, &q, &mut out).unwrap();
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &q[..17], &mut out),
        Err(QuantError::Length { .. })
    ));
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &q, &mut out[..100]),
        Err(QuantError::NotWholeBlocks { .. })
    ));
    assert!(matches!(
        dequantize(GgmlType::Q2_K, &q, &mut out),
        Err(QuantError::Unsupported { .. })
    ));
    assert!(!quant::can_dequantize(GgmlType::IQ4_XS));
    assert!(matches!(
        vec_dot_type(GgmlType::Q8_K),
        Err(QuantError::Unsupported { .. })
    ));

    let mut xq = vec![0u8; 34 * 4];
    assert!(quantize_activations(GgmlType::Q8_0, &out, &mut xq).is_ok());
    assert!(matches!(
        quantize_activations(GgmlType::Q8_0, &out, &mut xq[..30]),
        Err(QuantError::Length { .. })
    ));
    assert!(matches!(
        quantize_activations(GgmlType::Q8_0, &out[..31], &mut xq),
        Err(QuantError::NotWholeBlocks { .. })
    ));
    assert!(matches!(
        quantize_activations(GgmlType::Q4_0, &out, &mut xq),
        Err(QuantError::Unsupported { .. })
    ));

    assert!(vec_dot(GgmlType::Q4_0, Backend::Scalar, 128, &q, &xq).is_ok());
    assert!(matches!(
        vec_dot(GgmlType::Q4_0, Backend::Scalar, 128, &q[..36], &xq),
        Err(QuantError::Length { .. })
    ));
    assert!(matches!(
        vec_dot(GgmlType::Q4_0, Backend::Avx2, 128, &q, &xq[..34]),
        Err(QuantError::Length { .. })
    ));
    assert!(matches!(
        vec_dot(GgmlType::Q4_0, Backend::Scalar, 100, &q, &xq),
        Err(QuantError::NotWholeBlocks { .. })
    ));

    assert!(matches!(
        QMatrix::new(GgmlType::Q4_0, 2, 64, &q[..70]),
        Err(QuantError::Length { .. })
    ));
    assert!(matches!(
        QMatrix::new(GgmlType::Q4_0, 2, 48, &q),
        Err(QuantError::NotWholeBlocks { .. })
    ));
    assert!(matches!(
        QMatrix::new(GgmlType::Q3_K, 1, 256, &[0u8; 110]),
        Err(QuantError::Unsupported { .. })
    ));
    let w = QMatrix::new(GgmlType::Q4_0, 2, 64, &q).unwrap();
    let mut y = vec![0.0f32; 2];
    assert!(matvec(&w, &out[..64], &mut y).is_ok());
    assert!(matches!(
        matvec(&w, &out[..63], &mut y),
        Err(QuantError::Length { .. })
    ));
    assert!(matches!(
        matvec(&w, &out[..64], &mut y[..1]),
        Err(QuantError::Length { .. })
    ));
    assert!(matches!(
        quant::matmul(&w, &out[..128], 3, &mut y),
        Err(QuantError::Length { .. })
    ));
    let mut row = vec![0.0f32; 64];
    assert!(dequantize_row(&w, 1, &mut row).is_ok());
    assert!(matches!(
        dequantize_row(&w, 2, &mut row),
        Err(QuantError::RowOutOfRange { .. })
    ));
    assert!(matches!(
        dequantize_row(&w, 0, &mut row[..10]),
        Err(QuantError::Length { .. })
    ));
    // a hand-built matrix with inconsistent fields is rejected, not read out of bounds
    let bad = QMatrix {
        ty: GgmlType::Q4_0,
        rows: 3,
        cols: 64,
        data: &q,
    };
    assert!(matches!(
        matvec(&bad, &out[..64], &mut [0.0; 3]),
        Err(QuantError::Length { .. })
    ));
    // kernels never read past their inputs, whatever the lengths
    let k = dot::kernel(GgmlType::Q6_K, Backend::detect()).unwrap();
    let _ = k(&[0u8; 100], &[0u8; 1000]);
}
