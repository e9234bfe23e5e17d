//! Splitting text on special tokens before tokenization (llama.cpp's `tokenizer_st_partition`).
//!
//! Control and unknown tokens are matched only with `parse_special`; user-defined tokens always.
//! Longer tokens are matched first, each over the whole text left by the longer ones.

use super::vocab::{TokenAttr, Vocab};

/// A piece of the input: text still to tokenize, or a special token found in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// The ids of tokens that can be matched in text, longest text first (ties by id).
pub(crate) fn special_tokens(vocab: &Vocab) -> Vec<u32> {
    let mut ids: Vec<u32> = vocab
        .iter()
        .filter(|(_, t)| {
            t.attr.intersects(
                TokenAttr::CONTROL
                    .union(TokenAttr::USER_DEFINED)
                    .union(TokenAttr::UNKNOWN),
            )
        })
        .map(|(id, _)| id)
        .collect();
    ids.sort_by_key(|&id| std::cmp::Reverse(vocab.get(id).map_or(0, |t| t.text.len())));
    ids
}

/// llama.cpp strips with C `isspace`: ASCII space, tab, newline, vertical tab, form feed, return.
fn is_c_space_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r')
}

/// Splits `text` on the tokens of `specials` (from [`special_tokens`]).
pub(crate) fn partition<'a>(
    vocab: &Vocab,
    specials: &[u32],
    text: &'a str,
    parse_special: bool,
) -> Vec<Fragment<'a>> {
    let mut fragments = Vec::new();
    if text.is_empty() {
        return fragments;
    }
    fragments.push(Fragment::Text(text));
    let hidden = TokenAttr::CONTROL.union(TokenAttr::UNKNOWN);
    for &id in specials {
        let Some(token) = vocab.get(id) else { continue };
        if !parse_special && token.attr.intersects(hidden) {
            continue;
        }
        let needle = token.text.as_str();
        if !fragments
            .iter()
            .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)))
        {
            continue;
        }
        let mut next = Vec::with_capacity(fragments.len() + 2);
        for fragment in fragments {
            let Fragment::Text(mut rest) = fragment else {
                next.push(fragment);
                continue;
            };
            while let Some(at) = rest.find(needle) {
                let mut left = &rest[..at];
                if token.attr.intersects(TokenAttr::LSTRIP) {
                    left = left.trim_end_matches(is_c_space_char);
                }
                if !left.is_empty() {
                    next.push(Fragment::Text(left));
                }
                next.push(Fragment::Token(id));
                rest = &rest[at + needle.len()..];
                if token.attr.intersects(TokenAttr::RSTRIP) {
                    rest = rest.trim_start_matches(is_c_space_char);
                }
            }
            if !rest.is_empty() {
                next.push(Fragment::Text(rest));
            }
        }
        fragments = next;
    }
    fragments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocab {
        let texts: Vec<String> = ["a", "<|x|>", "<|xy|>", "<u>", "<unk>"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        Vocab::new(texts, None, Some(&[1, 3, 3, 4, 2])).unwrap()
    }

    #[test]
    fn control_tokens_need_parse_special() {
        let v = vocab();
        let specials = special_tokens(&v);
        assert_eq!(specials, [2, 1, 4, 3]);
        let text = "a<|xy|>b<u>c<|x|><unk>";
        let parsed = partition(&v, &specials, text, true);
        assert_eq!(
            parsed,
            [
                Fragment::Text("a"),
                Fragment::Token(2),
                Fragment::Text("b"),
                Fragment::Token(3),
                Fragment::Text("c"),
                Fragment::Token(1),
                Fragment::Token(4),
            ]
        );
        let plain = partition(&v, &specials, text, false);
        assert_eq!(
            plain,
            [
                Fragment::Text("a<|xy|>b"),
                Fragment::Token(3),
                Fragment::Text("c<|x|><unk>"),
            ]
        );
        assert!(partition(&v, &specials, "", true).is_empty());
    }

    #[test]
    fn strip_attributes_eat_ascii_whitespace() {
        let mut v = vocab();
        v.add_attr(3, TokenAttr::LSTRIP.union(TokenAttr::RSTRIP));
        let specials = special_tokens(&v);
        let parsed = partition(&v, &specials, "a \t<u>\n b", false);
        assert_eq!(
            parsed,
            [Fragment::Text("a"), Fragment::Token(3), Fragment::Text("b")]
        );
    }
}
