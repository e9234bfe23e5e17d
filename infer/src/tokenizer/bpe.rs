//! Byte-pair merging of one pre-tokenized word, in merge-rank order (llama.cpp's
//! `llm_tokenizer_bpe_session`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::vocab::Vocab;

/// The merge table: `"left right"` to its rank (its line number in `tokenizer.ggml.merges`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Merges {
    ranks: HashMap<String, u32>,
}

impl Merges {
    /// Builds the table; the first occurrence of a pair keeps its rank. A line is split at its
    /// first space after the first byte; lines without one are ignored.
    pub(crate) fn new(lines: &[String]) -> Self {
        let mut ranks = HashMap::with_capacity(lines.len());
        for (rank, line) in (0u32..).zip(lines) {
            if line.bytes().skip(1).any(|b| b == b' ') {
                ranks.entry(line.clone()).or_insert(rank);
            }
        }
        Self { ranks }
    }

    fn rank(&self, key: &mut String, left: &str, right: &str) -> Option<u32> {
        key.clear();
        key.push_str(left);
        key.push(' ');
        key.push_str(right);
        self.ranks.get(key.as_str()).copied()
    }
}

/// One symbol of the word being merged: a byte range of the word, linked to its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of symbols `left` and `right`, whose texts were `size` bytes together when
/// it was queued. The heap pops the lowest rank first, then the leftmost pair.
type Candidate = Reverse<(u32, usize, usize, usize)>;

/// Reusable buffers for merging words.
#[derive(Debug, Default)]
pub(crate) struct BpeSession {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Candidate>,
    key: String,
}

impl BpeSession {
    /// Appends the ids of `word` (byte-level encoded) to `out`. With `ignore_merges`, a word that
    /// is a token is emitted as is. A final symbol that is no token falls back to its single-byte
    /// tokens, and bytes without one are dropped, as in llama.cpp.
    pub(crate) fn encode_word(
        &mut self,
        vocab: &Vocab,
        merges: &Merges,
        word: &str,
        ignore_merges: bool,
        out: &mut Vec<u32>,
    ) {
        if ignore_merges {
            if let Some(id) = vocab.id(word) {
                out.push(id);
                return;
            }
        }
        self.symbols.clear();
        self.queue.clear();
        let count = word.chars().count();
        for (i, (start, c)) in word.char_indices().enumerate() {
            self.symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < count).then_some(i + 1),
            });
        }
        for i in 1..self.symbols.len() {
            self.queue_pair(merges, word, i - 1, i);
        }
        while let Some(Reverse((_, left, right, size))) = self.queue.pop() {
            let (l, r) = (self.symbols[left], self.symbols[right]);
            // Skip candidates that an earlier merge made stale: symbol lengths only grow.
            if l.len == 0 || r.len == 0 || l.len + r.len != size {
                continue;
            }
            self.symbols[left].len += r.len;
            self.symbols[left].next = r.next;
            self.symbols[right].len = 0;
            if let Some(next) = r.next {
                self.symbols[next].prev = Some(left);
            }
            if let Some(prev) = l.prev {
                self.queue_pair(merges, word, prev, left);
            }
            if let Some(next) = r.next {
                self.queue_pair(merges, word, left, next);
            }
        }
        let mut cursor = (!self.symbols.is_empty()).then_some(0);
        while let Some(i) = cursor {
            let s = self.symbols[i];
            let text = &word[s.start..s.start + s.len];
            match vocab.id(text) {
                Some(id) => out.push(id),
                None => {
                    for b in text.bytes() {
                        if let Some(id) = std::str::from_utf8(&[b]).ok().and_then(|t| vocab.id(t)) {
                            out.push(id);
                        }
                    }
                }
            }
            cursor = s.next;
        }
    }

    fn queue_pair(&mut self, merges: &Merges, word: &str, left: usize, right: usize) {
        let (l, r) = (self.symbols[left], self.symbols[right]);
        let left_text = &word[l.start..l.start + l.len];
        let right_text = &word[r.start..r.start + r.len];
        if let Some(rank) = merges.rank(&mut self.key, left_text, right_text) {
            self.queue.push(Reverse((rank, left, right, l.len + r.len)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::vocab::tests::vocab_of;

    #[test]
    fn merges_follow_rank_then_position() {
        let vocab = vocab_of(&["a", "b", "c", "ab", "bc", "abc", "ca"]);
        let merges = Merges::new(&["b c".into(), "a b".into(), "a bc".into()]);
        let mut session = BpeSession::default();
        let mut out = Vec::new();
        // "b c" ranks first, then "a bc".
        session.encode_word(&vocab, &merges, "abc", false, &mut out);
        assert_eq!(out, [5]);
        out.clear();
        // Equal ranks merge left to right: "ab" + "ab" stays two tokens (no "ab ab" merge).
        session.encode_word(&vocab, &merges, "abab", false, &mut out);
        assert_eq!(out, [3, 3]);
        out.clear();
        // Not a token and no merge: the chars stay apart; "ca" is a token but no merge makes it.
        session.encode_word(&vocab, &merges, "cab", false, &mut out);
        assert_eq!(out, [2, 3]);
        out.clear();
        session.encode_word(&vocab, &merges, "ca", true, &mut out);
        assert_eq!(out, [6]);
    }

    #[test]
    fn unknown_symbols_fall_back_to_single_byte_tokens() {
        let vocab = vocab_of(&["x", "y"]);
        let merges = Merges::new(&[]);
        let mut out = Vec::new();
        BpeSession::default().encode_word(&vocab, &merges, "xzy", false, &mut out);
        assert_eq!(out, [0, 1]);
    }
}
