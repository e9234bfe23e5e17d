//! SentencePiece-style tokenization of `llama` vocabularies (llama.cpp's
//! `llm_tokenizer_spm_session`): start from single chars, repeatedly merge the adjacent pair whose
//! concatenation is the highest-scoring token, and spell chars that are no token with byte
//! tokens (`<0xE4>`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;
use super::TokenizerError;

/// SentencePiece's whitespace marker, U+2581.
pub(crate) const SPACE_MARKER: char = '\u{2581}';

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge; the heap pops the highest score first, then the leftmost pair.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
            .then_with(|| other.size.cmp(&self.size))
            .then_with(|| other.right.cmp(&self.right))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The byte-fallback token of `b`: `<0xXX>`, else a token that is the byte itself.
pub(crate) fn byte_token(vocab: &Vocab, b: u8) -> Result<u32, TokenizerError> {
    vocab
        .id(&format!("<0x{b:02X}>"))
        .or_else(|| std::str::from_utf8(&[b]).ok().and_then(|t| vocab.id(t)))
        .ok_or(TokenizerError::MissingByteToken(b))
}

/// Appends the ids of `text` (spaces already replaced by U+2581) to `out`.
pub(crate) fn encode(vocab: &Vocab, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
    let count = text.chars().count();
    let mut symbols: Vec<Symbol> = text
        .char_indices()
        .enumerate()
        .map(|(i, (start, c))| Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: (i + 1 < count).then_some(i + 1),
        })
        .collect();
    let mut queue = BinaryHeap::new();
    let pair = |symbols: &[Symbol], left: usize, right: usize| {
        let (l, r) = (symbols[left], symbols[right]);
        let joined = &text[l.start..r.start + r.len];
        vocab
            .id(joined)
            .and_then(|id| vocab.get(id))
            .map(|t| Candidate {
                score: t.score,
                left,
                right,
                size: joined.len(),
            })
    };
    for i in 1..symbols.len() {
        queue.extend(pair(&symbols, i - 1, i));
    }
    while let Some(c) = queue.pop() {
        let (l, r) = (symbols[c.left], symbols[c.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != c.size {
            continue;
        }
        symbols[c.left].len += r.len;
        symbols[c.left].next = r.next;
        symbols[c.right].len = 0;
        if let Some(next) = r.next {
            symbols[next].prev = Some(c.left);
        }
        if let Some(prev) = l.prev {
            queue.extend(pair(&symbols, prev, c.left));
        }
        if let Some(next) = r.next {
            queue.extend(pair(&symbols, c.left, next));
        }
    }
    let mut cursor = (!symbols.is_empty()).then_some(0);
    while let Some(i) = cursor {
        let s = symbols[i];
        let piece = &text[s.start..s.start + s.len];
        // Merged symbols are tokens by construction; only single chars can miss.
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => {
                for b in piece.bytes() {
                    out.push(byte_token(vocab, b)?);
                }
            }
        }
        cursor = s.next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(pieces: &[(&str, f32)]) -> Vocab {
        let mut texts: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        let mut scores = vec![0.0; texts.len()];
        let mut types = vec![6; texts.len()];
        for (t, s) in pieces {
            texts.push((*t).to_owned());
            scores.push(*s);
            types.push(1);
        }
        Vocab::new(texts, Some(&scores), Some(&types)).unwrap()
    }

    #[test]
    fn highest_score_merges_first() {
        let v = vocab(&[
            ("a", -1.0),
            ("b", -1.0),
            ("ab", -2.0),
            ("bb", -1.5),
            ("abb", -3.0),
        ]);
        let mut out = Vec::new();
        // "bb" outscores "ab", and "a"+"bb" = "abb" follows.
        encode(&v, "abb", &mut out).unwrap();
        assert_eq!(out, [260]);
        out.clear();
        // Ties go to the leftmost pair: "b b b" merges the first two.
        encode(&v, "bbb", &mut out).unwrap();
        assert_eq!(out, [259, 257]);
    }

    #[test]
    fn unknown_chars_become_bytes() {
        let v = vocab(&[("a", -1.0)]);
        let mut out = Vec::new();
        encode(&v, "aé", &mut out).unwrap();
        assert_eq!(out, [256, 0xc3, 0xa9]);
        let no_bytes = Vocab::new(vec!["a".into()], None, None).unwrap();
        assert!(matches!(
            encode(&no_bytes, "b", &mut out),
            Err(TokenizerError::MissingByteToken(b'b'))
        ));
    }
}
