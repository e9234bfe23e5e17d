//! The tokenizer's description as plain data, and its reading from GGUF metadata.

use llmstream::gguf::{GgufFile, Value};

use super::TokenizerError;

/// Everything a [`Tokenizer`](super::Tokenizer) is built from: the `tokenizer.*` metadata of a
/// GGUF file, as is. `None` means the key is absent; the tokenizer then applies llama.cpp's
/// default for the model type (for example BOS id 1 and `add_bos = true` for `llama`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerSpec {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer of a `gpt2` vocabulary (`smollm`, `qwen2`,
    /// `llama-bpe`, ...).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token texts by id (byte-level encoded for `gpt2`).
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`: merge priorities of a `llama` vocabulary.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: `"left right"` pairs of a `gpt2` vocabulary, by rank.
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`
    pub eos: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`
    pub eot: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`
    pub eom: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`
    pub unk: Option<u32>,
    /// `tokenizer.ggml.seperator_token_id` (sic)
    pub sep: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`
    pub pad: Option<u32>,
    /// `tokenizer.ggml.mask_token_id`
    pub mask: Option<u32>,
    /// `tokenizer.ggml.fim_pre_token_id` (or the older `prefix_token_id`)
    pub fim_pre: Option<u32>,
    /// `tokenizer.ggml.fim_suf_token_id` (or the older `suffix_token_id`)
    pub fim_suf: Option<u32>,
    /// `tokenizer.ggml.fim_mid_token_id` (or the older `middle_token_id`)
    pub fim_mid: Option<u32>,
    /// `tokenizer.ggml.fim_pad_token_id`
    pub fim_pad: Option<u32>,
    /// `tokenizer.ggml.fim_rep_token_id`
    pub fim_rep: Option<u32>,
    /// `tokenizer.ggml.fim_sep_token_id`
    pub fim_sep: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`: the Jinja chat template.
    pub chat_template: Option<String>,
}

impl TokenizerSpec {
    /// Reads the tokenizer metadata of a parsed GGUF header.
    pub fn from_gguf(g: &GgufFile) -> Result<Self, TokenizerError> {
        let legacy = |new: Option<u32>, old: &'static str| -> Result<Option<u32>, TokenizerError> {
            // llama.cpp reads the older key after the newer one, so it wins when both exist.
            Ok(token_id(g, old)?.or(new))
        };
        Ok(Self {
            model: string(g, "tokenizer.ggml.model")?
                .ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?,
            pre: string(g, "tokenizer.ggml.pre")?,
            tokens: strings(g, "tokenizer.ggml.tokens")?
                .ok_or(TokenizerError::MissingKey("tokenizer.ggml.tokens"))?,
            scores: floats(g, "tokenizer.ggml.scores")?,
            token_types: ints(g, "tokenizer.ggml.token_type")?,
            merges: strings(g, "tokenizer.ggml.merges")?,
            bos: token_id(g, "tokenizer.ggml.bos_token_id")?,
            eos: token_id(g, "tokenizer.ggml.eos_token_id")?,
            eot: token_id(g, "tokenizer.ggml.eot_token_id")?,
            eom: token_id(g, "tokenizer.ggml.eom_token_id")?,
            unk: token_id(g, "tokenizer.ggml.unknown_token_id")?,
            sep: token_id(g, "tokenizer.ggml.seperator_token_id")?,
            pad: token_id(g, "tokenizer.ggml.padding_token_id")?,
            mask: token_id(g, "tokenizer.ggml.mask_token_id")?,
            fim_pre: legacy(
                token_id(g, "tokenizer.ggml.fim_pre_token_id")?,
                "tokenizer.ggml.prefix_token_id",
            )?,
            fim_suf: legacy(
                token_id(g, "tokenizer.ggml.fim_suf_token_id")?,
                "tokenizer.ggml.suffix_token_id",
            )?,
            fim_mid: legacy(
                token_id(g, "tokenizer.ggml.fim_mid_token_id")?,
                "tokenizer.ggml.middle_token_id",
            )?,
            fim_pad: token_id(g, "tokenizer.ggml.fim_pad_token_id")?,
            fim_rep: token_id(g, "tokenizer.ggml.fim_rep_token_id")?,
            fim_sep: token_id(g, "tokenizer.ggml.fim_sep_token_id")?,
            add_bos: flag(g, "tokenizer.ggml.add_bos_token")?,
            add_eos: flag(g, "tokenizer.ggml.add_eos_token")?,
            add_space_prefix: flag(g, "tokenizer.ggml.add_space_prefix")?,
            chat_template: string(g, "tokenizer.chat_template")?,
        })
    }
}

fn wrong(key: &'static str, expected: &'static str) -> TokenizerError {
    TokenizerError::WrongType { key, expected }
}

fn string(g: &GgufFile, key: &'static str) -> Result<Option<String>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(wrong(key, "a string")),
    }
}

fn array<'a>(g: &'a GgufFile, key: &'static str) -> Result<Option<&'a [Value]>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(wrong(key, "an array")),
    }
}

fn strings(g: &GgufFile, key: &'static str) -> Result<Option<Vec<String>>, TokenizerError> {
    let Some(items) = array(g, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(wrong(key, "an array of strings")),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// `f32` scores; llama.cpp also takes `i32` ones.
fn floats(g: &GgufFile, key: &'static str) -> Result<Option<Vec<f32>>, TokenizerError> {
    let Some(items) = array(g, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| match *v {
            Value::F32(x) => Ok(x),
            #[allow(clippy::cast_precision_loss)] // integer scores are small
            Value::I32(x) => Ok(x as f32),
            _ => Err(wrong(key, "an array of f32 or i32")),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

fn ints(g: &GgufFile, key: &'static str) -> Result<Option<Vec<i32>>, TokenizerError> {
    let Some(items) = array(g, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| match *v {
            Value::I32(x) => Ok(x),
            _ => Err(wrong(key, "an array of i32")),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// A token id stored as any integer type.
fn token_id(g: &GgufFile, key: &'static str) -> Result<Option<u32>, TokenizerError> {
    let Some(v) = g.get(key) else {
        return Ok(None);
    };
    let id = match *v {
        Value::U8(x) => Some(u32::from(x)),
        Value::U16(x) => Some(u32::from(x)),
        Value::U32(x) => Some(x),
        Value::U64(x) => u32::try_from(x).ok(),
        Value::I8(x) => u32::try_from(x).ok(),
        Value::I16(x) => u32::try_from(x).ok(),
        Value::I32(x) => u32::try_from(x).ok(),
        Value::I64(x) => u32::try_from(x).ok(),
        _ => None,
    };
    id.map(Some)
        .ok_or_else(|| wrong(key, "a token id (unsigned 32-bit integer)"))
}

fn flag(g: &GgufFile, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong(key, "a bool")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gguf(metadata: Vec<(&str, Value)>) -> GgufFile {
        GgufFile {
            version: 3,
            alignment: 32,
            data_offset: 0,
            file_len: 0,
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            tensors: Vec::new(),
            layers: Vec::new(),
            globals: Vec::new(),
        }
    }

    fn strs(items: &[&str]) -> Value {
        Value::Array(
            items
                .iter()
                .map(|s| Value::String((*s).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn reads_every_key() {
        let g = gguf(vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("qwen2".into())),
            ("tokenizer.ggml.tokens", strs(&["a", "b", "ab"])),
            (
                "tokenizer.ggml.token_type",
                Value::Array(vec![Value::I32(1); 3]),
            ),
            (
                "tokenizer.ggml.scores",
                Value::Array(vec![Value::I32(-2); 3]),
            ),
            ("tokenizer.ggml.merges", strs(&["a b"])),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::I64(2)),
            ("tokenizer.ggml.fim_pre_token_id", Value::U32(0)),
            ("tokenizer.ggml.prefix_token_id", Value::U32(1)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
            ("tokenizer.chat_template", Value::String("{{ x }}".into())),
        ]);
        let spec = TokenizerSpec::from_gguf(&g).unwrap();
        assert_eq!(spec.model, "gpt2");
        assert_eq!(spec.pre.as_deref(), Some("qwen2"));
        assert_eq!(spec.tokens, ["a", "b", "ab"]);
        assert_eq!(spec.scores, Some(vec![-2.0; 3]));
        assert_eq!(spec.token_types, Some(vec![1; 3]));
        assert_eq!(spec.merges, Some(vec!["a b".to_owned()]));
        assert_eq!((spec.bos, spec.eos, spec.eot), (Some(1), Some(2), None));
        assert_eq!(spec.fim_pre, Some(1));
        assert_eq!(spec.add_bos, Some(false));
        assert_eq!(spec.add_eos, None);
        assert_eq!(spec.chat_template.as_deref(), Some("{{ x }}"));
    }

    #[test]
    fn reports_missing_and_mistyped_keys() {
        let missing = TokenizerSpec::from_gguf(&gguf(vec![(
            "tokenizer.ggml.model",
            Value::String("gpt2".into()),
        )]));
        assert!(matches!(
            missing,
            Err(TokenizerError::MissingKey("tokenizer.ggml.tokens"))
        ));
        let mistyped = TokenizerSpec::from_gguf(&gguf(vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.tokens", strs(&["a"])),
            ("tokenizer.ggml.bos_token_id", Value::I32(-1)),
        ]));
        assert!(matches!(
            mistyped,
            Err(TokenizerError::WrongType {
                key: "tokenizer.ggml.bos_token_id",
                ..
            })
        ));
        let bad_tokens = TokenizerSpec::from_gguf(&gguf(vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.tokens", Value::Array(vec![Value::U32(3)])),
        ]));
        assert!(matches!(bad_tokens, Err(TokenizerError::WrongType { .. })));
    }
}
