//! Tokenization that gives the ids llama.cpp gives, for the vocabularies of GGUF files:
//! byte-level BPE (`gpt2`: SmolLM2, Qwen2, Llama 3) and SentencePiece (`llama`: Llama 2).
//!
//! A [`Tokenizer`] is built from a [`TokenizerSpec`], plain data that
//! [`TokenizerSpec::from_gguf`] reads from a GGUF header. Text is first split on special tokens
//! (`special`), then each piece is pre-tokenized and merged (`pretokenize` + `bpe`) or merged by
//! scores (`spm`). Decoding turns ids back into bytes; [`StreamDecoder`] turns a stream of ids
//! into whole UTF-8 text.

mod bpe;
mod pretokenize;
mod spec;
mod special;
mod spm;
mod stream;
mod unicode;
mod vocab;

use std::collections::BTreeSet;

pub use pretokenize::PreTokenizer;
pub use spec::TokenizerSpec;
pub use stream::StreamDecoder;
pub use vocab::TokenAttr;

use bpe::{BpeSession, Merges};
use pretokenize::PreConfig;
use special::Fragment;
use vocab::Vocab;

/// What is wrong with a tokenizer description or an input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A required metadata key is absent.
    #[error("GGUF metadata key `{0}` is missing")]
    MissingKey(&'static str),
    /// A metadata key holds a value of another type.
    #[error("GGUF metadata key `{key}` does not hold {expected}")]
    WrongType {
        /// The key.
        key: &'static str,
        /// What it should hold.
        expected: &'static str,
    },
    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    #[error("unsupported tokenizer model `{0}` (supported: gpt2, llama)")]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error("unsupported pre-tokenizer `{0}`")]
    UnsupportedPreTokenizer(String),
    /// A per-token array is shorter than the token list.
    #[error("`{what}` has {len} entries for {tokens} tokens")]
    LengthMismatch {
        /// The array.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The number of tokens.
        tokens: usize,
    },
    /// More tokens than 32-bit ids can number.
    #[error("the vocabulary has {0} tokens, more than 32-bit ids allow")]
    VocabTooLarge(usize),
    /// Two tokens have the same text.
    #[error("token {text:?} appears twice, as ids {first} and {second}")]
    DuplicateToken {
        /// The text.
        text: String,
        /// The first id.
        first: u32,
        /// The second id.
        second: u32,
    },
    /// A `gpt2` vocabulary without `tokenizer.ggml.merges`.
    #[error("BPE vocabulary without `tokenizer.ggml.merges`")]
    MissingMerges,
    /// `add_bos`/`add_eos` is set but there is no such token.
    #[error("`{flag}` is set but the vocabulary has no {token} token")]
    MissingSpecial {
        /// The flag.
        flag: &'static str,
        /// The token it adds.
        token: &'static str,
    },
    /// A SentencePiece vocabulary cannot spell a byte of the input.
    #[error("the vocabulary has no byte-fallback token for byte 0x{0:02X}")]
    MissingByteToken(u8),
}

/// The tokenization algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerModel {
    /// Byte-level BPE (`gpt2`) with the given pre-tokenizer.
    Bpe(PreTokenizer),
    /// SentencePiece-style merging by scores (`llama`).
    Spm,
}

#[derive(Debug, Clone)]
enum Model {
    Bpe { merges: Merges, pre: PreConfig },
    Spm,
}

/// Special token ids after llama.cpp's defaults and text-based detection.
#[derive(Debug, Clone, Copy, Default)]
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    fim_pre: Option<u32>,
    fim_suf: Option<u32>,
    fim_mid: Option<u32>,
    fim_pad: Option<u32>,
    fim_rep: Option<u32>,
    fim_sep: Option<u32>,
}

/// Token texts that llama.cpp recognizes when the metadata does not name the token.
mod names {
    pub const EOT: &[&str] = &[
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "<｜end▁of▁sentence｜>",
        "<end_of_utterance>",
    ];
    pub const EOM: &[&str] = &["<|eom_id|>"];
    pub const FIM_PRE: &[&str] = &[
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ];
    pub const FIM_SUF: &[&str] = &[
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ];
    pub const FIM_MID: &[&str] = &[
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ];
    pub const FIM_PAD: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
    pub const FIM_REP: &[&str] = &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ];
    pub const FIM_SEP: &[&str] = &["<|file_sep|>"];
    /// Tokens that end generation whatever the metadata says.
    pub const EOG: &[&str] = &[
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
        "<｜end▁of▁sentence｜>",
        "[e~[",
    ];
    /// gpt-oss tokens that are always rendered.
    pub const ALWAYS_RENDERED: &[&str] =
        &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];
}

/// A tokenizer that reproduces llama.cpp's `llama_tokenize` and `llama_detokenize`.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    ids: SpecialIds,
    eog: BTreeSet<u32>,
    /// Tokens matched in text, longest first.
    specials: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    chat_template: Option<String>,
}

impl Tokenizer {
    /// Builds a tokenizer, resolving special tokens and flags the way llama.cpp's vocabulary
    /// loader does (including the tokens it finds by their text).
    pub fn new(spec: TokenizerSpec) -> Result<Self, TokenizerError> {
        let TokenizerSpec {
            model,
            pre,
            tokens,
            scores,
            token_types,
            merges,
            chat_template,
            ..
        } = spec;
        let (model, mut ids, add_bos_default, add_space_prefix_default, clean_spaces) = match model
            .as_str()
        {
            "gpt2" => {
                let pre = PreConfig::for_name(pre.as_deref())?;
                let merges = Merges::new(merges.as_deref().ok_or(TokenizerError::MissingMerges)?);
                let ids = SpecialIds {
                    bos: Some(11),
                    eos: Some(11),
                    ..SpecialIds::default()
                };
                (
                    Model::Bpe { merges, pre },
                    ids,
                    pre.add_bos,
                    false,
                    pre.clean_spaces,
                )
            }
            "llama" => {
                let ids = SpecialIds {
                    bos: Some(1),
                    eos: Some(2),
                    unk: Some(0),
                    ..SpecialIds::default()
                };
                (Model::Spm, ids, true, true, false)
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_owned())),
        };
        let mut vocab = Vocab::new(tokens, scores.as_deref(), token_types.as_deref())?;
        let n = vocab.len();
        let in_range = |id: Option<u32>| id.filter(|&i| usize::try_from(i).is_ok_and(|i| i < n));
        // Defaults out of range are dropped; metadata ids out of range keep the default.
        for slot in [&mut ids.bos, &mut ids.eos, &mut ids.unk] {
            *slot = in_range(*slot);
        }
        let metadata = [
            (&mut ids.bos, spec.bos),
            (&mut ids.eos, spec.eos),
            (&mut ids.eot, spec.eot),
            (&mut ids.eom, spec.eom),
            (&mut ids.unk, spec.unk),
            (&mut ids.pad, spec.pad),
            (&mut ids.fim_pre, spec.fim_pre),
            (&mut ids.fim_suf, spec.fim_suf),
            (&mut ids.fim_mid, spec.fim_mid),
            (&mut ids.fim_pad, spec.fim_pad),
            (&mut ids.fim_rep, spec.fim_rep),
            (&mut ids.fim_sep, spec.fim_sep),
        ];
        for (slot, value) in metadata {
            match (value, in_range(value)) {
                (_, Some(id)) => *slot = Some(id),
                (Some(bad), None) => {
                    tracing::warn!(
                        id = bad,
                        vocab = n,
                        "special token id out of range, ignored"
                    );
                }
                (None, None) => {}
            }
        }
        let add_bos = spec.add_bos.unwrap_or(add_bos_default);
        let add_eos = spec.add_eos.unwrap_or(false);
        let add_space_prefix = spec.add_space_prefix.unwrap_or(add_space_prefix_default);
        if add_bos && ids.bos.is_none() {
            return Err(TokenizerError::MissingSpecial {
                flag: "add_bos",
                token: "BOS",
            });
        }
        if add_eos && ids.eos.is_none() {
            return Err(TokenizerError::MissingSpecial {
                flag: "add_eos",
                token: "EOS",
            });
        }
        let eog = detect_special_tokens(&mut vocab, &mut ids);
        let specials = special::special_tokens(&vocab);
        Ok(Self {
            vocab,
            model,
            ids,
            eog,
            specials,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            chat_template,
        })
    }

    /// A plain prompt as llama.cpp tokenizes it: BOS/EOS per the metadata, control tokens
    /// written in the text not parsed.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.encode(text, true, false)
    }

    /// The ids of `text`. With `add_special`, BOS and EOS are added as the model's metadata
    /// says; with `parse_special`, control tokens written in the text (`<|im_end|>`) become
    /// their ids, otherwise they are tokenized as plain text. User-defined tokens are always
    /// recognized.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let fragments = special::partition(&self.vocab, &self.specials, text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.ids.bos);
        }
        match &self.model {
            Model::Bpe { merges, pre } => {
                let mut session = BpeSession::default();
                let mut word = String::new();
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(t) => {
                            for range in pre.kind.split(t) {
                                word.clear();
                                unicode::byte_encode_into(&t[range], &mut word);
                                session.encode_word(
                                    &self.vocab,
                                    merges,
                                    &word,
                                    pre.ignore_merges,
                                    &mut out,
                                );
                            }
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Model::Spm => {
                // A space is prepended to the first text and to text after a special token.
                let mut after_special = true;
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(t) => {
                            let mut escaped = String::with_capacity(t.len() + 3);
                            if self.add_space_prefix && after_special {
                                escaped.push(spm::SPACE_MARKER);
                            }
                            escaped.extend(t.chars().map(|c| {
                                if c == ' ' {
                                    spm::SPACE_MARKER
                                } else {
                                    c
                                }
                            }));
                            spm::encode(&self.vocab, &escaped, &mut out)?;
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.ids.eos);
        }
        Ok(out)
    }

    /// The text of `ids` as llama.cpp's `llama_detokenize(ids, remove_special = false,
    /// unparse_special = false)` gives it: control tokens are left out, invalid UTF-8 (only
    /// possible for a partial sequence of ids) is replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.detokenize(ids, false, false)).into_owned()
    }

    /// llama.cpp's `llama_detokenize`: the bytes of `ids`. `remove_special` drops a leading BOS
    /// and a trailing EOS that the tokenizer adds; `unparse_special` renders control tokens.
    /// The first piece loses one leading space when the vocabulary adds a space prefix, and
    /// vocabularies that ask for it get llama.cpp's clean-up of spaces before punctuation.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos {
            if let Some((&first, rest)) = ids.split_first() {
                if Some(first) == self.ids.bos {
                    remove_space = false;
                    ids = rest;
                }
            }
        }
        if remove_special && self.add_eos {
            if let Some((&last, rest)) = ids.split_last() {
                if Some(last) == self.ids.eos {
                    ids = rest;
                }
            }
        }
        let mut out = Vec::new();
        for &id in ids {
            self.append_piece(id, unparse_special, remove_space, &mut out);
            remove_space = false;
        }
        if self.clean_spaces {
            clean_up_spaces(&mut out);
        }
        out
    }

    /// The bytes of one token, as llama.cpp's `llama_token_to_piece(special = false)`: control
    /// and unknown tokens give nothing. Bytes, not text: a token can hold part of a UTF-8
    /// sequence (use [`StreamDecoder`] for text). Ids out of range give nothing.
    pub fn token_to_piece(&self, id: u32) -> Vec<u8> {
        self.token_to_piece_with(id, false)
    }

    /// [`token_to_piece`](Self::token_to_piece), rendering control tokens when `special`.
    pub fn token_to_piece_with(&self, id: u32, special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_piece(id, special, false, &mut out);
        out
    }

    fn append_piece(&self, id: u32, special: bool, lstrip: bool, out: &mut Vec<u8>) {
        let Some(token) = self.vocab.get(id) else {
            return;
        };
        let attr = token.attr;
        let hidden = TokenAttr::CONTROL.union(TokenAttr::UNKNOWN);
        if !special && attr.intersects(hidden) {
            return;
        }
        let start = out.len();
        if attr.intersects(hidden.union(TokenAttr::USER_DEFINED)) {
            out.extend_from_slice(token.text.as_bytes());
        } else if attr.intersects(TokenAttr::NORMAL) {
            match self.model {
                Model::Spm => {
                    for c in token.text.chars() {
                        let c = if c == spm::SPACE_MARKER { ' ' } else { c };
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                }
                Model::Bpe { .. } => byte_decode_into(&token.text, out),
            }
        } else if attr.intersects(TokenAttr::BYTE) {
            if let Some(b) = token
                .text
                .get(3..5)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(b);
            }
        }
        if lstrip && out.get(start) == Some(&b' ') {
            out.remove(start);
        }
    }

    /// Whether generation stops at `id` (EOS, EOT, EOM and the tokens llama.cpp adds by text,
    /// such as `<|im_end|>` and `<|endoftext|>`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.ids.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.ids.eos
    }

    /// End-of-turn token (from the metadata, else found by its text).
    pub fn eot(&self) -> Option<u32> {
        self.ids.eot
    }

    /// Padding token.
    pub fn pad(&self) -> Option<u32> {
        self.ids.pad
    }

    /// Unknown-token token.
    pub fn unk(&self) -> Option<u32> {
        self.ids.unk
    }

    /// Fill-in-the-middle tokens: prefix, suffix, middle.
    pub fn fim(&self) -> (Option<u32>, Option<u32>, Option<u32>) {
        (self.ids.fim_pre, self.ids.fim_suf, self.ids.fim_mid)
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Number of tokens (the size of the model's logits).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The stored text of a token (byte-level encoded for BPE vocabularies).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.get(id).map(|t| t.text.as_str())
    }

    /// The id of the token with exactly this stored text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// A token's attributes, after llama.cpp's adjustments (none for ids out of range).
    pub fn token_attr(&self, id: u32) -> TokenAttr {
        self.vocab.attr(id)
    }

    /// The tokenization algorithm.
    pub fn model(&self) -> TokenizerModel {
        match &self.model {
            Model::Bpe { pre, .. } => TokenizerModel::Bpe(pre.kind),
            Model::Spm => TokenizerModel::Spm,
        }
    }

    /// `tokenizer.chat_template`, if the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

/// Resolves EOT, EOM and fill-in-the-middle tokens the metadata leaves out by their text, marks
/// control-looking tokens as control, and returns the end-of-generation set, as llama.cpp's
/// loader does. Where a vocabulary has several candidates (`<|im_end|>` and `<|endoftext|>`),
/// llama.cpp takes the first its hash map yields; here the first of its list of names wins.
fn detect_special_tokens(vocab: &mut Vocab, ids: &mut SpecialIds) -> BTreeSet<u32> {
    let mut forced_control = Vec::new();
    {
        let slots: [(&mut Option<u32>, &[&str]); 8] = [
            (&mut ids.eot, names::EOT),
            (&mut ids.eom, names::EOM),
            (&mut ids.fim_pre, names::FIM_PRE),
            (&mut ids.fim_suf, names::FIM_SUF),
            (&mut ids.fim_mid, names::FIM_MID),
            (&mut ids.fim_pad, names::FIM_PAD),
            (&mut ids.fim_rep, names::FIM_REP),
            (&mut ids.fim_sep, names::FIM_SEP),
        ];
        for (slot, names) in slots {
            if slot.is_some() {
                continue;
            }
            if let Some(id) = names.iter().find_map(|name| vocab.id(name)) {
                *slot = Some(id);
                forced_control.push(id);
            }
        }
    }
    let mut eog: BTreeSet<u32> = [ids.fim_pad, ids.fim_rep, ids.fim_sep]
        .into_iter()
        .flatten()
        .collect();
    for (id, t) in vocab.iter() {
        if names::EOG.contains(&t.text.as_str()) {
            eog.insert(id);
            forced_control.push(id);
        }
    }
    for id in forced_control {
        vocab.add_attr(id, TokenAttr::CONTROL);
    }
    let always_rendered: Vec<u32> = names::ALWAYS_RENDERED
        .iter()
        .filter_map(|name| vocab.id(name))
        .collect();
    for id in always_rendered {
        vocab.set_attr(id, TokenAttr::USER_DEFINED);
    }
    eog.extend([ids.eos, ids.eot, ids.eom].into_iter().flatten());
    let [end, ret, call, calls, flush, tool_response, s] = [
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|calls|>",
        "<|flush|>",
        "<|tool_response>",
        "</s>",
    ]
    .map(|text| vocab.id(text).filter(|id| eog.contains(id)));
    // Harmony-style vocabularies end a message with <|end|> but a generation with
    // <|return|>/<|call|> (or <|calls|>/<|flush|>).
    if let Some(end) = end {
        let call = call.or(calls);
        if call.is_some() && (ret.is_some() || flush.is_some()) {
            eog.remove(&end);
            vocab.set_attr(end, TokenAttr::USER_DEFINED);
        }
    }
    if let (Some(_), Some(s)) = (tool_response, s) {
        eog.remove(&s);
        vocab.set_attr(s, TokenAttr::NORMAL);
    }
    eog
}

/// The bytes of a byte-level BPE token text; chars outside the byte alphabet are written out
/// as llama.cpp does (`[UNK_BYTE_0x..<text>]`).
fn byte_decode_into(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// llama.cpp's `clean_up_tokenization_spaces`: drops the space before `?!.,`, the spaces around
/// a lone apostrophe, and the space before `'s`, `'m`, `'re` and `'ve`. Runs in place as the
/// original does, so each pass sees what the previous steps of the same pass left.
fn clean_up_spaces(text: &mut Vec<u8>) {
    // Pass 1: " ?", " !", " .", " ,"
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
    // Pass 2: " ' "
    let n = text.len();
    let mut total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);
    // Pass 3: " 's", " 'm", " 're", " 've"
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            let x2 = (i + 2 < n).then(|| text[i + 2]);
            if matches!(x1, b's' | b'm') || matches!((x1, x2), (b'r' | b'v', Some(b'e'))) {
                total -= 1;
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaned(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        clean_up_spaces(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn clean_up_matches_llama_cpp() {
        assert_eq!(cleaned("Hello , world !"), "Hello, world!");
        assert_eq!(cleaned("rock ' n"), "rock'n");
        assert_eq!(
            cleaned("it 's I 'm we 're they 've I 'll he 'd don 't"),
            "it's I'm we're they've I 'll he 'd don 't"
        );
        assert_eq!(cleaned(""), "");
        assert_eq!(cleaned(" ."), ".");
        assert_eq!(cleaned("a  ."), "a .");
    }

    fn bpe_spec() -> TokenizerSpec {
        let tokens = [
            "a",
            "b",
            "ab",
            "Ġ",
            "Ġab",
            "<|end|>",
            "<tool>",
            "<|im_end|>",
        ];
        TokenizerSpec {
            model: "gpt2".into(),
            pre: Some("gpt-2".into()),
            tokens: tokens.iter().map(|s| (*s).to_owned()).collect(),
            token_types: Some(vec![1, 1, 1, 1, 1, 3, 4, 1]),
            merges: Some(vec!["a b".into(), "Ġ ab".into()]),
            eos: Some(5),
            ..TokenizerSpec::default()
        }
    }

    #[test]
    fn bpe_encode_decode() {
        let t = Tokenizer::new(bpe_spec()).unwrap();
        assert_eq!(t.encode("ab ab", true, false).unwrap(), [2, 4]);
        // The control token needs parse_special; the user-defined one does not.
        assert_eq!(t.encode("<|end|>", false, true).unwrap(), [5]);
        assert_eq!(t.encode("<tool>", false, false).unwrap(), [6]);
        assert_eq!(t.decode(&[2, 4, 5, 6]), "ab ab<tool>");
        assert_eq!(t.detokenize(&[5], false, true), b"<|end|>");
        // <|im_end|> is found by its text: end-of-generation, and made a control token.
        assert!(t.is_eog(7) && t.is_eog(5) && !t.is_eog(2));
        assert!(t.token_attr(7).intersects(TokenAttr::CONTROL));
        // Both <|end|> and <|im_end|> are end-of-turn names; the earlier in llama.cpp's list wins.
        assert_eq!(t.eot(), Some(7));
        assert_eq!(t.token_to_piece(4), b" ab");
        assert!(t.token_to_piece(99).is_empty());
    }

    #[test]
    fn rejects_bad_specs() {
        let mut spec = bpe_spec();
        spec.merges = None;
        assert_eq!(
            Tokenizer::new(spec).err(),
            Some(TokenizerError::MissingMerges)
        );
        let mut spec = bpe_spec();
        spec.model = "t5".into();
        assert!(matches!(
            Tokenizer::new(spec),
            Err(TokenizerError::UnsupportedModel(_))
        ));
        let mut spec = bpe_spec();
        spec.add_bos = Some(true);
        spec.bos = Some(100);
        // The default BOS (11) is out of range and the given one too.
        assert!(matches!(
            Tokenizer::new(spec),
            Err(TokenizerError::MissingSpecial { .. })
        ));
    }
}
