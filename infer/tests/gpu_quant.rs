//! The CUDA quant kernels (`kernels/quant.cu` through `src/gpu/quant.rs`) against the CPU
//! engine, for every weight type, on odd and real shapes, with activations over a wide range of
//! magnitudes (`tests/gpu_quant/cases.rs`):
//! - activation quantization byte-identical to `quant::quantize_activations` (NaNs, infinities,
//!   subnormals included);
//! - matvec within `TOL = 1e-5` of `sum |terms|` of `quant::matvec` (1 token) and
//!   `quant::matmul` (2, 3, 8, 13 tokens), where `sum |terms| = sum_i (|w_i| + |w0_i|) |x_i|`
//!   over the dequantized weights `w`, their block offsets `w0` (weights with the quant bits
//!   zeroed) and the dequantized activations `x`: the integer block sums are exact, only the
//!   `f32` summation order differs;
//! - row lookups and dequantization bit-identical to `quant::dequantize` (NaN payloads too);
//! - invalid launches rejected before launching.
//!
//! Tests that need a GPU print `skipped: ...` without one. `emulated_kernels_match_cpu` runs
//! the same cases through the kernels under a CPU emulator of the CUDA execution model
//! (`tests/gpu_quant/emu/`), on any machine with a C++17 compiler (`$CXX`, else `g++`);
//! `emulated_fused_norm_equals_norm_then_quantize` checks the decode path's fused norm there,
//! `emulated_two_rows_a_warp_equal_one_row_a_warp` the products at two rows a warp.
#![allow(clippy::unwrap_used)]

#[path = "gpu_quant/cases.rs"]
mod cases;

use std::path::{Path, PathBuf};
use std::process::Command;

use cases::{bounds, close, cpu_matmul, cpu_quantize, cpu_rows, TOL, TYPES};
use llmstream::gguf::GgmlType;
use llmstream_infer::gpu::{quant as gq, DevBuf, Gpu, GpuError};
use llmstream_infer::quant::{activation_bytes, dequantize, vec_dot_type};

fn gpu() -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(GpuError::Unavailable(why)) => {
            eprintln!("skipped: {why}");
            None
        }
        Err(e) => panic!("GPU present but unusable: {e}"),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn upload(gpu: &Gpu, bytes: &[u8]) -> DevBuf {
    DevBuf::from_host(gpu.stream(), bytes).unwrap()
}

fn download(gpu: &Gpu, buf: &DevBuf, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    buf.read(gpu.stream(), &mut out).unwrap();
    out
}

fn seed(ty: GgmlType, shape: usize) -> u64 {
    1000 * u64::from(ty as u32) + u64::try_from(shape).unwrap()
}

/// The shapes of `cases::shapes` plus real ones (only on a GPU: slow to emulate).
fn gpu_shapes(ty: GgmlType) -> Vec<(usize, usize, usize)> {
    let mut v = cases::shapes(ty);
    v.push((1031, 4096, 1));
    v.push((259, 14336, 2));
    if ty.block_size() == 32 || ty.block_size() == 1 {
        v.push((2049, 576, 1));
    }
    if matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K) {
        // more rows than one wave of fast_mv's blocks holds on an H100 (528 of 8 rows), fewer
        // than one of fast_mv2's: two rows a warp (fast::two_rows)
        v.push((6144, 4096, 1));
    }
    v
}

/// Where two quantized activation buffers first differ, for the failure message.
fn first_difference(ty: GgmlType, got: &[u8], want: &[u8]) -> Option<String> {
    let i = got.iter().zip(want).position(|(a, b)| a != b)?;
    let vty = vec_dot_type(ty).unwrap();
    let bs = usize::try_from(vty.type_size()).unwrap();
    Some(format!(
        "byte {i} (block {}, offset {}): got {:#04x}, CPU {:#04x}",
        i / bs,
        i % bs,
        got[i],
        want[i]
    ))
}

#[test]
fn activation_row_bytes_match_the_cpu() {
    for ty in TYPES {
        let vty = vec_dot_type(ty).unwrap();
        for cols in [256, 4096, 28672] {
            assert_eq!(
                gq::activation_row_bytes(ty, cols).unwrap(),
                activation_bytes(vty, cols).unwrap(),
                "{ty:?}"
            );
        }
    }
    assert!(matches!(
        gq::activation_row_bytes(GgmlType::Q4_K, 4000),
        Err(GpuError::Invalid { .. })
    ));
    assert!(matches!(
        gq::activation_row_bytes(GgmlType::Q2_K, 256),
        Err(GpuError::Unsupported(_))
    ));
}

#[test]
fn quantize_is_byte_identical_to_the_cpu() {
    let Some(gpu) = gpu() else { return };
    for ty in TYPES {
        let vty = vec_dot_type(ty).unwrap();
        let mut checked = 0;
        for (si, &(_, cols, n_tok)) in gpu_shapes(ty).iter().enumerate() {
            let s = seed(ty, si);
            for (kind, x) in [
                ("ordinary", cases::activations(n_tok, cols, s)),
                ("special", cases::special_activations(n_tok, cols, s)),
            ] {
                let want = cpu_quantize(ty, &x, cols);
                let dx = upload(&gpu, &f32_bytes(&x));
                let out = DevBuf::zeroed(gpu.stream(), want.len()).unwrap();
                gq::quantize(&gpu, ty, dx.span(), cols, n_tok, out.span()).unwrap();
                let got = download(&gpu, &out, want.len());
                if let Some(d) = first_difference(ty, &got, &want) {
                    panic!("quantize to {vty:?}, {n_tok} x {cols} {kind} activations: {d}");
                }
                checked += want.len();
            }
        }
        println!("quantize {ty:?} -> {vty:?}: {checked} bytes identical to the CPU");
    }
}

#[test]
fn matvec_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut failures = Vec::new();
    for ty in TYPES {
        let mut worst = 0.0f64;
        for (si, &(rows, cols, n_tok)) in gpu_shapes(ty).iter().enumerate() {
            let s = seed(ty, si);
            let w = cases::weights(ty, rows, cols, s, false);
            let x = cases::activations(n_tok, cols, s);
            let xq = cpu_quantize(ty, &x, cols);
            let want = cpu_matmul(ty, rows, cols, &w, &x);
            let bound = bounds(ty, rows, cols, &w, &xq);
            let dw = upload(&gpu, &w);
            let dx = upload(&gpu, &f32_bytes(&x));
            let dxq = DevBuf::zeroed(gpu.stream(), xq.len()).unwrap();
            let dy = DevBuf::zeroed(gpu.stream(), 4 * rows * n_tok).unwrap();
            gq::quantize(&gpu, ty, dx.span(), cols, n_tok, dxq.span()).unwrap();
            assert_eq!(download(&gpu, &dxq, xq.len()), xq, "{ty:?} activations");
            gq::matvec(
                &gpu,
                ty,
                dw.span(),
                rows,
                cols,
                dxq.span(),
                n_tok,
                dy.span(),
            )
            .unwrap();
            let got = dy.read_f32(gpu.stream(), rows * n_tok).unwrap();
            let mut shape_worst = 0.0f64;
            let mut bad = 0;
            for (i, ((&g, &c), &b)) in got.iter().zip(&want).zip(&bound).enumerate() {
                if !close(g, c, b) {
                    if bad == 0 {
                        failures.push(format!(
                            "{ty:?} {rows}x{cols} n_tok {n_tok}: y[{}][{}] = {g}, CPU {c}, \
                             sum|terms| {b}",
                            i / rows,
                            i % rows
                        ));
                    }
                    bad += 1;
                }
                if b > 0.0 && g.is_finite() && c.is_finite() {
                    shape_worst = shape_worst.max(f64::from((g - c).abs()) / f64::from(b));
                }
            }
            println!(
                "matvec {ty:?} {rows:>5} x {cols:<6} n_tok {n_tok:>2}: max |gpu - cpu| / \
                 sum|terms| = {shape_worst:.2e} (tol {TOL:.0e}), {bad} outside"
            );
            worst = worst.max(shape_worst);
        }
        println!("matvec {ty:?}: worst {worst:.2e}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn get_rows_and_dequantize_are_bit_identical() {
    let Some(gpu) = gpu() else { return };
    for ty in TYPES {
        for (si, &(rows, cols, _)) in gpu_shapes(ty).iter().enumerate() {
            let w = cases::weights(ty, rows, cols, seed(ty, si) + 7, true);
            let r = i32::try_from(rows).unwrap();
            let ids = [0, r - 1, 3 % r, -1, r, i32::MIN, r / 2];
            let want = cpu_rows(ty, rows, cols, &w, &ids);
            let dw = upload(&gpu, &w);
            let ib: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
            let di = upload(&gpu, &ib);
            let out = DevBuf::zeroed(gpu.stream(), 4 * want.len()).unwrap();
            gq::get_rows(
                &gpu,
                ty,
                dw.span(),
                rows,
                cols,
                di.span(),
                ids.len(),
                out.span(),
            )
            .unwrap();
            let got = out.read_f32(gpu.stream(), want.len()).unwrap();
            for (i, (g, c)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    c.to_bits(),
                    "{ty:?} {rows}x{cols}: row {} (id {}) element {}: {g} vs CPU {c}",
                    i / cols,
                    ids[i / cols],
                    i % cols
                );
            }
            // the whole table, to f32 and to f16
            let n = rows * cols;
            let mut all = vec![0.0f32; n];
            dequantize(ty, &w, &mut all).unwrap();
            let o32 = DevBuf::zeroed(gpu.stream(), 4 * n).unwrap();
            gq::dequantize(&gpu, ty, dw.span(), n, o32.span(), GgmlType::F32).unwrap();
            let g32 = o32.read_f32(gpu.stream(), n).unwrap();
            assert!(
                g32.iter()
                    .zip(&all)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty:?} {rows}x{cols}: dequantize to f32 differs"
            );
            let o16 = DevBuf::zeroed(gpu.stream(), 2 * n).unwrap();
            gq::dequantize(&gpu, ty, dw.span(), n, o16.span(), GgmlType::F16).unwrap();
            let g16 = download(&gpu, &o16, 2 * n);
            for (i, (c, v)) in g16.chunks_exact(2).zip(&all).enumerate() {
                let want16 = half::f16::from_f32(*v).to_bits();
                assert_eq!(u16::from_le_bytes([c[0], c[1]]), want16, "{ty:?} f16 {i}");
            }
        }
        println!("get_rows / dequantize {ty:?}: bit-identical to the CPU");
    }
}

#[test]
fn invalid_launches_are_rejected() {
    let Some(gpu) = gpu() else { return };
    let invalid = |r: Result<(), GpuError>, what: &str| {
        assert!(
            matches!(r, Err(GpuError::Invalid { .. })),
            "{what}: {r:?} instead of Invalid"
        );
    };
    let ty = GgmlType::Q4_0;
    let (rows, cols) = (8, 64);
    let w = DevBuf::zeroed(gpu.stream(), rows * cols / 32 * 18).unwrap();
    let xq = DevBuf::zeroed(gpu.stream(), 2 * 34 * 2).unwrap();
    let y = DevBuf::zeroed(gpu.stream(), 4 * rows * 2).unwrap();
    let x = DevBuf::zeroed(gpu.stream(), 4 * cols * 2).unwrap();
    let (ws, xs, ys) = (w.span(), xq.span(), y.span());
    assert!(gq::matvec(&gpu, ty, ws, rows, cols, xs, 2, ys).is_ok());
    gpu.sync().unwrap();
    invalid(
        gq::matvec(&gpu, ty, ws, rows, 48, xs, 1, ys),
        "cols not whole blocks",
    );
    invalid(gq::matvec(&gpu, ty, ws, rows, cols, xs, 0, ys), "no tokens");
    invalid(gq::matvec(&gpu, ty, ws, 0, cols, xs, 1, ys), "no rows");
    invalid(
        gq::matvec(&gpu, ty, ws, rows + 1, cols, xs, 1, ys),
        "weights too short",
    );
    invalid(
        gq::matvec(&gpu, ty, ws, rows, cols, xs, 3, ys),
        "activations too short",
    );
    let y_short = y.sub(0, 4 * rows * 2 - 4).unwrap();
    invalid(
        gq::matvec(&gpu, ty, ws, rows, cols, xs, 2, y_short),
        "output too short",
    );
    let w_odd = w.sub(2, w.len() - 2).unwrap();
    invalid(
        gq::matvec(&gpu, ty, w_odd, rows - 1, cols, xs, 1, ys),
        "weights misaligned",
    );
    let x_odd = xq.sub(4, 68).unwrap();
    invalid(
        gq::matvec(&gpu, ty, ws, rows, cols, x_odd, 1, ys),
        "activations misaligned",
    );
    let y_odd = y.sub(2, 8).unwrap();
    invalid(
        gq::matvec(&gpu, ty, ws, 1, cols, xs, 1, y_odd),
        "output misaligned",
    );
    assert!(matches!(
        gq::matvec(&gpu, GgmlType::Q2_K, ws, 1, 256, xs, 1, ys),
        Err(GpuError::Unsupported(_))
    ));
    // quantize
    let xsp = x.span();
    invalid(gq::quantize(&gpu, ty, xsp, cols, 3, xs), "x too short");
    invalid(
        gq::quantize(&gpu, ty, xsp, 48, 1, xs),
        "cols not whole blocks",
    );
    invalid(gq::quantize(&gpu, ty, xsp, cols, 0, xs), "no tokens");
    let small = xq.sub(0, 67).unwrap();
    invalid(gq::quantize(&gpu, ty, xsp, cols, 1, small), "out too short");
    invalid(
        gq::quantize(&gpu, GgmlType::Q4_K, xsp, cols, 1, xs),
        "Q8_K needs 256",
    );
    // get_rows
    let ids = DevBuf::zeroed(gpu.stream(), 8).unwrap();
    let out = DevBuf::zeroed(gpu.stream(), 4 * cols * 2).unwrap();
    let (is, os) = (ids.span(), out.span());
    assert!(gq::get_rows(&gpu, ty, ws, rows, cols, is, 2, os).is_ok());
    gpu.sync().unwrap();
    invalid(
        gq::get_rows(&gpu, ty, ws, rows, cols, is, 3, os),
        "ids too short",
    );
    invalid(
        gq::get_rows(&gpu, ty, ws, rows + 1, cols, is, 2, os),
        "table too short",
    );
    let o_short = out.sub(0, 4 * cols * 2 - 4).unwrap();
    invalid(
        gq::get_rows(&gpu, ty, ws, rows, cols, is, 2, o_short),
        "out too short",
    );
    invalid(gq::get_rows(&gpu, ty, ws, rows, cols, is, 0, os), "no ids");
    let i_odd = ids.sub(2, 4).unwrap();
    invalid(
        gq::get_rows(&gpu, ty, ws, rows, cols, i_odd, 1, os),
        "ids misaligned",
    );
    // dequantize
    invalid(
        gq::dequantize(&gpu, ty, ws, 48, os, GgmlType::F32),
        "not whole blocks",
    );
    invalid(
        gq::dequantize(&gpu, ty, ws, 64, os, GgmlType::Q8_0),
        "output type",
    );
    invalid(
        gq::dequantize(&gpu, ty, ws, rows * cols, os, GgmlType::F32),
        "output too short",
    );
    gpu.sync().unwrap();
    println!("invalid launches: all rejected");
}

// ------------------------------------------------------------------------------ emulation

/// Removes a directory when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes every case of `cases::shapes` in the format `emu/main.cpp` reads.
fn write_cases(dir: &Path) {
    let mut index = String::new();
    let mut n = 0;
    for ty in TYPES {
        for (si, &(rows, cols, n_tok)) in cases::shapes(ty).iter().enumerate() {
            let s = seed(ty, si);
            let w = cases::weights(ty, rows, cols, s, false);
            let x = cases::activations(n_tok, cols, s);
            let xq = cpu_quantize(ty, &x, cols);
            let y = cpu_matmul(ty, rows, cols, &w, &x);
            let b = bounds(ty, rows, cols, &w, &xq);
            let xs = cases::special_activations(n_tok, cols, s);
            let xsq = cpu_quantize(ty, &xs, cols);
            let wsp = cases::weights(ty, rows, cols, s + 7, true);
            let r = i32::try_from(rows).unwrap();
            let ids = [0, r - 1, 3 % r, -1, r, i32::MIN];
            let rws = cpu_rows(ty, rows, cols, &wsp, &ids);
            let d = dir.join(format!("{n:03}"));
            std::fs::create_dir_all(&d).unwrap();
            let ib: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
            for (name, bytes) in [
                ("w.bin", w),
                ("x.bin", f32_bytes(&x)),
                ("xq.bin", xq),
                ("y.bin", f32_bytes(&y)),
                ("bound.bin", f32_bytes(&b)),
                ("xs.bin", f32_bytes(&xs)),
                ("xsq.bin", xsq),
                ("wsp.bin", wsp),
                ("ids.bin", ib),
                ("rows.bin", f32_bytes(&rws)),
            ] {
                std::fs::write(d.join(name), bytes).unwrap();
            }
            index.push_str(&format!(
                "{n:03} {} {rows} {cols} {n_tok} {}\n",
                ty as u32,
                ids.len()
            ));
            n += 1;
        }
    }
    std::fs::write(dir.join("index.txt"), index).unwrap();
}

/// `$CXX` (else `g++`) when it runs, to build an emulator program.
fn cxx() -> Option<String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    if Command::new(&cxx).arg("--version").output().is_err() {
        eprintln!("skipped: no C++ compiler ({cxx}) to build the kernel emulator");
        return None;
    }
    Some(cxx)
}

/// Builds `tests/gpu_quant/emu/<program>` into `dir` (with `kernels/`, the emulator's folder
/// and `dir` on the include path), runs it with `dir` as its argument and asserts it succeeded.
fn build_and_run_emulated(cxx: &str, program: &str, dir: &Path, what: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = dir.join("emu");
    let built = Command::new(cxx)
        .args([
            "-std=c++17",
            "-O1",
            "-ffp-contract=off",
            "-fno-strict-aliasing",
            "-w",
        ])
        .arg("-I")
        .arg(root.join("../kernels"))
        .arg("-I")
        .arg(root.join("tests/gpu_quant/emu"))
        .arg("-I")
        .arg(dir)
        .arg(root.join("tests/gpu_quant/emu").join(program))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "building the emulator failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe).arg(dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "{what}:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn emulated_kernels_match_cpu() {
    let Some(cxx) = cxx() else { return };
    let dir =
        TempDir(std::env::temp_dir().join(format!("llmstream-quant-emu-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    write_cases(&dir.0);
    build_and_run_emulated(
        &cxx,
        "main.cpp",
        &dir.0,
        "emulated kernels disagree with the CPU",
    );
}

/// Runs emulator `program` with `kernels/ops.cu` up to its section `until` (the rest needs more
/// of CUDA than the emulator has) written as `cut` next to it; `holds`: what the cut must
/// contain.
fn emulate_with_ops_cut(until: &str, holds: &str, cut: &str, program: &str, what: &str) {
    let Some(cxx) = cxx() else { return };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ops = std::fs::read_to_string(root.join("../kernels/ops.cu")).unwrap();
    let end = ops
        .lines()
        .position(|l| l.starts_with("// ---") && l.ends_with(&format!(" {until}")))
        .unwrap_or_else(|| panic!("kernels/ops.cu has a {until} section"));
    let part: String = ops.lines().take(end).map(|l| format!("{l}\n")).collect();
    assert!(part.contains(holds), "the cut of ops.cu holds {holds}");
    let dir = TempDir(
        std::env::temp_dir().join(format!("llmstream-emu-{program}-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join(cut), part).unwrap();
    build_and_run_emulated(&cxx, program, &dir.0, what);
}

/// The fused decode norm (`ops_rms_norm_q8k`) against `ops_rms_norm` then `quant_act_q8_k`,
/// byte for byte under the emulator (`emu/norm.cpp`): the reductions and rms_norm sections of
/// `kernels/ops.cu`, up to its rope section, are cut out for it.
#[test]
fn emulated_fused_norm_equals_norm_then_quantize() {
    emulate_with_ops_cut(
        "rope",
        "ops_rms_norm_q8k(",
        "ops_norm.cu",
        "norm.cpp",
        "the emulated fused norm differs from the norm then the quantization",
    );
}

/// The decode products with two rows a warp (`fast_mv2`) give `fast_mv`'s bytes, under the
/// kernel emulator (`emu/fast.cpp`): plain, added-to, and with RoPE and the KV cache store in
/// the epilogue; `kernels/ops.cu` up to its kv_store section (the rope angles) is cut out.
#[test]
fn emulated_two_rows_a_warp_equal_one_row_a_warp() {
    emulate_with_ops_cut(
        "kv_store",
        "op_rope_angle(",
        "ops_rope.cu",
        "fast.cpp",
        "the emulated products with two rows a warp differ from one row a warp",
    );
}
