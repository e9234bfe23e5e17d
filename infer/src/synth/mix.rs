//! Quant mixes: which ggml type each weight matrix gets.
//!
//! - One type for every matrix (`q4_0` ... `f32`), like llama.cpp's `--pure`.
//! - `q4_k_m` as llama.cpp's quantizer picks it: `Q4_K` everywhere except `output` (`Q6_K`),
//!   a tied `token_embd` (quantized as the output it doubles for: `Q6_K`), and `attn_v` and
//!   `ffn_down` in the layers [`use_more_bits`] picks (`Q6_K`); on a Llama 70B shape (80
//!   layers with grouped KV heads) the other `attn_v` get `Q5_K`.
//! - `all`: the eleven generated types in turn over the matrices in file order, skipping a
//!   type whose block does not divide the matrix's rows, so a small model covers every type.
//!
//! Norms and biases are `F32` in every mix.

use super::blocks::TYPES;
use super::SynthError;
use llmstream::gguf::GgmlType;
use std::fmt;
use std::str::FromStr;

/// A quant mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantMix {
    /// One type for every matrix.
    Single(GgmlType),
    /// llama.cpp's `Q4_K_M`.
    Q4KM,
    /// Every generated type in turn.
    All,
}

/// What a weight matrix is, for the mix rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `token_embd.weight`.
    TokenEmbd,
    /// `output.weight`.
    Output,
    /// `attn_q.weight`.
    AttnQ,
    /// `attn_k.weight`.
    AttnK,
    /// `attn_v.weight`.
    AttnV,
    /// `attn_output.weight`.
    AttnOutput,
    /// `ffn_gate.weight`.
    FfnGate,
    /// `ffn_up.weight`.
    FfnUp,
    /// `ffn_down.weight`.
    FfnDown,
}

/// A matrix to give a type to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matrix {
    /// Its role.
    pub role: Role,
    /// Its layer (`None` for `token_embd` and `output`).
    pub layer: Option<usize>,
    /// Its row length.
    pub cols: u64,
}

/// The model facts the mix rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixContext {
    /// Layers.
    pub n_layer: usize,
    /// True when `output` is `token_embd`.
    pub tied: bool,
    /// True for llama.cpp's 70B model type (Llama, 80 layers, fewer KV heads than heads).
    pub is_70b: bool,
}

/// llama.cpp's rule for the layers of a `*_K_M` mix that get more bits: the first and last
/// eighth of the layers, and every third layer in between.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

const NAMES: [(&str, GgmlType); 11] = [
    ("f32", GgmlType::F32),
    ("f16", GgmlType::F16),
    ("bf16", GgmlType::BF16),
    ("q4_0", GgmlType::Q4_0),
    ("q4_1", GgmlType::Q4_1),
    ("q5_0", GgmlType::Q5_0),
    ("q5_1", GgmlType::Q5_1),
    ("q8_0", GgmlType::Q8_0),
    ("q4_k", GgmlType::Q4_K),
    ("q5_k", GgmlType::Q5_K),
    ("q6_k", GgmlType::Q6_K),
];

impl FromStr for QuantMix {
    type Err = SynthError;

    fn from_str(s: &str) -> Result<Self, SynthError> {
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "q4_k_m" => Ok(Self::Q4KM),
            "all" => Ok(Self::All),
            name => NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, t)| Self::Single(t))
                .ok_or_else(|| SynthError::UnknownQuant(s.to_owned())),
        }
    }
}

impl fmt::Display for QuantMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(t) => {
                let name = NAMES.iter().find(|(_, x)| x == t).map_or("?", |(n, _)| n);
                f.write_str(name)
            }
            Self::Q4KM => f.write_str("q4_k_m"),
            Self::All => f.write_str("all"),
        }
    }
}

impl QuantMix {
    /// llama.cpp's `general.file_type` (`llama_ftype`) for the mix, `None` for `all`. A
    /// single K type reads as the `_S` mix of that type (the closest llama.cpp has).
    pub fn file_type(self) -> Option<u32> {
        Some(match self {
            Self::Single(t) => match t {
                GgmlType::F32 => 0,
                GgmlType::F16 => 1,
                GgmlType::Q4_0 => 2,
                GgmlType::Q4_1 => 3,
                GgmlType::Q8_0 => 7,
                GgmlType::Q5_0 => 8,
                GgmlType::Q5_1 => 9,
                GgmlType::Q4_K => 14,
                GgmlType::Q5_K => 16,
                GgmlType::Q6_K => 18,
                GgmlType::BF16 => 32,
                _ => return None,
            },
            Self::Q4KM => 15,
            Self::All => return None,
        })
    }

    /// The type of each matrix (in file order).
    pub fn assign(self, ctx: MixContext, matrices: &[Matrix]) -> Vec<GgmlType> {
        let mut next = 0usize;
        matrices
            .iter()
            .map(|m| match self {
                Self::Single(t) => t,
                Self::Q4KM => q4_k_m(ctx, m),
                Self::All => {
                    // The next type in turn whose block divides the rows (F32 always does).
                    let (skip, t) = (0..TYPES.len())
                        .map(|k| (k, TYPES[(next + k) % TYPES.len()]))
                        .find(|(_, t)| m.cols % t.block_size() == 0)
                        .unwrap_or((0, GgmlType::F32));
                    next += skip + 1;
                    t
                }
            })
            .collect()
    }
}

fn q4_k_m(ctx: MixContext, m: &Matrix) -> GgmlType {
    let more = |i: Option<usize>| i.is_some_and(|i| use_more_bits(i, ctx.n_layer));
    match m.role {
        Role::Output => GgmlType::Q6_K,
        Role::TokenEmbd if ctx.tied => GgmlType::Q6_K,
        Role::AttnV if more(m.layer) => GgmlType::Q6_K,
        Role::AttnV if ctx.is_70b => GgmlType::Q5_K,
        Role::FfnDown if more(m.layer) => GgmlType::Q6_K,
        _ => GgmlType::Q4_K,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_for_32_layers() {
        let picked: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        // First 4, last 4, and 4 + 3k + 2 in between.
        assert_eq!(
            picked,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    fn layer_matrices(n: usize) -> Vec<Matrix> {
        let mut v = vec![Matrix {
            role: Role::TokenEmbd,
            layer: None,
            cols: 256,
        }];
        for i in 0..n {
            for role in [
                Role::AttnQ,
                Role::AttnK,
                Role::AttnV,
                Role::AttnOutput,
                Role::FfnGate,
                Role::FfnUp,
                Role::FfnDown,
            ] {
                v.push(Matrix {
                    role,
                    layer: Some(i),
                    cols: 256,
                });
            }
        }
        v.push(Matrix {
            role: Role::Output,
            layer: None,
            cols: 256,
        });
        v
    }

    #[test]
    fn q4_k_m_follows_llama_cpp() {
        let ms = layer_matrices(32);
        let ctx = MixContext {
            n_layer: 32,
            tied: false,
            is_70b: false,
        };
        let types = QuantMix::Q4KM.assign(ctx, &ms);
        for (m, t) in ms.iter().zip(&types) {
            let want = match (m.role, m.layer) {
                (Role::Output, _) => GgmlType::Q6_K,
                (Role::AttnV | Role::FfnDown, Some(i)) if use_more_bits(i, 32) => GgmlType::Q6_K,
                _ => GgmlType::Q4_K,
            };
            assert_eq!(*t, want, "{m:?}");
        }
        assert_eq!(types.iter().filter(|&&t| t == GgmlType::Q6_K).count(), 33);
        let tied = QuantMix::Q4KM.assign(MixContext { tied: true, ..ctx }, &ms);
        assert_eq!(tied[0], GgmlType::Q6_K);
        let big = QuantMix::Q4KM.assign(
            MixContext {
                n_layer: 80,
                tied: false,
                is_70b: true,
            },
            &layer_matrices(80),
        );
        // Layer 10 is not picked by use_more_bits(10, 80): its attn_v gets Q5_K.
        assert!(!use_more_bits(10, 80));
        assert_eq!(big[1 + 10 * 7 + 2], GgmlType::Q5_K);
        assert_eq!(big[1 + 10 * 7 + 6], GgmlType::Q4_K);
    }

    #[test]
    fn all_covers_every_type_and_respects_blocks() {
        let ms = layer_matrices(2);
        let ctx = MixContext {
            n_layer: 2,
            tied: false,
            is_70b: false,
        };
        let types = QuantMix::All.assign(ctx, &ms);
        for t in TYPES {
            assert!(types.contains(&t), "{t}");
        }
        // Rows of 64: K types are skipped.
        let narrow: Vec<Matrix> = ms.iter().map(|m| Matrix { cols: 64, ..*m }).collect();
        let types = QuantMix::All.assign(ctx, &narrow);
        assert!(types.iter().all(|t| t.block_size() <= 32));
        assert!(types.contains(&GgmlType::Q8_0) && types.contains(&GgmlType::BF16));
    }

    #[test]
    fn names_parse_and_print() {
        for (name, t) in NAMES {
            let m: QuantMix = name.parse().unwrap();
            assert_eq!(m, QuantMix::Single(t));
            assert_eq!(m.to_string(), name);
        }
        assert_eq!("Q4_K_M".parse::<QuantMix>().unwrap(), QuantMix::Q4KM);
        assert_eq!("all".parse::<QuantMix>().unwrap(), QuantMix::All);
        assert!(matches!(
            "q3_k".parse::<QuantMix>(),
            Err(SynthError::UnknownQuant(_))
        ));
    }
}
