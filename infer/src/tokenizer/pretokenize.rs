//! Pre-tokenization of byte-level BPE vocabularies: splitting text into the words that BPE merges
//! within, the way llama.cpp does it for each `tokenizer.ggml.pre`.
//!
//! llama.cpp applies a list of regexes in turn; each one splits every fragment left by the
//! previous one into its matches and the unmatched gaps between them, and no regex looks past the
//! end of its fragment. Two of its regexes (GPT-2's and Llama 3's) run as hand-written code, the
//! others through `std::regex` on text whose non-ASCII code points are replaced by their class.
//! The splitters below are written to give the same fragments as those, including the places
//! where the hand-written code is not quite the regex it stands for.

use std::ops::Range;

use super::unicode::{class, is_letter, is_number, is_whitespace, Class};
use super::TokenizerError;

/// The pre-tokenizer families: each is one list of regexes in llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// No `tokenizer.ggml.pre` (or `default`): punctuation runs, the GPT-2 regex, digit runs,
    /// then ASCII digit triples.
    Default,
    /// The GPT-2 regex alone (`gpt-2`, `phi-2`, `mpt`, `olmo`, ...).
    Gpt2,
    /// Llama 3's regex: case-insensitive contractions, numbers in groups of up to three
    /// (`llama-bpe`, `llama3`, `dbrx`, ...).
    Llama3,
    /// Qwen2's regex: Llama 3's with single-digit numbers (`qwen2`, `stablelm2`, ...).
    Qwen2,
    /// Single digits, then the GPT-2 regex (`smollm`, `starcoder`, `refact`, `command-r`, ...).
    StarCoder,
}

/// What a `tokenizer.ggml.pre` value selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PreConfig {
    /// How text is split.
    pub kind: PreTokenizer,
    /// A word that is itself a token is emitted without running the merges (Llama 3).
    pub ignore_merges: bool,
    /// Detokenization removes spaces before punctuation and some contractions.
    pub clean_spaces: bool,
    /// BOS is added by default (Llama 3), unless the metadata says otherwise.
    pub add_bos: bool,
}

impl PreConfig {
    /// The configuration llama.cpp uses for the pre-tokenizer name `pre` of a `gpt2` vocabulary.
    pub(crate) fn for_name(pre: Option<&str>) -> Result<Self, TokenizerError> {
        use PreTokenizer as P;
        let plain = |kind| PreConfig {
            kind,
            ignore_merges: false,
            clean_spaces: true,
            add_bos: false,
        };
        let config = match pre.unwrap_or("default") {
            "default" => plain(P::Default),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => PreConfig {
                ignore_merges: true,
                add_bos: true,
                ..plain(P::Llama3)
            },
            "dbrx" | "smaug-bpe" => plain(P::Llama3),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais"
            | "exaone4" => plain(P::Gpt2),
            "trillion" | "granite-docling" => PreConfig {
                clean_spaces: false,
                ..plain(P::Gpt2)
            },
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" => {
                PreConfig {
                    clean_spaces: false,
                    ..plain(P::Qwen2)
                }
            }
            "stablelm2" | "megrez" => plain(P::Qwen2),
            "smollm" | "command-r" => PreConfig {
                clean_spaces: false,
                ..plain(P::StarCoder)
            },
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                plain(P::StarCoder)
            }
            other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_owned())),
        };
        Ok(config)
    }
}

impl PreTokenizer {
    /// Splits `text` into words, as byte ranges of `text` in order; together they cover it.
    pub(crate) fn split(self, text: &str) -> Vec<Range<usize>> {
        let (chars, offsets): (Vec<char>, Vec<usize>) =
            text.char_indices().map(|(i, c)| (c, i)).unzip();
        let mut frags = Vec::with_capacity(chars.len() / 2 + 1);
        frags.push(0..chars.len());
        let stages: &[Stage] = match self {
            Self::Default => &[
                Stage::Runs(is_punct_like),
                Stage::Gpt2,
                Stage::Runs(is_number),
                Stage::AsciiDigitTriples,
            ],
            Self::Gpt2 => &[Stage::Gpt2],
            Self::Llama3 => &[Stage::Llama3 { max_digits: 3 }],
            Self::Qwen2 => &[Stage::Llama3 { max_digits: 1 }],
            Self::StarCoder => &[Stage::Each(is_number), Stage::Gpt2],
        };
        for stage in stages {
            let mut next = Vec::with_capacity(frags.len() * 2);
            for frag in frags.iter().filter(|f| !f.is_empty()) {
                stage.apply(&chars, frag.clone(), &mut next);
            }
            frags = next;
        }
        let byte_at = |i: usize| offsets.get(i).copied().unwrap_or(text.len());
        frags
            .into_iter()
            .map(|r| byte_at(r.start)..byte_at(r.end))
            .collect()
    }
}

/// One regex of a pre-tokenizer's list.
enum Stage {
    /// `[class]+`: runs of matching chars and the gaps between them.
    Runs(fn(char) -> bool),
    /// `[class]`: every matching char alone, and the gaps between them.
    Each(fn(char) -> bool),
    /// `[0-9][0-9][0-9]`, leftmost and non-overlapping.
    AsciiDigitTriples,
    /// llama.cpp's code for the GPT-2 regex.
    Gpt2,
    /// llama.cpp's code for Llama 3's regex, with `\p{N}{1,max_digits}`.
    Llama3 { max_digits: usize },
}

impl Stage {
    fn apply(&self, chars: &[char], frag: Range<usize>, out: &mut Vec<Range<usize>>) {
        match *self {
            Self::Runs(pred) => split_matches(chars, frag, out, |chars, pos, end| {
                let len = chars[pos..end].iter().take_while(|&&c| pred(c)).count();
                (len > 0).then_some(len)
            }),
            Self::Each(pred) => split_matches(chars, frag, out, |chars, pos, _| {
                pred(chars[pos]).then_some(1)
            }),
            Self::AsciiDigitTriples => split_matches(chars, frag, out, |chars, pos, end| {
                let digits = chars[pos..end.min(pos + 3)]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                (digits == 3).then_some(3)
            }),
            Self::Gpt2 => split_gpt2(chars, frag, out),
            Self::Llama3 { max_digits } => split_llama3(chars, frag, max_digits, out),
        }
    }
}

/// `[\p{P}\$\+<=>\^~\|]`
fn is_punct_like(c: char) -> bool {
    matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|') || class(c) == Class::Punctuation
}

/// Splits `frag` the way iterating over regex matches does: `match_at(chars, pos, end)` gives
/// the length of the match starting at `pos`, if one does; matches are pushed as they are found
/// and the text between two matches as one fragment.
fn split_matches(
    chars: &[char],
    frag: Range<usize>,
    out: &mut Vec<Range<usize>>,
    match_at: impl Fn(&[char], usize, usize) -> Option<usize>,
) {
    let mut gap_start = frag.start;
    let mut pos = frag.start;
    while pos < frag.end {
        match match_at(chars, pos, frag.end) {
            Some(len) => {
                if pos > gap_start {
                    out.push(gap_start..pos);
                }
                out.push(pos..pos + len);
                pos += len;
                gap_start = pos;
            }
            None => pos += 1,
        }
    }
    if frag.end > gap_start {
        out.push(gap_start..frag.end);
    }
}

/// A fragment being split into words, with lookups that see nothing past its end.
struct Words<'a> {
    chars: &'a [char],
    end: usize,
    emitted: usize,
    out: &'a mut Vec<Range<usize>>,
}

impl Words<'_> {
    fn at(&self, pos: usize) -> Option<char> {
        (pos < self.end).then(|| self.chars[pos])
    }

    fn is(&self, pos: usize, pred: impl Fn(char) -> bool) -> bool {
        self.at(pos).is_some_and(pred)
    }

    /// Index of the first char from `pos` on for which `pred` is false (or the end).
    fn skip(&self, mut pos: usize, pred: impl Fn(char) -> bool) -> usize {
        while self.is(pos, &pred) {
            pos += 1;
        }
        pos
    }

    /// Ends the current word at `end` and returns `end`.
    fn emit(&mut self, end: usize) -> usize {
        if end > self.emitted {
            self.out.push(self.emitted..end);
        }
        self.emitted = end;
        end
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` at `pos`, case-insensitive when `any_case`: the match length.
    fn contraction(&self, pos: usize, any_case: bool) -> Option<usize> {
        if self.at(pos) != Some('\'') {
            return None;
        }
        let lower = |c: Option<char>| c.map(|c| if any_case { c.to_ascii_lowercase() } else { c });
        match (lower(self.at(pos + 1)), lower(self.at(pos + 2))) {
            (Some('s' | 't' | 'm' | 'd'), _) => Some(2),
            (Some('r' | 'v'), Some('e')) | (Some('l'), Some('l')) => Some(3),
            _ => None,
        }
    }

    /// The whitespace run at `pos`: `\s+(?!\S)` leaves its last char for the next word when
    /// a non-space follows inside the fragment; `\s+` takes a lone one. `None` if `pos` is not
    /// whitespace.
    fn spaces(&self, pos: usize) -> Option<usize> {
        let run = self.skip(pos, is_whitespace) - pos;
        match run {
            0 => None,
            1 => Some(1),
            n if pos + n < self.end => Some(n - 1),
            n => Some(n),
        }
    }
}

fn is_other(c: char) -> bool {
    !is_whitespace(c) && !is_letter(c) && !is_number(c)
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
fn split_gpt2(chars: &[char], frag: Range<usize>, out: &mut Vec<Range<usize>>) {
    let mut w = Words {
        chars,
        end: frag.end,
        emitted: frag.start,
        out,
    };
    let mut pos = frag.start;
    while pos < w.end {
        if let Some(len) = w.contraction(pos, false) {
            pos = w.emit(pos + len);
            continue;
        }
        let space = w.at(pos) == Some(' ');
        let lead = if space { w.at(pos + 1) } else { w.at(pos) };
        let body = usize::from(space);
        let class_run: Option<fn(char) -> bool> = match lead {
            Some(c) if is_letter(c) => Some(is_letter),
            Some(c) if is_number(c) => Some(is_number),
            Some(c) if is_other(c) => Some(is_other),
            _ => None,
        };
        if let Some(pred) = class_run {
            pos = w.emit(w.skip(pos + body, pred));
            continue;
        }
        let len = w.spaces(pos).unwrap_or(1);
        pos = w.emit(pos + len);
    }
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
fn split_llama3(
    chars: &[char],
    frag: Range<usize>,
    max_digits: usize,
    out: &mut Vec<Range<usize>>,
) {
    let is_newline = |c: char| c == '\r' || c == '\n';
    let mut w = Words {
        chars,
        end: frag.end,
        emitted: frag.start,
        out,
    };
    let mut pos = frag.start;
    while let Some(c) = w.at(pos) {
        if let Some(len) = w.contraction(pos, true) {
            pos = w.emit(pos + len);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !is_newline(c) && !is_number(c) && (is_letter(c) || w.is(pos + 1, is_letter)) {
            pos = w.emit(w.skip(pos + 1, is_letter));
            continue;
        }
        // \p{N}{1,max}
        if is_number(c) {
            while w.is(pos, is_number) {
                let group = w.skip(pos, is_number).min(pos + max_digits.max(1));
                pos = w.emit(group);
            }
            continue;
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        let space = c == ' ';
        let lead = if space { w.at(pos + 1) } else { Some(c) };
        if lead.is_some_and(is_other) {
            let run_end = w.skip(pos + usize::from(space), is_other);
            pos = w.emit(w.skip(run_end, is_newline));
            continue;
        }
        // \s*[\r\n]+ : up to the last newline of the whitespace run.
        let run_end = w.skip(pos, is_whitespace);
        if let Some(last_newline) = (pos..run_end).rev().find(|&i| is_newline(chars[i])) {
            pos = w.emit(last_newline + 1);
            continue;
        }
        let len = w.spaces(pos).unwrap_or(1);
        pos = w.emit(pos + len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: PreTokenizer, text: &str) -> Vec<&str> {
        kind.split(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn gpt2_words() {
        let w = words(PreTokenizer::Gpt2, "Hello world's  end 123 ,,x\n\n  y");
        assert_eq!(
            w,
            ["Hello", " world", "'s", " ", " end", " 123", " ,,", "x", "\n\n ", " y"]
        );
        // Upper-case contractions are not contractions for GPT-2.
        assert_eq!(words(PreTokenizer::Gpt2, "I'M"), ["I", "'", "M"]);
        // Trailing whitespace stays one word; a lone space before punctuation joins it.
        assert_eq!(words(PreTokenizer::Gpt2, "a   "), ["a", "   "]);
        assert_eq!(words(PreTokenizer::Gpt2, "a !"), ["a", " !"]);
    }

    #[test]
    fn llama3_words() {
        let w = words(PreTokenizer::Llama3, "I'M 1234567 x\r\n\r\n  y...\n");
        assert_eq!(
            w,
            ["I", "'M", " ", "123", "456", "7", " x", "\r\n\r\n", " ", " y", "...\n"]
        );
        assert_eq!(words(PreTokenizer::Llama3, "\tword"), ["\tword"]);
    }

    #[test]
    fn qwen2_splits_every_digit() {
        assert_eq!(
            words(PreTokenizer::Qwen2, "x=123"),
            ["x", "=", "1", "2", "3"]
        );
    }

    #[test]
    fn starcoder_splits_digits_before_gpt2() {
        // The digit split comes first, so " 12" is not one word and the space stands alone.
        assert_eq!(
            words(PreTokenizer::StarCoder, "a 12b"),
            ["a", " ", "1", "2", "b"]
        );
    }

    #[test]
    fn default_splits_punctuation_then_digits() {
        assert_eq!(
            words(PreTokenizer::Default, "hi!! 12345 $x"),
            ["hi", "!!", " ", "123", "45", " ", "$", "x"]
        );
    }

    #[test]
    fn words_cover_the_text() {
        let text = "  mixed\u{a0}\u{3000}text 日本 😀👨‍👩‍👧 ١٢٣\r\n\t'll";
        for kind in [
            PreTokenizer::Default,
            PreTokenizer::Gpt2,
            PreTokenizer::Llama3,
            PreTokenizer::Qwen2,
            PreTokenizer::StarCoder,
        ] {
            let joined: String = words(kind, text).concat();
            assert_eq!(joined, text, "{kind:?}");
            assert!(words(kind, text).iter().all(|w| !w.is_empty()));
        }
        assert!(PreTokenizer::Gpt2.split("").is_empty());
    }

    #[test]
    fn names_map_to_families() {
        let kind = |name| PreConfig::for_name(name).map(|c| c.kind);
        assert_eq!(kind(Some("smollm")).ok(), Some(PreTokenizer::StarCoder));
        assert_eq!(kind(Some("qwen2")).ok(), Some(PreTokenizer::Qwen2));
        assert_eq!(kind(Some("llama-bpe")).ok(), Some(PreTokenizer::Llama3));
        assert_eq!(kind(None).ok(), Some(PreTokenizer::Default));
        assert!(matches!(
            PreConfig::for_name(Some("nonesuch")),
            Err(TokenizerError::UnsupportedPreTokenizer(_))
        ));
    }
}
