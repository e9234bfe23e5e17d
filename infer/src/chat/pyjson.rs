//! The `tojson` filter of Hugging Face chat templates: Python's `json.dumps` with
//! `ensure_ascii=False` by default, no HTML escaping, and Python's number and spacing rules.

use std::fmt::Write;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// `value | tojson(indent=None, ensure_ascii=False, sort_keys=False, separators=None)`.
pub(super) fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => return Err(invalid("separators must be a pair of strings")),
        // Python drops the space after commas when indenting.
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let style = Style {
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    style.value(&mut out, value, 0)?;
    Ok(Value::from(out))
}

fn invalid(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("tojson: {msg}"))
}

/// How `json.dumps` was asked to write.
struct Style {
    indent: Option<usize>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

impl Style {
    fn value(&self, out: &mut String, v: &Value, depth: usize) -> Result<(), Error> {
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number if v.is_integer() => {
                let _ = write!(out, "{v}");
            }
            ValueKind::Number => out.push_str(&py_float(f64::try_from(v.clone())?)),
            ValueKind::String => self.string(out, v.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    self.separator(out, i, depth + 1);
                    self.value(out, item, depth + 1)?;
                }
                self.close(out, ']', items.len(), depth);
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in v.try_iter()? {
                    let value = v.get_item(&key)?;
                    entries.push((key_text(&key)?, value));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    self.separator(out, i, depth + 1);
                    self.string(out, key);
                    out.push_str(&self.key_sep);
                    self.value(out, value, depth + 1)?;
                }
                self.close(out, '}', entries.len(), depth);
            }
            kind => return Err(invalid(&format!("cannot serialize a {kind}"))),
        }
        Ok(())
    }

    fn separator(&self, out: &mut String, index: usize, depth: usize) {
        if index > 0 {
            out.push_str(&self.item_sep);
        }
        self.newline(out, depth);
    }

    fn close(&self, out: &mut String, bracket: char, len: usize, depth: usize) {
        if len > 0 {
            self.newline(out, depth);
        }
        out.push(bracket);
    }

    fn newline(&self, out: &mut String, depth: usize) {
        if let Some(width) = self.indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', width * depth));
        }
    }

    fn string(&self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if u32::from(c) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python turns non-string keys into strings.
fn key_text(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number if key.is_integer() => Ok(key.to_string()),
        ValueKind::Number => Ok(py_float(f64::try_from(key.clone())?)),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::None | ValueKind::Undefined => Ok("null".to_owned()),
        kind => Err(invalid(&format!("keys must be strings, not {kind}"))),
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional for exponents from
/// -4 to 15 (always with a fraction), scientific with a signed two-digit exponent otherwise.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e3".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.unsigned_abs());
    }
    let point = exp + 1; // digits before the decimal point
    let body = if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        format!("0.{zeros}{digits}")
    } else {
        let point = point.unsigned_abs() as usize;
        if digits.len() <= point {
            format!("{digits}{}.0", "0".repeat(point - digits.len()))
        } else {
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumps(json: &str, kwargs: &[(&str, Value)]) -> String {
        let v: Value = serde_json::from_str(json).unwrap();
        let kwargs = Kwargs::from_iter(kwargs.iter().map(|(k, v)| (*k, v.clone())));
        tojson(&v, kwargs).unwrap().to_string()
    }

    #[test]
    fn matches_python_json_dumps() {
        assert_eq!(
            dumps(
                r#"{"z": [1, 2.5, "é<&>'\n"], "a": {}, "b": [], "c": null}"#,
                &[]
            ),
            r#"{"z": [1, 2.5, "é<&>'\n"], "a": {}, "b": [], "c": null}"#
        );
        assert_eq!(
            dumps(
                r#"{"b": [1, {"x": true}], "a": "😀"}"#,
                &[("indent", Value::from(2))]
            ),
            "{\n  \"b\": [\n    1,\n    {\n      \"x\": true\n    }\n  ],\n  \"a\": \"😀\"\n}"
        );
        assert_eq!(
            dumps(
                r#"{"b": 1, "a": "😀é"}"#,
                &[
                    ("sort_keys", Value::from(true)),
                    ("ensure_ascii", Value::from(true))
                ]
            ),
            r#"{"a": "\ud83d\ude00\u00e9", "b": 1}"#
        );
        assert_eq!(
            dumps(
                "[1, 2]",
                &[(
                    "separators",
                    Value::from(vec![Value::from(","), Value::from(":")])
                )]
            ),
            "[1,2]"
        );
        assert_eq!(dumps(r#""\u0001""#, &[]), r#""\u0001""#);
    }

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (2.5, "2.5"),
            (-0.5, "-0.5"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123_456.789, "123456.789"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.234e20, "1.234e+20"),
            (0.1, "0.1"),
            (0.0, "0.0"),
        ];
        for (f, s) in cases {
            assert_eq!(py_float(f), s, "{f}");
        }
    }
}
