//! Element-wise and normalisation kernels, computed as llama.cpp's CPU backend computes them
//! (same accumulation widths and operation order), so that greedy tokens agree.

use crate::config::RopeMode;

/// RMSNorm of each `n`-wide row of `x` into `out`, then multiplied by `w` (ggml: rms_norm then
/// mul). Squares are rounded to f32 and summed in f64, as ggml does.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum: f64 = xr.iter().map(|&v| f64::from(v * v)).sum();
        #[allow(clippy::cast_possible_truncation)] // ggml narrows the mean to f32 as well
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &xv), &wv) in or.iter_mut().zip(xr).zip(w) {
            *o = (xv * scale) * wv;
        }
    }
}

/// Precomputed cos/sin for one position: `n_rot/2` pairs, as ggml's rope cache builds them
/// (theta multiplied by `theta_scale` pair after pair, in f32).
pub fn rope_cache(
    pos: usize,
    n_rot: usize,
    base: f32,
    freq_scale: f32,
    factors: Option<&[f32]>,
    cache: &mut Vec<(f32, f32)>,
) {
    cache.clear();
    #[allow(clippy::cast_precision_loss)]
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    #[allow(clippy::cast_precision_loss)]
    let mut theta = pos as f32;
    for i in 0..n_rot / 2 {
        let ff = factors.and_then(|f| f.get(i)).copied().unwrap_or(1.0);
        let t = freq_scale * (theta / ff);
        cache.push((t.cos(), t.sin()));
        theta *= theta_scale;
    }
}

/// Rotate the first `n_rot` dims of each `head_dim`-wide head in `x` (one token).
pub fn rope_apply(
    x: &mut [f32],
    head_dim: usize,
    n_rot: usize,
    mode: RopeMode,
    cache: &[(f32, f32)],
) {
    for head in x.chunks_exact_mut(head_dim) {
        match mode {
            RopeMode::Normal => {
                for (i, &(c, s)) in cache.iter().enumerate() {
                    let (a, b) = (head[2 * i], head[2 * i + 1]);
                    head[2 * i] = a.mul_add(c, -(b * s));
                    head[2 * i + 1] = a.mul_add(s, b * c);
                }
            }
            RopeMode::Neox => {
                let half = n_rot / 2;
                for (i, &(c, s)) in cache.iter().enumerate() {
                    let (a, b) = (head[i], head[i + half]);
                    head[i] = a.mul_add(c, -(b * s));
                    head[i + half] = a.mul_add(s, b * c);
                }
            }
        }
    }
}

/// In-place softmax of `x * scale` (ggml soft_max_ext without mask: the caller passes only the
/// visible positions). The sum accumulates in f64.
pub fn softmax_scaled(x: &mut [f32], scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for v in x.iter_mut() {
        *v *= scale;
        max = max.max(*v);
    }
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    #[allow(clippy::cast_possible_truncation)]
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// SwiGLU: `silu(gate) * up`, element-wise, into `gate`, as ggml's AVX2 build computes it: the
/// vectorised SiLU over 8-wide chunks and the scalar one on the tail.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let (gate, up) = (&mut gate[..n], &up[..n]);
    // Element-wise, so the chunks give the same bits as one pass: each chunk is a multiple of
    // 8 long, so the scalar tail (the last `n % 8` elements) stays where it is.
    const CHUNK: usize = 4096;
    if n >= 2 * CHUNK
        && crate::quant::parallel_chunks_mut(gate, CHUNK, &|i, g| {
            let at = i * CHUNK;
            swiglu_part(g, &up[at..at + g.len()]);
        })
        .is_ok()
    {
        return;
    }
    swiglu_part(gate, up);
}

/// [`swiglu`] of one run of elements, with the CPU's FMA instructions where it has them
/// (`f32::mul_add` otherwise calls a library routine per operation: 40 ns an element).
fn swiglu_part(gate: &mut [f32], up: &[f32]) {
    if !crate::quant::swiglu_fma(gate, up) {
        swiglu_body(gate, up);
    }
}

/// The arithmetic of [`swiglu`]: ggml's vectorized SiLU over whole groups of 8, its scalar
/// form for the tail.
#[inline(always)]
pub(crate) fn swiglu_body(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let vec = n & !7;
    for (g, &u) in gate[..vec].iter_mut().zip(&up[..vec]) {
        *g = crate::ggml_math::v_silu(*g) * u;
    }
    for (g, &u) in gate[vec..n].iter_mut().zip(&up[vec..n]) {
        *g = crate::ggml_math::silu(*g) * u;
    }
}

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Add a bias to each row.
pub fn add_bias(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        add_assign(row, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit() {
        let x = [3.0f32, 4.0];
        let mut o = [0f32; 2];
        rms_norm(&x, &[1.0, 2.0], 0.0, &mut o);
        let r = (12.5f32).sqrt();
        assert!((o[0] - 3.0 / r).abs() < 1e-6 && (o[1] - 8.0 / r).abs() < 1e-6);
    }

    /// The threaded FMA path gives ggml's bits: element by element the vectorized SiLU
    /// (`mul_add`, fused either way) for whole groups of 8 and the scalar one for the tail,
    /// over lengths with and without a tail and above and below the threading threshold.
    #[test]
    fn swiglu_threaded_with_fma_equals_the_element_wise_definition() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            #[allow(clippy::cast_precision_loss)]
            let v = (seed >> 40) as f32 / (1u64 << 24) as f32;
            (v - 0.5) * 40.0
        };
        for n in [1usize, 7, 8, 13, 4096, 8192, 8195, 28672, 28679] {
            let g: Vec<f32> = (0..n).map(|_| next()).collect();
            let u: Vec<f32> = (0..n).map(|_| next()).collect();
            let want: Vec<u32> = g
                .iter()
                .zip(&u)
                .enumerate()
                .map(|(i, (&g, &u))| {
                    let s = if i < n & !7 {
                        crate::ggml_math::v_silu(g)
                    } else {
                        crate::ggml_math::silu(g)
                    };
                    (s * u).to_bits()
                })
                .collect();
            let mut got = g.clone();
            swiglu(&mut got, &u);
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "n = {n}");
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [1.0f32, 2.0, 3.0, -1e9];
        softmax_scaled(&mut x, 0.5);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0] && x[3] == 0.0);
    }

    #[test]
    fn rope_position_zero_is_identity_and_rotation_preserves_norm() {
        let mut c = Vec::new();
        rope_cache(0, 4, 10000.0, 1.0, None, &mut c);
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rope_apply(&mut x, 4, 4, RopeMode::Normal, &c);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
        rope_cache(7, 4, 10000.0, 1.0, None, &mut c);
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            let mut y = [1.0f32, 2.0, 3.0, 4.0];
            rope_apply(&mut y, 4, 4, mode, &c);
            let n: f32 = y.iter().map(|v| v * v).sum();
            assert!((n - 30.0).abs() < 1e-4);
        }
    }
}
