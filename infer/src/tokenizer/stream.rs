//! Turning generated ids into text as they come, without splitting UTF-8 sequences.

use super::Tokenizer;

/// Decodes a stream of ids into text. A token can end inside a multi-byte UTF-8 sequence (byte
/// tokens, or BPE tokens of part of an emoji); those bytes are held back until the sequence is
/// complete, so every returned string is whole text. Bytes that can never become valid UTF-8
/// are returned as U+FFFD.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    special: bool,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder that leaves control tokens out, like [`Tokenizer::decode`].
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self::with_special(tokenizer, false)
    }

    /// A decoder that renders control tokens (`<|im_end|>`) when `special`.
    pub fn with_special(tokenizer: &'a Tokenizer, special: bool) -> Self {
        Self {
            tokenizer,
            special,
            pending: Vec::new(),
        }
    }

    /// Adds one id; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let piece = self.tokenizer.token_to_piece_with(id, self.special);
        self.pending.extend_from_slice(&piece);
        self.take_complete()
    }

    /// Returns what is still held back, invalid or incomplete sequences as U+FFFD, and resets
    /// the decoder.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }

    /// Whether bytes are held back, waiting for the rest of a UTF-8 sequence.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn take_complete(&mut self) -> String {
        let mut text = String::new();
        let mut consumed = 0;
        loop {
            match std::str::from_utf8(&self.pending[consumed..]) {
                Ok(valid) => {
                    text.push_str(valid);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let good = consumed + e.valid_up_to();
                    // The prefix up to `valid_up_to` is valid UTF-8 by the error's contract.
                    text.push_str(&String::from_utf8_lossy(&self.pending[consumed..good]));
                    match e.error_len() {
                        // Incomplete sequence at the end: wait for more bytes.
                        None => {
                            consumed = good;
                            break;
                        }
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            consumed = good + bad;
                        }
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::TokenizerSpec;

    /// A byte-level vocabulary of the 256 single bytes.
    fn byte_tokenizer() -> Tokenizer {
        let tokens = (0..=255u8)
            .map(|b| crate::tokenizer::unicode::byte_to_char(b).to_string())
            .collect();
        Tokenizer::new(TokenizerSpec {
            model: "gpt2".into(),
            pre: Some("gpt-2".into()),
            tokens,
            merges: Some(Vec::new()),
            ..TokenizerSpec::default()
        })
        .unwrap()
    }

    #[test]
    fn holds_back_partial_sequences() {
        let t = byte_tokenizer();
        let mut d = StreamDecoder::new(&t);
        let mut out = Vec::new();
        for &b in "a😀é".as_bytes() {
            out.push(d.push(u32::from(b)));
        }
        assert_eq!(out, ["a", "", "", "", "😀", "", "é"]);
        assert!(!d.has_pending());
        // An invalid byte is replaced at once; a truncated sequence waits, then finishes as U+FFFD.
        assert_eq!(d.push(0xff), "\u{fffd}");
        assert_eq!(d.push(0xe4), "");
        assert!(d.has_pending());
        assert_eq!(d.push(u32::from(b'x')), "\u{fffd}x");
        assert_eq!(d.push(0xe4), "");
        assert_eq!(d.finish(), "\u{fffd}");
        assert_eq!(d.finish(), "");
    }
}
