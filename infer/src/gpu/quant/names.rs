//! The kernel names of `kernels/quant.cu`, by weight type and number of activation rows, and
//! the flat list [`KERNELS`] that the loader looks up.

use llmstream::gguf::GgmlType;

/// One name per activation-row count 1..=8 (`<prefix>_n1` ... `<prefix>_n8`).
macro_rules! by_rows {
    ($p:literal) => {
        [
            concat!($p, "_n1"),
            concat!($p, "_n2"),
            concat!($p, "_n3"),
            concat!($p, "_n4"),
            concat!($p, "_n5"),
            concat!($p, "_n6"),
            concat!($p, "_n7"),
            concat!($p, "_n8"),
        ]
    };
}

/// Kernels by activation-row count.
pub(super) type ByRows = [&'static str; 8];

const MV_Q4_0: ByRows = by_rows!("quant_mv_q4_0");
const MV_Q4_1: ByRows = by_rows!("quant_mv_q4_1");
const MV_Q5_0: ByRows = by_rows!("quant_mv_q5_0");
const MV_Q5_1: ByRows = by_rows!("quant_mv_q5_1");
const MV_Q8_0: ByRows = by_rows!("quant_mv_q8_0");
const MV_Q4_K: ByRows = by_rows!("quant_mv_q4_k");
const MV_Q5_K: ByRows = by_rows!("quant_mv_q5_k");
const MV_Q6_K: ByRows = by_rows!("quant_mv_q6_k");
const MVF_F32_V4: ByRows = by_rows!("quant_mvf_f32_v4");
const MVF_F32_V1: ByRows = by_rows!("quant_mvf_f32_v1");
const MVF_F16_V8: ByRows = by_rows!("quant_mvf_f16_v8");
const MVF_F16_V1: ByRows = by_rows!("quant_mvf_f16_v1");
const MVF_BF16_V8: ByRows = by_rows!("quant_mvf_bf16_v8");
const MVF_BF16_V1: ByRows = by_rows!("quant_mvf_bf16_v1");

const ACT: [&str; 6] = [
    "quant_act_f32",
    "quant_act_f16",
    "quant_act_bf16",
    "quant_act_q8_0",
    "quant_act_q8_1",
    "quant_act_q8_k",
];

/// The 13 dequantizable types, in the order of [`ROWS`] and [`DEQ`].
const DEQ_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];
const ROWS: [&str; 13] = [
    "quant_rows_f32",
    "quant_rows_f16",
    "quant_rows_bf16",
    "quant_rows_q4_0",
    "quant_rows_q4_1",
    "quant_rows_q5_0",
    "quant_rows_q5_1",
    "quant_rows_q8_0",
    "quant_rows_q8_1",
    "quant_rows_q4_k",
    "quant_rows_q5_k",
    "quant_rows_q6_k",
    "quant_rows_q8_k",
];
const DEQ: [&str; 13] = [
    "quant_deq_f32",
    "quant_deq_f16",
    "quant_deq_bf16",
    "quant_deq_q4_0",
    "quant_deq_q4_1",
    "quant_deq_q5_0",
    "quant_deq_q5_1",
    "quant_deq_q8_0",
    "quant_deq_q8_1",
    "quant_deq_q4_k",
    "quant_deq_q5_k",
    "quant_deq_q6_k",
    "quant_deq_q8_k",
];

const GROUPS: &[&[&str]] = &[
    &MV_Q4_0,
    &MV_Q4_1,
    &MV_Q5_0,
    &MV_Q5_1,
    &MV_Q8_0,
    &MV_Q4_K,
    &MV_Q5_K,
    &MV_Q6_K,
    &MVF_F32_V4,
    &MVF_F32_V1,
    &MVF_F16_V8,
    &MVF_F16_V1,
    &MVF_BF16_V8,
    &MVF_BF16_V1,
    &ACT,
    &ROWS,
    &DEQ,
];

const fn count(groups: &[&[&str]]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < groups.len() {
        n += groups[i].len();
        i += 1;
    }
    n
}

const fn flatten<const N: usize>(groups: &[&[&'static str]]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut k = 0;
    let mut i = 0;
    while i < groups.len() {
        let mut j = 0;
        while j < groups[i].len() {
            out[k] = groups[i][j];
            k += 1;
            j += 1;
        }
        i += 1;
    }
    out
}

const ALL: [&str; count(GROUPS)] = flatten(GROUPS);

/// Every kernel defined in `kernels/quant.cu`.
pub(crate) const KERNELS: &[&str] = &ALL;

/// The fused quantized matvec kernels for weights of type `ty`.
pub(super) fn matvec_quant(ty: GgmlType) -> Option<&'static ByRows> {
    Some(match ty {
        GgmlType::Q4_0 => &MV_Q4_0,
        GgmlType::Q4_1 => &MV_Q4_1,
        GgmlType::Q5_0 => &MV_Q5_0,
        GgmlType::Q5_1 => &MV_Q5_1,
        GgmlType::Q8_0 => &MV_Q8_0,
        GgmlType::Q4_K => &MV_Q4_K,
        GgmlType::Q5_K => &MV_Q5_K,
        GgmlType::Q6_K => &MV_Q6_K,
        _ => return None,
    })
}

/// The float matvec kernels for weights of type `ty`, with 16-byte loads (`wide`) or
/// element loads.
pub(super) fn matvec_float(ty: GgmlType, wide: bool) -> Option<&'static ByRows> {
    Some(match (ty, wide) {
        (GgmlType::F32, true) => &MVF_F32_V4,
        (GgmlType::F32, false) => &MVF_F32_V1,
        (GgmlType::F16, true) => &MVF_F16_V8,
        (GgmlType::F16, false) => &MVF_F16_V1,
        (GgmlType::BF16, true) => &MVF_BF16_V8,
        (GgmlType::BF16, false) => &MVF_BF16_V1,
        _ => return None,
    })
}

/// The activation quantization kernel producing `vty` (a `vec_dot_type`).
pub(super) fn quantize(vty: GgmlType) -> Option<&'static str> {
    Some(match vty {
        GgmlType::F32 => ACT[0],
        GgmlType::F16 => ACT[1],
        GgmlType::BF16 => ACT[2],
        GgmlType::Q8_0 => ACT[3],
        GgmlType::Q8_1 => ACT[4],
        GgmlType::Q8_K => ACT[5],
        _ => return None,
    })
}

/// `(row lookup, dequantize)` kernels for `ty`.
pub(super) fn dequant(ty: GgmlType) -> Option<(&'static str, &'static str)> {
    let i = DEQ_TYPES.iter().position(|&t| t == ty)?;
    Some((ROWS[i], DEQ[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_complete() {
        let mut seen = std::collections::HashSet::new();
        for n in KERNELS {
            assert!(n.starts_with("quant_"), "{n}");
            assert!(seen.insert(*n), "{n} twice");
        }
        assert_eq!(KERNELS.len(), 14 * 8 + 6 + 2 * 13);
        for ty in crate::quant::bench::WEIGHT_TYPES {
            let any = matvec_quant(ty).is_some() || matvec_float(ty, true).is_some();
            assert!(any, "{ty:?} has no matvec");
            assert!(dequant(ty).is_some(), "{ty:?} has no row lookup");
            let vty = crate::quant::vec_dot_type(ty).unwrap();
            assert!(quantize(vty).is_some(), "{vty:?} has no quantizer");
        }
    }

    /// The names the macros in `kernels/quant.cu` generate are the ones listed here.
    #[test]
    fn names_follow_the_kernel_macros() {
        let src = include_str!("../../../../kernels/quant.cu");
        for n in KERNELS {
            let ok = if let Some(rest) = n.strip_prefix("quant_mv_") {
                let ty = rest.rsplit_once("_n").map(|(t, _)| t).unwrap_or("");
                src.contains(&format!("LSQ_MVQ_ALL({ty},"))
            } else if let Some(rest) = n.strip_prefix("quant_mvf_") {
                let (ty, v) = rest
                    .rsplit_once("_n")
                    .and_then(|(p, _)| p.rsplit_once("_v"))
                    .unwrap_or(("", ""));
                src.contains(&format!("LSQ_MVF_ALL({ty},")) && src.contains(&format!(", {v})"))
            } else if let Some(ty) = n
                .strip_prefix("quant_rows_")
                .or_else(|| n.strip_prefix("quant_deq_"))
            {
                src.contains(&format!("LSQ_DEQ({ty},"))
            } else {
                src.contains(&format!("void __launch_bounds__(256)\n    {n}("))
            };
            assert!(ok, "{n} is not generated by kernels/quant.cu");
        }
    }
}
