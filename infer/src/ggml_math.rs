//! Scalar emulations of the float kernels llama.cpp's x86 CPU backend (AVX2 + FMA build) runs in
//! attention and activations, reproduced operation for operation so that results are
//! bit-identical: the vectorised `exp` (`ggml_v_expf`), SiLU, the 4 x 8-lane FMA dot product
//! (`ggml_vec_dot_f32`) and its lane reduction, and the softmax that sums 8-lane chunks.
//!
//! Small models amplify one-ulp differences in attention into visibly different logits (the
//! activations are re-quantized to 8 bits before every matrix product, so an ulp can move a
//! rounding boundary), which is why these are emulated rather than approximated.

/// ggml's vectorised `expf` for one lane (`ggml_v_expf`, AVX2 + FMA).
#[inline(always)]
pub fn v_expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4B40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3FB8_AA3B), r); // log2(e)
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35BF_BE8E),                  // 0x1.7f7d1cp-20
        (-n).mul_add(f32::from_bits(0x3F31_7200), x), // 0x1.62e4p-1
    );
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let c = n.abs() > 126.0;
    let u = b * b;
    let j = f32::from_bits(0x3C07_2010) // 0x1.0e4020p-7
        .mul_add(b, f32::from_bits(0x3D2B_9F17)) // 0x1.573e2ep-5
        .mul_add(
            u,
            f32::from_bits(0x3E2A_AF33).mul_add(b, f32::from_bits(0x3EFF_FEDB)), // 0x1.555e66p-3, 0x1.fffdb6p-2
        )
        .mul_add(u, f32::from_bits(0x3F7F_FFF6) * b); // 0x1.ffffecp-1
    if !c {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// ggml's vectorised SiLU for one lane: `x / (1 + v_expf(-x))`.
#[inline(always)]
pub fn v_silu(x: f32) -> f32 {
    x / (1.0 + v_expf(0.0 - x))
}

/// Scalar SiLU as ggml computes the tail of a row (`x / (1 + expf(-x))`).
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// The 4 x 8 lanes of `ggml_vec_dot_f32` (AVX2): element `i` of the SIMD part goes to lane
/// `i % 32`.
#[derive(Debug, Clone, Copy)]
pub struct Lanes32(pub [f32; 32]);

impl Default for Lanes32 {
    fn default() -> Self {
        Lanes32([0.0; 32])
    }
}

impl Lanes32 {
    /// `GGML_F32x8_REDUCE`: (x0+x2)+(x1+x3) lane-wise, then the two 128-bit halves, then two
    /// horizontal adds.
    pub fn reduce(&self) -> f32 {
        let x = &self.0;
        let mut a = [0f32; 8];
        for (i, v) in a.iter_mut().enumerate() {
            *v = (x[i] + x[16 + i]) + (x[8 + i] + x[24 + i]);
        }
        let t = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
        (t[0] + t[1]) + (t[2] + t[3])
    }
}

/// `ggml_vec_dot_f32` (AVX2 + FMA build): 32-element steps into four 8-lane FMA accumulators,
/// the lane reduction, then a scalar tail in f32.
pub fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n & !31;
    let mut l = Lanes32::default();
    for (xc, yc) in x[..np].chunks_exact(32).zip(y[..np].chunks_exact(32)) {
        for i in 0..32 {
            l.0[i] = xc[i].mul_add(yc[i], l.0[i]);
        }
    }
    let mut s = l.reduce();
    for i in np..n {
        s += x[i] * y[i];
    }
    s
}

/// Sum of 8 lanes as `ggml_vec_soft_max_f32` reduces one AVX2 chunk, and as llamafile's
/// `tinyBLAS` reduces an accumulator (`hsum`): the 128-bit halves, then `movehl`, then
/// `movehdup`.
pub fn hsum8(v: &[f32]) -> f32 {
    let a = [v[4] + v[0], v[5] + v[1], v[6] + v[2], v[7] + v[3]];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// `ggml_soft_max_ext` of one row without mask or ALiBi over the visible positions: scale,
/// max, `v_expf` over 8-wide chunks (scalar `expf` for a tail), an f64 sum of per-chunk f32
/// sums, and a multiply by the f32 reciprocal. llama.cpp pads the row with masked positions
/// (exp = 0) to a multiple of 256, so the tail of the visible part is computed as a full chunk
/// padded with zeros.
pub fn softmax(x: &mut [f32], scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for v in x.iter_mut() {
        *v *= scale;
        max = max.max(*v);
    }
    let mut sum = 0f64;
    for c in x.chunks_mut(8) {
        let mut e = [0f32; 8];
        for (o, v) in e.iter_mut().zip(c.iter_mut()) {
            *o = v_expf(*v - max);
            *v = *o;
        }
        sum += f64::from(hsum8(&e));
    }
    #[allow(clippy::cast_possible_truncation)] // ggml narrows the reciprocal to f32 too
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_expf_is_close_to_exp_and_handles_the_extremes() {
        for i in -1700..=1700 {
            #[allow(clippy::cast_precision_loss)]
            let x = i as f32 * 0.05;
            let (a, b) = (v_expf(x), x.exp());
            assert!(
                (a - b).abs() <= b * 4e-7 + f32::MIN_POSITIVE,
                "{x}: {a} vs {b}"
            );
        }
        assert_eq!(v_expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(v_expf(-1000.0), 0.0);
        assert_eq!(v_expf(0.0), 1.0);
    }

    #[test]
    fn dot_matches_exact_sum_closely() {
        let x: Vec<f32> = (0..77).map(|i| (i as f32 * 0.37).sin()).collect();
        let y: Vec<f32> = (0..77).map(|i| (i as f32 * 0.11).cos()).collect();
        let exact: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        assert!((f64::from(dot_f32(&x, &y)) - exact).abs() < 1e-5);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x: Vec<f32> = (0..13).map(|i| i as f32 * 0.3).collect();
        softmax(&mut x, 0.7);
        let s: f32 = x.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
    }
}
