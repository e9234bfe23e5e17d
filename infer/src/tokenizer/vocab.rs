//! The vocabulary: token texts, scores and attributes, and the text -> id map.

use std::collections::HashMap;

use super::TokenizerError;

/// GGUF `tokenizer.ggml.token_type` values.
pub(crate) mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Token attribute bits (llama.cpp's `llama_token_attr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenAttr(u16);

impl TokenAttr {
    /// Unknown-token marker (`<unk>`).
    pub const UNKNOWN: Self = Self(1 << 0);
    /// Unused slot.
    pub const UNUSED: Self = Self(1 << 1);
    /// Ordinary text.
    pub const NORMAL: Self = Self(1 << 2);
    /// Control token (`<|im_end|>`): only matched in text with `parse_special`, not rendered by
    /// default.
    pub const CONTROL: Self = Self(1 << 3);
    /// User-defined token: always matched in text and always rendered.
    pub const USER_DEFINED: Self = Self(1 << 4);
    /// Byte-fallback token (`<0x0A>`).
    pub const BYTE: Self = Self(1 << 5);
    /// Strip whitespace left of the token when matching it in text.
    pub const LSTRIP: Self = Self(1 << 7);
    /// Strip whitespace right of the token when matching it in text.
    pub const RSTRIP: Self = Self(1 << 8);

    /// Whether any bit of `other` is set.
    pub fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Both sets of bits.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The attribute of a GGUF token type; unknown types have none.
    pub(crate) fn from_token_type(t: i32) -> Self {
        match t {
            token_type::NORMAL => Self::NORMAL,
            token_type::UNKNOWN => Self::UNKNOWN,
            token_type::CONTROL => Self::CONTROL,
            token_type::USER_DEFINED => Self::USER_DEFINED,
            token_type::UNUSED => Self::UNUSED,
            token_type::BYTE => Self::BYTE,
            _ => Self::default(),
        }
    }
}

/// One token.
#[derive(Debug, Clone)]
pub(crate) struct TokenData {
    pub text: String,
    pub score: f32,
    pub attr: TokenAttr,
}

/// All tokens by id, and ids by text.
#[derive(Debug, Clone)]
pub(crate) struct Vocab {
    pub tokens: Vec<TokenData>,
    ids: HashMap<String, u32>,
}

impl Vocab {
    /// Builds the vocabulary. Empty texts become `[EMPTY_<id>]`; a text given twice is an error.
    pub(crate) fn new(
        texts: Vec<String>,
        scores: Option<&[f32]>,
        types: Option<&[i32]>,
    ) -> Result<Self, TokenizerError> {
        let n = texts.len();
        u32::try_from(n).map_err(|_| TokenizerError::VocabTooLarge(n))?;
        for (what, len) in [
            ("tokenizer.ggml.scores", scores.map(<[f32]>::len)),
            ("tokenizer.ggml.token_type", types.map(<[i32]>::len)),
        ] {
            if let Some(len) = len.filter(|&len| len < n) {
                return Err(TokenizerError::LengthMismatch {
                    what,
                    len,
                    tokens: n,
                });
            }
        }
        let mut ids = HashMap::with_capacity(n);
        let mut tokens = Vec::with_capacity(n);
        for ((id, i), text) in (0u32..).zip(0usize..).zip(texts) {
            let text = if text.is_empty() {
                format!("[EMPTY_{id}]")
            } else {
                text
            };
            if let Some(&first) = ids.get(&text) {
                return Err(TokenizerError::DuplicateToken {
                    text,
                    first,
                    second: id,
                });
            }
            tokens.push(TokenData {
                score: scores.map_or(0.0, |s| s[i]),
                attr: types.map_or(TokenAttr::NORMAL, |t| TokenAttr::from_token_type(t[i])),
                text: text.clone(),
            });
            ids.insert(text, id);
        }
        Ok(Self { tokens, ids })
    }

    /// Number of tokens.
    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The id of the token with exactly this text.
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// The token with this id.
    pub(crate) fn get(&self, id: u32) -> Option<&TokenData> {
        self.tokens.get(usize::try_from(id).ok()?)
    }

    /// The attribute of a token (none for ids out of range).
    pub(crate) fn attr(&self, id: u32) -> TokenAttr {
        self.get(id).map(|t| t.attr).unwrap_or_default()
    }

    /// Adds `attr` to a token.
    pub(crate) fn add_attr(&mut self, id: u32, attr: TokenAttr) {
        if let Some(t) = usize::try_from(id)
            .ok()
            .and_then(|i| self.tokens.get_mut(i))
        {
            t.attr = t.attr.union(attr);
        }
    }

    /// Replaces the attribute of a token.
    pub(crate) fn set_attr(&mut self, id: u32, attr: TokenAttr) {
        if let Some(t) = usize::try_from(id)
            .ok()
            .and_then(|i| self.tokens.get_mut(i))
        {
            t.attr = attr;
        }
    }

    /// Ids with their texts, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &TokenData)> {
        (0u32..).zip(&self.tokens)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A vocabulary of normal tokens.
    pub(crate) fn vocab_of(texts: &[&str]) -> Vocab {
        let texts: Vec<String> = texts.iter().map(|s| (*s).to_owned()).collect();
        Vocab::new(texts, None, None).unwrap()
    }

    #[test]
    fn duplicate_and_empty_tokens() {
        let v = vocab_of(&["a", "", "b"]);
        assert_eq!(v.id("[EMPTY_1]"), Some(1));
        let dup = Vocab::new(vec!["a".into(), "a".into()], None, None);
        assert!(matches!(
            dup,
            Err(TokenizerError::DuplicateToken {
                first: 0,
                second: 1,
                ..
            })
        ));
        let short = Vocab::new(vec!["a".into(), "b".into()], Some(&[0.0]), None);
        assert!(matches!(short, Err(TokenizerError::LengthMismatch { .. })));
    }
}
