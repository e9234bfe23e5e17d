//! Character classes as llama.cpp's pre-tokenizers see them, and GPT-2's byte <-> char mapping.
//!
//! llama.cpp gives every code point one class from its Unicode general category (`\p{L}`,
//! `\p{N}`, ...) plus a separate whitespace bit: the `White_Space` property (25 code points; not
//! Python's wider `str.isspace`, so U+001C..U+001F are not whitespace).

use unicode_general_category::{get_general_category, GeneralCategory};

/// The general-category class of a code point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// `\p{L}`
    Letter,
    /// `\p{N}`
    Number,
    /// `\p{M}`
    Mark,
    /// `\p{P}`
    Punctuation,
    /// `\p{S}`
    Symbol,
    /// `\p{Z}`
    Separator,
    /// `\p{C}`: control, format, surrogate, private use and unassigned code points.
    Other,
}

/// The class of `c`.
pub(crate) fn class(c: char) -> Class {
    use GeneralCategory as G;
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => Class::Letter,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Class::Number,
        G::NonspacingMark | G::SpacingMark | G::EnclosingMark => Class::Mark,
        G::ConnectorPunctuation
        | G::DashPunctuation
        | G::OpenPunctuation
        | G::ClosePunctuation
        | G::InitialPunctuation
        | G::FinalPunctuation
        | G::OtherPunctuation => Class::Punctuation,
        G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol | G::OtherSymbol => Class::Symbol,
        G::SpaceSeparator | G::LineSeparator | G::ParagraphSeparator => Class::Separator,
        // Control, Format, Surrogate, PrivateUse, Unassigned (the enum is non-exhaustive).
        _ => Class::Other,
    }
}

/// `\p{L}`
pub(crate) fn is_letter(c: char) -> bool {
    class(c) == Class::Letter
}

/// `\p{N}`
pub(crate) fn is_number(c: char) -> bool {
    class(c) == Class::Number
}

/// `\s`: the Unicode `White_Space` property.
pub(crate) fn is_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// The char GPT-2's byte-level encoding gives byte `b`: printable Latin-1 bytes stand for
/// themselves, the 68 others (controls, space, DEL, NBSP, soft hyphen) take U+0100 onwards in
/// byte order.
pub(crate) fn byte_to_char(b: u8) -> char {
    let cp = match b {
        0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff => u32::from(b),
        0x00..=0x20 => 0x100 + u32::from(b),
        0x7f..=0xa0 => 0x100 + 33 + u32::from(b - 0x7f),
        0xad => 0x100 + 67,
    };
    // Every value above is below 0x144, a valid scalar value.
    char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The byte that `c` stands for in GPT-2's byte-level encoding, if any.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = u32::from(c);
    let b = match cp {
        0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff => cp,
        0x100..=0x120 => cp - 0x100,
        0x121..=0x142 => cp - 0x121 + 0x7f,
        0x143 => 0xad,
        _ => return None,
    };
    u8::try_from(b).ok()
}

/// Appends the byte-level encoding of `text` (one char per UTF-8 byte) to `out`.
pub(crate) fn byte_encode_into(text: &str, out: &mut String) {
    out.extend(text.bytes().map(byte_to_char));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_mapping_is_a_bijection_onto_256_chars() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert_ne!(c, char::REPLACEMENT_CHARACTER);
            assert!(seen.insert(c), "byte {b:#x} maps to an already used char");
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(0xad), '\u{143}');
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte(' '), None);
    }

    #[test]
    fn classes_follow_general_categories() {
        assert_eq!(class('a'), Class::Letter);
        assert_eq!(class('你'), Class::Letter);
        assert_eq!(class('٣'), Class::Number);
        assert_eq!(class('½'), Class::Number);
        assert_eq!(class('\u{301}'), Class::Mark);
        assert_eq!(class('!'), Class::Punctuation);
        assert_eq!(class('$'), Class::Symbol);
        assert_eq!(class('😀'), Class::Symbol);
        assert_eq!(class('\u{a0}'), Class::Separator);
        assert_eq!(class('\u{200d}'), Class::Other);
        assert!(is_whitespace('\u{3000}'));
        assert!(is_whitespace('\u{85}'));
        assert!(!is_whitespace('\u{1f}'));
        assert!(!is_whitespace('\u{200b}'));
    }
}
