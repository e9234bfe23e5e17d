//! The CUDA ops (`gpu::ops`) against the CPU engine on random inputs: RMSNorm, RoPE (both
//! modes, with and without llama3 factors, positions up to 100000), KV-cache stores, attention
//! (1 and 7 queries, contexts up to 40000, GQA 1/3/8/12, head widths 32..256) against a
//! reference built from the engine's f16-cache semantics, the element-wise ops, argmax (ties,
//! NaN), the repeat penalty, and sampling (same id as `sampler::sample_with` for the same
//! uniform number, over real vocabulary sizes, every kernel path). Plus launches the wrappers
//! must refuse. Each test prints `skipped: <why>` and returns on a machine without a usable
//! GPU; on one, every case prints its error figures.
#![allow(clippy::unwrap_used)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::too_many_arguments
)] // small test shapes and ids; case builders with many knobs

use half::f16;
use llmstream_infer::config::RopeMode;
use llmstream_infer::gpu::ops::{self, GpuSampleParams, SampleTrace};
use llmstream_infer::gpu::{DevBuf, Gpu, GpuError};
use llmstream_infer::ops as cpu;
use llmstream_infer::sampler::{apply_repeat_penalty, argmax, sample_with, SampleParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Serialises `Gpu::new`: the first call compiles and writes the PTX cache, the others read it
/// (concurrent first compiles would all write the cache's temporary file at once).
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn gpu() -> Option<Gpu> {
    let _one_at_a_time = INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(GpuError::Unavailable(why)) => {
            eprintln!("skipped: {why}");
            None
        }
        Err(e) => panic!("GPU present but unusable: {e}"),
    }
}

fn up(g: &Gpu, data: &[f32]) -> DevBuf {
    DevBuf::from_f32(g.stream(), data).unwrap()
}

fn up_f16(g: &Gpu, data: &[f16]) -> DevBuf {
    let bytes: Vec<u8> = data
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .collect();
    DevBuf::from_host(g.stream(), &bytes).unwrap()
}

fn up_i32(g: &Gpu, data: &[i32]) -> DevBuf {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    DevBuf::from_host(g.stream(), &bytes).unwrap()
}

fn down(g: &Gpu, b: &DevBuf, n: usize) -> Vec<f32> {
    b.read_f32(g.stream(), n).unwrap()
}

fn down_u16(g: &Gpu, b: &DevBuf, n: usize) -> Vec<u16> {
    let mut bytes = vec![0u8; n * 2];
    b.read(g.stream(), &mut bytes).unwrap();
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn down_i32(g: &Gpu, b: &DevBuf) -> i32 {
    let mut bytes = [0u8; 4];
    b.read(g.stream(), &mut bytes).unwrap();
    i32::from_le_bytes(bytes)
}

fn random(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, &x| a.max(x.abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .fold(0f32, |m, (&x, &y)| m.max((x - y).abs()))
}

fn is_invalid<T: std::fmt::Debug>(r: Result<T, GpuError>) -> bool {
    matches!(r, Err(GpuError::Invalid { .. }))
}

// ------------------------------------------------------------------------------ rms_norm

#[test]
fn rms_norm_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(1);
    for (rows, n) in [(1usize, 576usize), (3, 4096), (7, 5), (2, 3584)] {
        let mut x = random(&mut rng, rows * n, -3.0, 3.0);
        x[0] = 250.0; // a large outlier, as real activations have
        let w = random(&mut rng, n, -2.0, 2.0);
        let eps = 1e-5;
        let mut want = vec![0f32; rows * n];
        cpu::rms_norm(&x, &w, eps, &mut want);
        let (xb, wb, ob) = (
            up(&g, &x),
            up(&g, &w),
            DevBuf::zeroed(g.stream(), rows * n * 4).unwrap(),
        );
        ops::rms_norm(&g, xb.span(), wb.span(), ob.span(), rows, n, eps).unwrap();
        let got = down(&g, &ob, rows * n);
        // In place too.
        ops::rms_norm(&g, xb.span(), wb.span(), xb.span(), rows, n, eps).unwrap();
        let inplace = down(&g, &xb, rows * n);
        let err = max_diff(&got, &want);
        let bits_equal = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        eprintln!(
            "rms_norm {rows}×{n}: max abs error {err:.3e}, {bits_equal}/{} bit-identical",
            rows * n
        );
        assert!(err <= 1e-6 * max_abs(&want), "rms_norm {rows}×{n}: {err}");
        assert_eq!(got, inplace);
    }
}

// ------------------------------------------------------------------------------ rope

#[test]
fn rope_matches_cpu_in_both_modes_with_and_without_factors() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(2);
    let n_tok = 10;
    for mode in [RopeMode::Normal, RopeMode::Neox] {
        for (n_heads, head_dim, n_rot) in [(4usize, 64usize, 64usize), (3, 128, 128), (2, 64, 32)] {
            for with_factors in [false, true] {
                for (pos0, base, freq_scale) in [
                    (0usize, 10_000.0f32, 1.0f32),
                    (1000, 500_000.0, 1.0),
                    (99_990, 1_000_000.0, 0.25),
                ] {
                    let width = n_heads * head_dim;
                    let x = random(&mut rng, n_tok * width, -2.0, 2.0);
                    let factors: Vec<f32> =
                        (0..n_rot / 2).map(|i| 1.0 + (i % 7) as f32 * 1.5).collect();
                    let f = with_factors.then_some(factors.as_slice());
                    let mut want = x.clone();
                    let mut cache = Vec::new();
                    for i in 0..n_tok {
                        cpu::rope_cache(pos0 + i, n_rot, base, freq_scale, f, &mut cache);
                        cpu::rope_apply(
                            &mut want[i * width..(i + 1) * width],
                            head_dim,
                            n_rot,
                            mode,
                            &cache,
                        );
                    }
                    let xb = up(&g, &x);
                    let fb = up(&g, &factors);
                    let fs = with_factors.then(|| fb.span());
                    ops::rope(
                        &g,
                        xb.span(),
                        n_tok,
                        n_heads,
                        head_dim,
                        n_rot,
                        pos0,
                        base,
                        freq_scale,
                        fs,
                        mode,
                    )
                    .unwrap();
                    let got = down(&g, &xb, n_tok * width);
                    let err = max_diff(&got, &want);
                    let exact = got
                        .iter()
                        .zip(&want)
                        .filter(|(a, b)| a.to_bits() == b.to_bits())
                        .count();
                    eprintln!(
                        "rope {mode:?} heads {n_heads} hd {head_dim} rot {n_rot} factors {with_factors} pos {pos0}..{}: \
                         max abs error {err:.3e} ({exact}/{} bit-identical)",
                        pos0 + n_tok,
                        got.len()
                    );
                    // cos/sin of the same float angle, each within an ulp: ~1e-7 of |x|.
                    assert!(err <= 1e-6 * max_abs(&x), "{mode:?} {pos0}: {err}");
                    // Dims past n_rot untouched.
                    for t in 0..n_tok * n_heads {
                        let r = t * head_dim;
                        assert_eq!(&got[r + n_rot..r + head_dim], &x[r + n_rot..r + head_dim]);
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------ kv_store

#[test]
fn kv_store_rounds_like_half_and_touches_only_its_rows() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(3);
    let (n_ctx, width, pos0, n_tok) = (20usize, 256usize, 5usize, 7usize);
    let mut k = random(&mut rng, n_tok * width, -4.0, 4.0);
    let v = random(&mut rng, n_tok * width, -1e-4, 1e-4); // f16 subnormals
                                                          // Halfway cases, overflow, zeros.
    k[0] = 1.0 + 2f32.powi(-11);
    k[1] = 1.0 + 3.0 * 2f32.powi(-11);
    k[2] = 70_000.0;
    k[3] = -70_000.0;
    k[4] = -0.0;
    k[5] = 65_519.0;
    let (kb, vb) = (up(&g, &k), up(&g, &v));
    let kc = DevBuf::zeroed(g.stream(), n_ctx * width * 2).unwrap();
    let vc = DevBuf::zeroed(g.stream(), n_ctx * width * 2).unwrap();
    ops::kv_store(
        &g,
        kb.span(),
        vb.span(),
        kc.span(),
        vc.span(),
        n_ctx,
        width,
        pos0,
        n_tok,
    )
    .unwrap();
    let (gk, gv) = (
        down_u16(&g, &kc, n_ctx * width),
        down_u16(&g, &vc, n_ctx * width),
    );
    for (cache, src) in [(&gk, &k), (&gv, &v)] {
        for (e, &bits) in cache.iter().enumerate() {
            let row = e / width;
            if (pos0..pos0 + n_tok).contains(&row) {
                let want = f16::from_f32(src[e - pos0 * width]).to_bits();
                assert_eq!(bits, want, "element {e}: {}", src[e - pos0 * width]);
            } else {
                assert_eq!(bits, 0, "row {row} written");
            }
        }
    }
    eprintln!(
        "kv_store: {} values rounded bit-identically to half::f16",
        2 * n_tok * width
    );
    assert!(is_invalid(ops::kv_store(
        &g,
        kb.span(),
        vb.span(),
        kc.span(),
        vc.span(),
        n_ctx,
        width,
        14,
        n_tok
    )));
}

// ------------------------------------------------------------------------------ attention

/// Shape of one attention case.
#[derive(Debug, Clone, Copy)]
struct Shape {
    n_tok: usize,
    pos0: usize,
    n_head: usize,
    n_head_kv: usize,
    hd: usize,
}

fn r16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// The engine's attention with an f16 cache (forward.rs): Q rounded to f16, Q·K in f64, the
/// engine's softmax, weights rounded to f16, V in f64. Also `Σ_t p_t·|v_t|` per output.
fn reference(q: &[f32], k: &[f16], v: &[f16], s: Shape, scale: f32) -> (Vec<f32>, Vec<f32>) {
    let (qd, kvd, group) = (s.n_head * s.hd, s.n_head_kv * s.hd, s.n_head / s.n_head_kv);
    let mut out = vec![0f32; s.n_tok * qd];
    let mut mag = vec![0f32; s.n_tok * qd];
    let mut vals = vec![0f32; v.len()];
    for (o, x) in vals.iter_mut().zip(v) {
        *o = x.to_f32();
    }
    for i in 0..s.n_tok {
        let visible = s.pos0 + i + 1;
        for h in 0..s.n_head {
            let kvh = h / group;
            let qv: Vec<f64> = q[i * qd + h * s.hd..][..s.hd]
                .iter()
                .map(|&x| f64::from(r16(x)))
                .collect();
            let mut sc: Vec<f32> = (0..visible)
                .map(|t| {
                    let kr = &k[t * kvd + kvh * s.hd..][..s.hd];
                    let dot: f64 = kr
                        .iter()
                        .zip(&qv)
                        .map(|(a, b)| f64::from(a.to_f32()) * b)
                        .sum();
                    dot as f32
                })
                .collect();
            cpu::softmax_scaled(&mut sc, scale);
            let mut acc = vec![0f64; s.hd];
            let mut m = vec![0f64; s.hd];
            for (t, &p) in sc.iter().enumerate() {
                let w = f64::from(r16(p));
                let vr = &vals[t * kvd + kvh * s.hd..][..s.hd];
                for d in 0..s.hd {
                    acc[d] += w * f64::from(vr[d]);
                    m[d] += f64::from(p) * f64::from(vr[d]).abs();
                }
            }
            for d in 0..s.hd {
                out[i * qd + h * s.hd + d] = acc[d] as f32;
                mag[i * qd + h * s.hd + d] = m[d] as f32;
            }
        }
    }
    (out, mag)
}

fn run_attention(
    g: &Gpu,
    rng: &mut StdRng,
    ctx: usize,
    n_tok: usize,
    n_head_kv: usize,
    group: usize,
    hd: usize,
    qscale: f32,
) -> (f32, f32) {
    let n_tok = n_tok.min(ctx.max(1));
    let s = Shape {
        n_tok,
        pos0: ctx - n_tok,
        n_head: n_head_kv * group,
        n_head_kv,
        hd,
    };
    let n_kv = s.pos0 + n_tok;
    let n_ctx = n_kv + 3; // rows past the last visible one hold huge values: reading them shows
    let kvd = n_head_kv * hd;
    let q = random(rng, n_tok * s.n_head * hd, -qscale, qscale);
    let mut k: Vec<f16> = (0..n_ctx * kvd)
        .map(|_| f16::from_f32(rng.random_range(-1.0f32..1.0)))
        .collect();
    let mut v: Vec<f16> = (0..n_ctx * kvd)
        .map(|_| f16::from_f32(rng.random_range(-1.0f32..1.0)))
        .collect();
    for e in n_kv * kvd..n_ctx * kvd {
        k[e] = f16::from_f32(30_000.0);
        v[e] = f16::from_f32(-30_000.0);
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let (want, mag) = reference(&q, &k, &v, s, scale);
    let (qb, kb, vb) = (up(g, &q), up_f16(g, &k), up_f16(g, &v));
    let ob = DevBuf::zeroed(g.stream(), want.len() * 4).unwrap();
    let ws = DevBuf::zeroed(
        g.stream(),
        ops::attention_workspace_bytes(n_tok, n_kv, s.n_head, hd),
    )
    .unwrap();
    ops::attention(
        g,
        qb.span(),
        kb.span(),
        vb.span(),
        ob.span(),
        ws.span(),
        n_tok,
        s.pos0,
        s.n_head,
        n_head_kv,
        hd,
        scale,
    )
    .unwrap();
    let got = down(g, &ob, want.len());
    let big = max_abs(&want).max(1e-30);
    let mbig = mag.iter().fold(0f32, |a, &x| a.max(x));
    let (mut norm, mut rel) = (0f32, 0f32);
    for ((&a, &b), &m) in got.iter().zip(&want).zip(&mag) {
        assert!(
            a.is_finite(),
            "non-finite output: a position past the causal limit was read?"
        );
        let e = (a - b).abs();
        norm = norm.max(e / (m + 1e-6 * mbig));
        rel = rel.max(e / big);
    }
    eprintln!(
        "attention ctx {ctx} n_tok {n_tok} (pos0 {}) heads {}/{n_head_kv} (GQA {group}) hd {hd} q×{qscale}: \
         max error / Σp|v| {norm:.2e}, max error / max|out| {rel:.2e}",
        s.pos0, s.n_head
    );
    (norm, rel)
}

/// Tolerance: the CPU rounds normalised weights to f16, the GPU weights relative to their
/// chunk's max; the two roundings differ by at most 2^-10 of a weight (plus f32 sums), so
/// |error| ≤ ~1e-3 · Σ_t p_t·|v_t|. Typical figures are 1e-5..4e-4.
#[test]
fn attention_matches_the_engine_semantics() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(4);
    let mut worst = (0f32, 0f32);
    let mut case = 0;
    for ctx in [1usize, 5, 300, 5000, 40_000] {
        for n_tok in [1usize, 7] {
            for group in [1usize, 3, 8] {
                for hd in [64usize, 128] {
                    let n_head_kv = if case % 2 == 0 || ctx > 5000 { 1 } else { 2 };
                    let qscale = if case % 3 == 0 { 6.0 } else { 1.0 };
                    case += 1;
                    let e = run_attention(&g, &mut rng, ctx, n_tok, n_head_kv, group, hd, qscale);
                    worst = (worst.0.max(e.0), worst.1.max(e.1));
                }
            }
        }
    }
    // Other widths and a group wider than one block's batch of heads.
    for (ctx, n_tok, n_head_kv, group, hd) in [
        (300usize, 7usize, 1usize, 12usize, 256usize),
        (600, 3, 2, 2, 96),
        (257, 2, 4, 1, 32),
        (513, 1, 1, 16, 8),
    ] {
        let e = run_attention(&g, &mut rng, ctx, n_tok, n_head_kv, group, hd, 2.0);
        worst = (worst.0.max(e.0), worst.1.max(e.1));
    }
    eprintln!(
        "attention worst: error / Σp|v| {:.2e}, error / max|out| {:.2e}",
        worst.0, worst.1
    );
    assert!(worst.0 < 1.5e-3, "{worst:?}");
    assert!(worst.1 < 2.5e-3, "{worst:?}");
}

// ------------------------------------------------------------------------------ element-wise

#[test]
fn swiglu_and_adds_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(5);
    let (rows, n) = (3usize, 1000usize);
    let mut gate = random(&mut rng, rows * n, -20.0, 20.0);
    gate[0] = -100.0;
    gate[1] = 100.0;
    let up_v = random(&mut rng, rows * n, -3.0, 3.0);
    let mut want = gate.clone();
    cpu::swiglu(&mut want, &up_v);
    let (gb, ub) = (up(&g, &gate), up(&g, &up_v));
    ops::swiglu(&g, gb.span(), ub.span(), rows * n).unwrap();
    let got = down(&g, &gb, rows * n);
    let mut worst = 0f32;
    for (&a, &b) in got.iter().zip(&want) {
        worst = worst.max((a - b).abs() / b.abs().max(1e-30));
    }
    eprintln!("swiglu: max relative error {worst:.2e}");
    assert!(worst < 1e-6, "{worst}");

    let x = random(&mut rng, rows * n, -5.0, 5.0);
    let y = random(&mut rng, rows * n, -5.0, 5.0);
    let b = random(&mut rng, n, -1.0, 1.0);
    let mut want = x.clone();
    cpu::add_assign(&mut want, &y);
    cpu::add_bias(&mut want, &b);
    let (xb, yb, bb) = (up(&g, &x), up(&g, &y), up(&g, &b));
    ops::add(&g, xb.span(), yb.span(), rows * n).unwrap();
    ops::add_bias(&g, xb.span(), bb.span(), rows, n).unwrap();
    let got = down(&g, &xb, rows * n);
    assert!(got
        .iter()
        .zip(&want)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    eprintln!("add, add_bias: bit-identical");
}

// ------------------------------------------------------------------------------ argmax

#[test]
fn argmax_matches_cpu_including_ties_and_nan() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(6);
    let mut cases: Vec<Vec<f32>> = Vec::new();
    for n in [1usize, 2, 1000, 49_152, 152_064] {
        let mut l = random(&mut rng, n, -10.0, 10.0);
        if n > 10 {
            // The max three times: the first wins.
            let (a, b, c) = (n / 3, n / 2, n - 1);
            l[a] = 50.0;
            l[b] = 50.0;
            l[c] = 50.0;
        }
        cases.push(l);
    }
    cases.push(vec![f32::NAN, 5.0, 7.0]);
    cases.push(vec![1.0, f32::NAN, 0.5, f32::NAN]);
    cases.push(vec![f32::NEG_INFINITY; 9]);
    cases.push(vec![-0.0, 0.0, -1.0]);
    cases.push(vec![0.0, -0.0]);
    cases.push(vec![-3.0, f32::INFINITY, f32::INFINITY]);
    for l in &cases {
        let lb = up(&g, l);
        let ob = up_i32(&g, &[-1]);
        ops::argmax(&g, lb.span(), l.len(), ob.span()).unwrap();
        let got = down_i32(&g, &ob);
        assert_eq!(got, argmax(l) as i32, "n {}", l.len());
    }
    eprintln!("argmax: {} cases equal to sampler::argmax", cases.len());
}

// ------------------------------------------------------------------------------ repeat penalty

#[test]
fn repeat_penalty_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(7);
    let n = 5000;
    for n_ids in [1usize, 64, 700] {
        let logits = random(&mut rng, n, -8.0, 8.0);
        let mut ids: Vec<i32> = (0..n_ids).map(|_| rng.random_range(0..200)).collect(); // many repeats
        ids[0] = -3;
        if n_ids > 1 {
            ids[n_ids - 1] = n as i32 + 5;
        }
        let window: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let mut want = logits.clone();
        apply_repeat_penalty(&mut want, &window, 1.3);
        let (lb, ib) = (up(&g, &logits), up_i32(&g, &ids));
        ops::repeat_penalty(&g, lb.span(), n, ib.span(), n_ids, 1.3).unwrap();
        let got = down(&g, &lb, n);
        let changed = got.iter().zip(&logits).filter(|(a, b)| a != b).count();
        eprintln!("repeat_penalty: {n_ids} ids, {changed} logits changed");
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{n_ids} ids"
        );
    }
}

// ------------------------------------------------------------------------------ sampling

fn logits_of(rng: &mut StdRng, n: usize, style: usize) -> Vec<f32> {
    match style {
        // A realistic head: a broad bulk, a few strong candidates.
        0 => (0..n)
            .map(|_| {
                rng.random_range(-4.0f32..4.0) + if rng.random_bool(0.001) { 12.0 } else { 0.0 }
            })
            .collect(),
        // Few distinct values: ties everywhere.
        1 => (0..n)
            .map(|_| f32::from(rng.random_range(0u8..8)) * 0.5)
            .collect(),
        // Specials among them.
        2 => (0..n)
            .map(|_| match rng.random_range(0..20) {
                0 => f32::NEG_INFINITY,
                1 => f32::NAN,
                2 => -0.0,
                _ => rng.random_range(-2.0f32..2.0),
            })
            .collect(),
        // Nearly flat: long top-p prefixes.
        3 => (0..n).map(|_| rng.random_range(-0.2f32..0.2)).collect(),
        // Two +inf: nothing to weigh, the first of them.
        5 => (0..n)
            .map(|i| {
                if i == n / 2 || i == n - 1 {
                    f32::INFINITY
                } else {
                    rng.random_range(-1.0f32..1.0)
                }
            })
            .collect(),
        // Nothing finite at all.
        6 => (0..n)
            .map(|i| {
                if i % 3 == 1 {
                    f32::NAN
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect(),
        // Masked: only a handful of finite logits.
        _ => (0..n)
            .map(|i| {
                if i % 997 == 3 {
                    rng.random_range(-1.0f32..1.0)
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect(),
    }
}

#[test]
fn sample_picks_the_cpu_samplers_token_for_the_same_number() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(8);
    let params = [
        (0.8f32, 40usize, 0.95f32, 0.05f32), // llama.cpp defaults: top-k gathered
        (1.0, 0, 1.0, 0.0),                  // the whole vocabulary: by cumulative weight
        (1.0, 0, 0.9, 0.0),                  // pure top-p
        (0.7, 0, 1.0, 0.05),                 // min-p only: gathered if small
        (1.2, 5000, 1.0, 0.0),               // top-k above the gather capacity
        (1.0, 3000, 0.95, 0.01),
        (0.3, 1, 1.0, 0.0),
        (2.0, 2048, 0.5, 0.0),
        (0.0, 40, 0.95, 0.05), // greedy
    ];
    let mut paths = [0usize; 4];
    let mut total = 0;
    let ws = DevBuf::zeroed(g.stream(), ops::sample_workspace_bytes(152_064)).unwrap();
    let ob = up_i32(&g, &[-1]);
    for n in [7usize, 1000, 49_152, 152_064] {
        for style in 0..8 {
            let l = logits_of(&mut rng, n, style);
            let lb = up(&g, &l);
            for &(temp, top_k, top_p, min_p) in &params {
                let p = SampleParams {
                    temperature: temp,
                    top_k,
                    top_p,
                    min_p,
                };
                let draws = if n > 100_000 { 6 } else { 14 };
                for d in 0..draws {
                    let u: f32 = match d {
                        0 => 0.0,
                        1 => 0.5,
                        2 => 1.0 - f32::EPSILON / 2.0,
                        _ => rng.random(),
                    };
                    let want = sample_with(&l, &p, u);
                    ops::sample(
                        &g,
                        lb.span(),
                        n,
                        &GpuSampleParams::from(&p),
                        u,
                        ws.span(),
                        ob.span(),
                    )
                    .unwrap();
                    let got = down_i32(&g, &ob);
                    let mut tb = [0u8; 32];
                    ws.read(g.stream(), &mut tb).unwrap();
                    let trace = SampleTrace::from_bytes(&tb).unwrap();
                    assert_eq!(
                        got, want as i32,
                        "n {n} style {style} params {p:?} u {u}: trace {trace:?}"
                    );
                    if temp > 0.0 {
                        paths[trace.path as usize] += 1;
                    }
                    total += 1;
                }
            }
        }
    }
    eprintln!(
        "sample: {total} draws equal to sample_with; kernel paths: degenerate {}, top-k gathered {}, \
         min-p gathered {}, by weight {}",
        paths[0], paths[1], paths[2], paths[3]
    );
    assert!(
        paths.iter().all(|&c| c > 0),
        "a kernel path never ran: {paths:?}"
    );
}

// ------------------------------------------------------------------------------ refusals

#[test]
fn invalid_launches_are_refused() {
    let Some(g) = gpu() else { return };
    let small = DevBuf::zeroed(g.stream(), 64).unwrap();
    let big = DevBuf::zeroed(g.stream(), 1 << 20).unwrap();
    let (s, b) = (small.span(), big.span());
    let checks: Vec<(&str, bool)> = vec![
        (
            "rms_norm out too small",
            is_invalid(ops::rms_norm(&g, b, b, s, 4, 16, 1e-5)),
        ),
        (
            "rms_norm width 0",
            is_invalid(ops::rms_norm(&g, b, b, b, 4, 0, 1e-5)),
        ),
        (
            "rope odd n_rot",
            is_invalid(ops::rope(
                &g,
                b,
                1,
                1,
                64,
                63,
                0,
                1e4,
                1.0,
                None,
                RopeMode::Normal,
            )),
        ),
        (
            "rope n_rot > head_dim",
            is_invalid(ops::rope(
                &g,
                b,
                1,
                1,
                64,
                66,
                0,
                1e4,
                1.0,
                None,
                RopeMode::Neox,
            )),
        ),
        (
            "rope x too small",
            is_invalid(ops::rope(
                &g,
                s,
                1,
                1,
                64,
                64,
                0,
                1e4,
                1.0,
                None,
                RopeMode::Normal,
            )),
        ),
        (
            "rope factors too short",
            is_invalid(ops::rope(
                &g,
                b,
                1,
                1,
                128,
                128,
                0,
                1e4,
                1.0,
                Some(s),
                RopeMode::Normal,
            )),
        ),
        (
            "kv_store past n_ctx",
            is_invalid(ops::kv_store(&g, b, b, b, b, 10, 8, 8, 3)),
        ),
        (
            "kv_store cache too small",
            is_invalid(ops::kv_store(&g, b, b, s, s, 100, 8, 0, 1)),
        ),
        (
            "attention head_dim 100",
            is_invalid(ops::attention(&g, b, b, b, b, b, 1, 0, 1, 1, 100, 0.1)),
        ),
        (
            "attention head_dim 512",
            is_invalid(ops::attention(&g, b, b, b, b, b, 1, 0, 1, 1, 512, 0.1)),
        ),
        (
            "attention heads 6/4",
            is_invalid(ops::attention(&g, b, b, b, b, b, 1, 0, 6, 4, 64, 0.1)),
        ),
        (
            "attention workspace too small",
            is_invalid(ops::attention(&g, b, b, b, b, s, 1, 10, 2, 1, 64, 0.1)),
        ),
        (
            "attention cache too small",
            is_invalid(ops::attention(&g, b, s, s, b, b, 1, 10, 2, 1, 64, 0.1)),
        ),
        (
            "attention unaligned cache",
            is_invalid(ops::attention(
                &g,
                b,
                big.sub(2, 4096).unwrap(),
                b,
                b,
                b,
                1,
                0,
                1,
                1,
                64,
                0.1,
            )),
        ),
        ("swiglu u too small", is_invalid(ops::swiglu(&g, b, s, 100))),
        ("add y too small", is_invalid(ops::add(&g, b, s, 100))),
        (
            "add_bias bias too small",
            is_invalid(ops::add_bias(&g, b, s, 2, 100)),
        ),
        ("argmax n 0", is_invalid(ops::argmax(&g, b, 0, b))),
        (
            "argmax logits too small",
            is_invalid(ops::argmax(&g, s, 100, b)),
        ),
        (
            "repeat_penalty ids too small",
            is_invalid(ops::repeat_penalty(&g, b, 10, s, 100, 1.1)),
        ),
    ];
    let p = GpuSampleParams {
        temp: 0.8,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.05,
    };
    let mut checks = checks;
    checks.push((
        "sample u = 1",
        is_invalid(ops::sample(&g, b, 100, &p, 1.0, b, b)),
    ));
    checks.push((
        "sample u NaN",
        is_invalid(ops::sample(&g, b, 100, &p, f32::NAN, b, b)),
    ));
    checks.push((
        "sample n 0",
        is_invalid(ops::sample(&g, b, 0, &p, 0.5, b, b)),
    ));
    checks.push((
        "sample workspace too small",
        is_invalid(ops::sample(
            &g,
            b,
            100,
            &p,
            0.5,
            small.sub(0, 8).unwrap(),
            b,
        )),
    ));
    checks.push((
        "sample top_p NaN",
        is_invalid(ops::sample(
            &g,
            b,
            100,
            &GpuSampleParams {
                top_p: f32::NAN,
                ..p
            },
            0.5,
            b,
            b,
        )),
    ));
    checks.push((
        "sample vocab above 2^23",
        is_invalid(ops::sample(&g, b, (1 << 23) + 1, &p, 0.5, b, b)),
    ));
    for (what, refused) in &checks {
        eprintln!("{what}: {}", if *refused { "refused" } else { "ACCEPTED" });
    }
    assert!(checks.iter().all(|c| c.1));
    g.sync().unwrap();
}
