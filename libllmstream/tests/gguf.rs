//! GGUF model map: the real SmolLM2 model against a fixture made by the `gguf` Python package,
//! a corpus of damaged files built here (each must give its own error variant), and random
//! mutations of a valid synthetic file (never a panic; whatever parses lies inside the file).
#![allow(clippy::unwrap_used)]

use llmstream::gguf::{GgmlType, GgufError, GgufFile, Value, MAX_ARRAY_DEPTH};
use proptest::prelude::*;
use std::io::Read;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// A GGUF writer that can also write what no valid writer would.
// ---------------------------------------------------------------------------------------------

/// A metadata value as written: its type id comes from the variant, except for `Raw`.
#[derive(Clone, Debug)]
enum V {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(u8),
    Str(Vec<u8>),
    /// Element type id and elements (written without their own type ids).
    Arr(u32, Vec<V>),
    /// An array header claiming `len` elements of type `elem`, with no elements written.
    ArrHeader(u32, u64),
    U64(u64),
    I64(i64),
    F64(f64),
    /// Any type id followed by raw bytes.
    Raw(u32, Vec<u8>),
    /// A string whose length field is `len` followed by `bytes`.
    StrLen(u64, Vec<u8>),
}

impl V {
    fn s(text: &str) -> V {
        V::Str(text.as_bytes().to_vec())
    }

    fn type_id(&self) -> u32 {
        match self {
            V::U8(_) => 0,
            V::I8(_) => 1,
            V::U16(_) => 2,
            V::I16(_) => 3,
            V::U32(_) => 4,
            V::I32(_) => 5,
            V::F32(_) => 6,
            V::Bool(_) => 7,
            V::Str(_) | V::StrLen(..) => 8,
            V::Arr(..) | V::ArrHeader(..) => 9,
            V::U64(_) => 10,
            V::I64(_) => 11,
            V::F64(_) => 12,
            V::Raw(t, _) => *t,
        }
    }

    /// The payload after the type id.
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            V::U8(v) => out.push(*v),
            V::I8(v) => out.extend(v.to_le_bytes()),
            V::U16(v) => out.extend(v.to_le_bytes()),
            V::I16(v) => out.extend(v.to_le_bytes()),
            V::U32(v) => out.extend(v.to_le_bytes()),
            V::I32(v) => out.extend(v.to_le_bytes()),
            V::F32(v) => out.extend(v.to_le_bytes()),
            V::Bool(v) => out.push(*v),
            V::Str(b) => put_str(out, b),
            V::StrLen(len, b) => {
                out.extend(len.to_le_bytes());
                out.extend(b);
            }
            V::Arr(elem, items) => {
                out.extend(elem.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.put(out);
                }
            }
            V::ArrHeader(elem, len) => {
                out.extend(elem.to_le_bytes());
                out.extend(len.to_le_bytes());
            }
            V::U64(v) => out.extend(v.to_le_bytes()),
            V::I64(v) => out.extend(v.to_le_bytes()),
            V::F64(v) => out.extend(v.to_le_bytes()),
            V::Raw(_, b) => out.extend(b),
        }
    }
}

fn put_str(out: &mut Vec<u8>, b: &[u8]) {
    out.extend((b.len() as u64).to_le_bytes());
    out.extend(b);
}

/// A tensor info as written. `offset: None` places it after the previous one, aligned.
#[derive(Clone, Debug)]
struct T {
    name: Vec<u8>,
    dims: Vec<u64>,
    ty: u32,
    offset: Option<u64>,
}

impl T {
    fn new(name: &str, dims: &[u64], ty: GgmlType) -> T {
        T {
            name: name.as_bytes().to_vec(),
            dims: dims.to_vec(),
            ty: ty.id(),
            offset: None,
        }
    }

    fn at(mut self, offset: u64) -> T {
        self.offset = Some(offset);
        self
    }

    /// Bytes of data, when the dims are sane.
    fn size(&self) -> u64 {
        let n = self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        n.and_then(|n| GgmlType::from_id(self.ty)?.bytes_for(n))
            .unwrap_or(0)
    }
}

#[derive(Clone, Debug)]
struct Spec {
    magic: [u8; 4],
    version: u32,
    tensor_count: Option<u64>,
    kv_count: Option<u64>,
    kvs: Vec<(Vec<u8>, V)>,
    tensors: Vec<T>,
    alignment: u64,
}

/// Where things are in a built file.
#[derive(Debug)]
struct Built {
    bytes: Vec<u8>,
    /// Start of the first metadata entry.
    kv_start: usize,
    /// Start of the first tensor info.
    tensors_start: usize,
    /// End of the last tensor info (the header proper, before padding).
    header_end: usize,
    data_offset: usize,
    /// Relative offsets the tensors got.
    offsets: Vec<u64>,
}

impl Spec {
    fn empty() -> Spec {
        Spec {
            magic: *b"GGUF",
            version: 3,
            tensor_count: None,
            kv_count: None,
            kvs: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
        }
    }

    /// The valid synthetic model: every value type, nested arrays, two layers and globals.
    fn valid() -> Spec {
        let mut s = Spec::empty();
        s.kv("general.architecture", V::s("llama"));
        s.kv("llama.block_count", V::U32(2));
        s.kv("t.u8", V::U8(200));
        s.kv("t.i8", V::I8(-100));
        s.kv("t.u16", V::U16(60000));
        s.kv("t.i16", V::I16(-30000));
        s.kv("t.i32", V::I32(-5));
        s.kv("t.f32", V::F32(1.5));
        s.kv("t.bool", V::Bool(1));
        s.kv("t.u64", V::U64(1 << 40));
        s.kv("t.i64", V::I64(-(1 << 40)));
        s.kv("t.f64", V::F64(0.25));
        s.kv("t.str", V::s("héllo"));
        s.kv("t.tokens", V::Arr(8, vec![V::s("a"), V::s("bb"), V::s("")]));
        s.kv(
            "t.nested",
            V::Arr(
                9,
                vec![
                    V::Arr(4, vec![V::U32(1), V::U32(2)]),
                    V::Arr(8, vec![V::s("x")]),
                ],
            ),
        );
        s.tensors = vec![
            T::new("token_embd.weight", &[8, 4], GgmlType::F32),
            T::new("blk.0.attn_norm.weight", &[8], GgmlType::F32),
            T::new("blk.0.ffn_up.weight", &[32, 2], GgmlType::Q8_0),
            T::new("blk.1.attn_norm.weight", &[8], GgmlType::F32),
            T::new("blk.1.ffn_up.weight", &[32, 2], GgmlType::Q8_0),
            T::new("output_norm.weight", &[8], GgmlType::F32),
        ];
        s
    }

    fn kv(&mut self, key: &str, v: V) -> &mut Self {
        self.kvs.push((key.as_bytes().to_vec(), v));
        self
    }

    fn build(&self) -> Built {
        let mut out = Vec::new();
        out.extend(self.magic);
        out.extend(self.version.to_le_bytes());
        out.extend(
            self.tensor_count
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        out.extend(self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        let kv_start = out.len();
        for (k, v) in &self.kvs {
            put_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            v.put(&mut out);
        }
        let tensors_start = out.len();
        let mut next = 0u64;
        let mut offsets = Vec::new();
        let mut data_end = 0u64;
        for t in &self.tensors {
            let off = t.offset.unwrap_or(next);
            offsets.push(off);
            let end = off.saturating_add(t.size());
            data_end = data_end.max(end);
            next = end
                .checked_next_multiple_of(self.alignment)
                .unwrap_or(u64::MAX);
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend(off.to_le_bytes());
        }
        let header_end = out.len();
        let data_offset = header_end.next_multiple_of(self.alignment as usize);
        out.resize(data_offset, 0);
        // Data: a recognisable pattern, up to the end of the last tensor, no trailing padding.
        let data_len = usize::try_from(data_end).unwrap().min(1 << 20);
        out.extend((0..data_len).map(|i| (i % 251) as u8));
        Built {
            bytes: out,
            kv_start,
            tensors_start,
            header_end,
            data_offset,
            offsets,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.build().bytes
    }

    fn parse(&self) -> Result<GgufFile, GgufError> {
        GgufFile::parse_bytes(&self.bytes())
    }

    fn err(&self) -> GgufError {
        match self.parse() {
            Ok(f) => panic!("expected an error, parsed {} tensors", f.tensors.len()),
            Err(e) => e,
        }
    }
}

/// Invariants of any successful parse of `bytes`.
fn check_invariants(file: &GgufFile, bytes: &[u8]) {
    let len = bytes.len() as u64;
    assert_eq!(file.file_len, len);
    assert!(file.alignment.is_power_of_two());
    let mut spans = Vec::new();
    for t in &file.tensors {
        assert!(t.size > 0);
        assert!(t.offset >= file.data_offset);
        let end = t.offset.checked_add(t.size).unwrap();
        assert!(end <= len, "{} ends at {end} past {len}", t.name);
        assert_eq!(
            t.size,
            t.ggml_type.bytes_for(t.dims.iter().product()).unwrap()
        );
        spans.push((t.offset, end));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap {w:?}");
    }
    let mut owner = vec![None; file.tensors.len()];
    for (i, layer) in file.layers.iter().enumerate() {
        assert_eq!(layer.index as usize, i);
        for &t in &layer.tensors {
            assert!(owner[t].is_none());
            owner[t] = Some(i);
            let view = layer.tensor_offset(file, t).unwrap();
            assert!(view + file.tensors[t].size <= layer.byte_len());
        }
    }
    for &g in &file.globals {
        assert!(owner[g].is_none());
        owner[g] = Some(usize::MAX);
    }
    assert!(owner.iter().all(Option::is_some));
}

// ---------------------------------------------------------------------------------------------
// The valid synthetic file.
// ---------------------------------------------------------------------------------------------

#[test]
fn synthetic_file_parses_exactly() {
    let built = Spec::valid().build();
    let f = GgufFile::parse_bytes(&built.bytes).unwrap();
    check_invariants(&f, &built.bytes);
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.data_offset, built.data_offset as u64);
    assert_eq!(f.data_offset % 32, 0);
    assert_eq!(f.metadata.len(), 15);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.get_arch_u32("block_count"), Some(2));
    assert_eq!(f.get("t.u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("t.i8"), Some(&Value::I8(-100)));
    assert_eq!(f.get("t.u16"), Some(&Value::U16(60000)));
    assert_eq!(f.get("t.i16"), Some(&Value::I16(-30000)));
    assert_eq!(f.get("t.i32"), Some(&Value::I32(-5)));
    assert_eq!(f.get("t.f32"), Some(&Value::F32(1.5)));
    assert_eq!(f.get("t.bool"), Some(&Value::Bool(true)));
    assert_eq!(f.get("t.u64"), Some(&Value::U64(1 << 40)));
    assert_eq!(f.get("t.i64"), Some(&Value::I64(-(1 << 40))));
    assert_eq!(f.get("t.f64"), Some(&Value::F64(0.25)));
    assert_eq!(f.get_str("t.str"), Some("héllo"));
    assert_eq!(f.get_str_array("t.tokens"), Some(vec!["a", "bb", ""]));
    assert_eq!(
        f.get("t.nested"),
        Some(&Value::Array(vec![
            Value::Array(vec![Value::U32(1), Value::U32(2)]),
            Value::Array(vec![Value::String("x".into())]),
        ]))
    );
    // Integer getters accept other widths; typed errors name the key.
    assert_eq!(f.get_u32("t.u8"), Some(200));
    assert_eq!(f.get_u32("t.i32"), None);
    assert_eq!(f.get_i64("t.i32"), Some(-5));
    assert_eq!(f.get_f32("t.f64"), Some(0.25));
    assert_eq!(
        f.require_u32("nope"),
        Err(GgufError::MissingKey { key: "nope".into() })
    );
    assert!(matches!(
        f.require_u32("t.str"),
        Err(GgufError::WrongType {
            found: "string",
            ..
        })
    ));

    let names: Vec<_> = f.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "token_embd.weight",
            "blk.0.attn_norm.weight",
            "blk.0.ffn_up.weight",
            "blk.1.attn_norm.weight",
            "blk.1.ffn_up.weight",
            "output_norm.weight"
        ]
    );
    let sizes: Vec<_> = f.tensors.iter().map(|t| t.size).collect();
    assert_eq!(sizes, [128, 32, 68, 32, 68, 32]);
    for (t, rel) in f.tensors.iter().zip(&built.offsets) {
        assert_eq!(t.offset, f.data_offset + rel, "{}", t.name);
    }
    // Relative offsets: 0, 128, 160, 256 (68 rounded up to 96 after 160), 288, 384.
    assert_eq!(built.offsets, [0, 128, 160, 256, 288, 384]);
    assert_eq!(f.tensor("blk.0.ffn_up.weight").unwrap().dims, [32, 2]);
    assert_eq!(
        f.tensor("blk.0.ffn_up.weight").unwrap().ggml_type,
        GgmlType::Q8_0
    );
    assert_eq!(f.tensor_index("output_norm.weight"), Some(5));

    assert_eq!(f.layers.len(), 2);
    assert_eq!(f.globals, [0, 5]);
    let d = f.data_offset;
    assert_eq!(f.layers[0].tensors, [1, 2]);
    assert_eq!(f.layers[0].span, d + 128..d + 228);
    assert_eq!(f.layers[1].tensors, [3, 4]);
    assert_eq!(f.layers[1].span, d + 256..d + 356);
    assert!(f.layers.iter().all(|l| l.contiguous));
    assert_eq!(f.layers[0].tensor_offset(&f, 1), Some(0));
    assert_eq!(f.layers[0].tensor_offset(&f, 2), Some(32));
    assert_eq!(f.layers[0].tensor_offset(&f, 3), None);
    assert_eq!(f.layers[1].byte_len(), 100);
    let views: Vec<_> = f.layers[1]
        .tensor_views(&f)
        .map(|(t, o)| (t.name.as_str(), o))
        .collect();
    assert_eq!(
        views,
        [("blk.1.attn_norm.weight", 0), ("blk.1.ffn_up.weight", 32)]
    );
}

#[test]
fn version_2_parses_like_version_3() {
    let mut s = Spec::valid();
    let v3 = s.parse().unwrap();
    s.version = 2;
    let v2 = s.parse().unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.tensors, v3.tensors);
    assert_eq!(v2.metadata, v3.metadata);
}

/// A reader that hands out one byte per call.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((b, rest)), Some(slot)) => {
                *slot = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn parse_through_a_byte_at_a_time_reader_equals_parse_bytes() {
    let bytes = Spec::valid().bytes();
    let a = GgufFile::parse(Trickle(&bytes), bytes.len() as u64).unwrap();
    assert_eq!(a, GgufFile::parse_bytes(&bytes).unwrap());
}

#[test]
fn custom_alignment_moves_the_data_section() {
    let mut s = Spec::valid();
    s.alignment = 256;
    s.kv("general.alignment", V::U32(256));
    let built = s.build();
    let f = GgufFile::parse_bytes(&built.bytes).unwrap();
    assert_eq!(f.alignment, 256);
    assert_eq!(f.data_offset % 256, 0);
    assert_eq!(f.data_offset, built.data_offset as u64);
    assert_eq!(f.tensors[1].offset, f.data_offset + 256);
    check_invariants(&f, &built.bytes);
}

#[test]
fn layers_interleaved_with_others_are_not_contiguous() {
    let mut s = Spec::empty();
    let t = |name: &str, at: u64| T::new(name, &[8], GgmlType::F32).at(at);
    s.tensors = vec![
        t("blk.0.a", 0),
        t("blk.1.a", 32),
        t("blk.0.b", 64),
        t("blk.1.b", 96),
        t("blk.2.a", 128),
        t("blk.2.b", 192),
        t("glob", 160),
        t("blk.3.b", 256),
        t("blk.3.a", 224),
    ];
    let f = s.parse().unwrap();
    check_invariants(&f, &s.bytes());
    let d = f.data_offset;
    let spans: Vec<_> = f.layers.iter().map(|l| l.span.clone()).collect();
    assert_eq!(
        spans,
        [
            d..d + 96,
            d + 32..d + 128,
            d + 128..d + 224,
            d + 224..d + 288
        ]
    );
    let contiguous: Vec<_> = f.layers.iter().map(|l| l.contiguous).collect();
    assert_eq!(contiguous, [false, false, false, true]);
    assert_eq!(f.globals, [6]);
    // Tensors stay in table order; views are relative to the span start.
    assert_eq!(f.layers[3].tensors, [7, 8]);
    assert_eq!(f.layers[3].tensor_offset(&f, 7), Some(32));
    assert_eq!(f.layers[3].tensor_offset(&f, 8), Some(0));
}

#[test]
fn names_that_are_not_canonical_layer_names_are_globals() {
    let mut s = Spec::empty();
    s.tensors = vec![
        T::new("blk.0.x", &[8], GgmlType::F32),
        T::new("blk.00.x", &[8], GgmlType::F32),
        T::new("blk.1", &[8], GgmlType::F32),
        T::new("blk.-1.x", &[8], GgmlType::F32),
        T::new("blk.1.x", &[8], GgmlType::F32),
    ];
    let f = s.parse().unwrap();
    assert_eq!(f.layers.len(), 2);
    assert_eq!(f.globals, [1, 2, 3]);
}

// ---------------------------------------------------------------------------------------------
// Damaged files: each kind of damage gives its own variant.
// ---------------------------------------------------------------------------------------------

fn truncated_what(e: &GgufError) -> &str {
    match e {
        GgufError::Truncated { what, .. } => what,
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn every_truncation_of_the_header_is_an_error() {
    let built = Spec::valid().build();
    let full = &built.bytes;
    let last_tensor_end = full.len();
    for n in 0..last_tensor_end {
        let e = GgufFile::parse_bytes(&full[..n]).unwrap_err();
        let ok = if n < built.header_end {
            matches!(
                e,
                GgufError::Truncated { .. }
                    | GgufError::CountTooLarge { .. }
                    | GgufError::StringTooLong { .. }
            )
        } else {
            // The header is whole; the last tensor's data is cut.
            matches!(e, GgufError::TensorPastEnd { tensor: 5, .. })
        };
        assert!(ok, "cut at {n}: {e:?}");
        // Display never panics and names an offset or a place.
        assert!(!e.to_string().is_empty());
    }
    // The interesting boundaries.
    let cut = |n: usize| GgufFile::parse_bytes(&full[..n]).unwrap_err();
    assert_eq!(
        cut(0),
        GgufError::Truncated {
            what: "magic".into(),
            offset: 0,
            needed: 4,
            available: 0
        }
    );
    assert_eq!(truncated_what(&cut(3)), "magic");
    assert_eq!(
        cut(6),
        GgufError::Truncated {
            what: "version".into(),
            offset: 4,
            needed: 4,
            available: 2
        }
    );
    assert_eq!(truncated_what(&cut(8)), "tensor count");
    assert_eq!(truncated_what(&cut(15)), "tensor count");
    // A count after a cut cannot fit in the (few) bytes left.
    assert!(matches!(
        cut(20),
        GgufError::CountTooLarge { ref what, count: 6, offset: 8, max: 0 } if what == "tensor count"
    ));
    // Inside the first key's length: the 6 tensors (32 bytes each at least) no longer fit.
    assert!(matches!(
        cut(built.kv_start + 3),
        GgufError::CountTooLarge { ref what, .. } if what == "tensor count"
    ));
    // Inside the tensor infos: name length of tensor 0.
    let t = built.tensors_start;
    let e = cut(t + 4);
    assert_eq!(truncated_what(&e), "name of tensor 0");
    assert!(matches!(e, GgufError::Truncated { offset, .. } if offset == t as u64));
    // Inside the last tensor's offset field.
    let e = cut(built.header_end - 1);
    assert_eq!(
        truncated_what(&e),
        "offset of tensor 5 \"output_norm.weight\""
    );
    // The header complete, padding cut.
    assert!(matches!(
        cut(built.header_end),
        GgufError::TensorPastEnd { tensor: 5, .. }
    ));
}

#[test]
fn every_truncation_inside_the_metadata_is_an_error_of_a_known_kind() {
    // With no tensors, counts fit in short files, so cuts inside entries reach the reads.
    let mut s = Spec::valid();
    s.tensors.clear();
    let built = s.build();
    for n in built.kv_start..built.header_end {
        let e = GgufFile::parse_bytes(&built.bytes[..n]).unwrap_err();
        match &e {
            GgufError::Truncated { what, offset, .. } => {
                assert!(*offset <= n as u64, "cut {n}: {e}");
                assert!(
                    what.contains("key") || what.contains("entry"),
                    "cut {n}: {e}"
                );
            }
            GgufError::StringTooLong { .. } | GgufError::CountTooLarge { .. } => {}
            other => panic!("cut {n}: {other:?}"),
        }
    }
    let cut = |n: usize| GgufFile::parse_bytes(&built.bytes[..n]).unwrap_err();
    let k = built.kv_start;
    // Inside the first key's length field: the kv count (15 entries of at least 13 bytes)
    // no longer fits.
    assert!(matches!(cut(k + 3), GgufError::CountTooLarge { .. }));
    // A file long enough for the count, cut inside the first key's string bytes.
    let mut one = Spec::empty();
    one.kv("general.architecture", V::s("llama"));
    let b = one.build();
    let e = GgufFile::parse_bytes(&b.bytes[..b.kv_start + 8 + 5]).unwrap_err();
    assert_eq!(
        e,
        GgufError::StringTooLong {
            what: "key of metadata entry 0".into(),
            offset: b.kv_start as u64,
            len: 20,
            max: 5
        }
    );
    // Cut inside the value: the string value's length field.
    let value_at = b.kv_start + 8 + 20 + 4;
    let e = GgufFile::parse_bytes(&b.bytes[..value_at + 2]).unwrap_err();
    assert_eq!(
        e,
        GgufError::Truncated {
            what: "value of key \"general.architecture\"".into(),
            offset: value_at as u64,
            needed: 8,
            available: 2
        }
    );
}

#[test]
fn a_reader_shorter_than_the_declared_length_is_an_io_error() {
    let built = Spec::valid().build();
    let full = &built.bytes;
    for n in 0..full.len() {
        let r = GgufFile::parse(&full[..n], full.len() as u64);
        if n < built.header_end {
            assert!(matches!(r, Err(GgufError::Io { .. })), "cut {n}: {r:?}");
        } else {
            // Only the header is read; the data is checked against the declared length.
            assert!(r.is_ok(), "cut {n}: {r:?}");
        }
    }
}

#[test]
fn bad_magic() {
    let mut s = Spec::valid();
    s.magic = *b"GGML";
    assert_eq!(s.err(), GgufError::BadMagic { found: *b"GGML" });
}

#[test]
fn unsupported_versions() {
    for v in [0, 1, 4, 0x7fff_ffff] {
        let mut s = Spec::valid();
        s.version = v;
        assert_eq!(s.err(), GgufError::UnsupportedVersion { version: v });
    }
    let mut s = Spec::valid();
    s.version = 3u32.swap_bytes();
    assert_eq!(s.err(), GgufError::BigEndian { version: 3 });
}

#[test]
fn huge_counts() {
    let mut s = Spec::valid();
    s.tensor_count = Some(1 << 63);
    assert!(matches!(
        s.err(),
        GgufError::CountTooLarge { ref what, count, offset: 8, .. }
            if what == "tensor count" && count == 1 << 63
    ));
    let mut s = Spec::valid();
    s.kv_count = Some(u64::MAX);
    assert!(matches!(
        s.err(),
        GgufError::CountTooLarge { ref what, count: u64::MAX, offset: 16, .. }
            if what == "metadata key count"
    ));
    // More entries than written, but few enough to fit: the reads run off the end.
    let mut s = Spec::empty();
    s.kv("a", V::U8(1));
    s.kv_count = Some(2);
    assert!(matches!(
        s.err(),
        GgufError::CountTooLarge { .. } | GgufError::Truncated { .. }
    ));
}

#[test]
fn huge_string_lengths() {
    let mut s = Spec::valid();
    s.kv("k", V::StrLen(1 << 62, b"abc".to_vec()));
    assert!(matches!(
        s.err(),
        GgufError::StringTooLong { ref what, len, .. } if what == "value of key \"k\"" && len == 1 << 62
    ));
    // A key length.
    let mut bytes = Spec::empty().bytes();
    bytes[16..24].copy_from_slice(&1u64.to_le_bytes());
    bytes.extend((1u64 << 62).to_le_bytes());
    bytes.extend([0u8; 64]);
    assert!(matches!(
        GgufFile::parse_bytes(&bytes).unwrap_err(),
        GgufError::StringTooLong { offset: 24, .. }
    ));
    // A tensor name.
    let mut s = Spec::valid();
    s.tensors[0].name = vec![b'x'; 10];
    let mut bytes = s.bytes();
    let at = s.build().tensors_start;
    bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        GgufFile::parse_bytes(&bytes).unwrap_err(),
        GgufError::StringTooLong { ref what, len: u64::MAX, .. } if what == "name of tensor 0"
    ));
}

#[test]
fn huge_array_lengths() {
    for elem in [0u32, 4, 8, 9, 12] {
        let mut s = Spec::valid();
        s.kv("arr", V::ArrHeader(elem, 1 << 60));
        assert!(matches!(
            s.err(),
            GgufError::CountTooLarge { ref what, count, .. }
                if what == "length of array \"arr\"" && count == 1 << 60
        ));
    }
    // An array of arrays whose inner length is huge.
    let mut s = Spec::valid();
    s.kv("arr", V::Arr(9, vec![V::ArrHeader(10, 1 << 60)]));
    assert!(matches!(s.err(), GgufError::CountTooLarge { .. }));
}

#[test]
fn metadata_memory_is_capped() {
    // 17M one-byte elements fit in the file but would take 32 bytes each in memory.
    let n = 17 << 20;
    let mut bytes = Spec::empty().bytes();
    bytes[16..24].copy_from_slice(&1u64.to_le_bytes());
    put_str(&mut bytes, b"big");
    bytes.extend(9u32.to_le_bytes());
    bytes.extend(0u32.to_le_bytes());
    bytes.extend((n as u64).to_le_bytes());
    bytes.resize(bytes.len() + n, 7);
    assert_eq!(
        GgufFile::parse_bytes(&bytes).unwrap_err(),
        GgufError::MetadataTooLarge {
            key: "big".into(),
            max: llmstream::gguf::MAX_METADATA_BYTES
        }
    );
}

#[test]
fn unknown_value_types() {
    let mut s = Spec::valid();
    s.kv("weird", V::Raw(13, vec![0; 16]));
    let b = s.build();
    let e = GgufFile::parse_bytes(&b.bytes).unwrap_err();
    assert!(matches!(
        e,
        GgufError::UnknownValueType { ref key, type_id: 13, .. } if key == "weird"
    ));
    let mut s = Spec::valid();
    s.kv("weird", V::ArrHeader(0xffff_ffff, 1));
    assert!(matches!(
        s.err(),
        GgufError::UnknownValueType {
            type_id: 0xffff_ffff,
            ..
        }
    ));
}

#[test]
fn nesting_is_capped() {
    let nest = |depth: usize| {
        let mut v = V::Arr(4, vec![V::U32(1)]);
        for _ in 1..depth {
            v = V::Arr(9, vec![v]);
        }
        v
    };
    let mut s = Spec::valid();
    s.kv("deep", nest(MAX_ARRAY_DEPTH));
    let f = s.parse().unwrap();
    let mut v = f.get("deep").unwrap();
    for _ in 1..MAX_ARRAY_DEPTH {
        v = &v.as_array().unwrap()[0];
    }
    assert_eq!(v, &Value::Array(vec![Value::U32(1)]));

    let mut s = Spec::valid();
    s.kv("deep", nest(MAX_ARRAY_DEPTH + 1));
    assert!(matches!(
        s.err(),
        GgufError::NestingTooDeep { ref key, max: MAX_ARRAY_DEPTH, .. } if key == "deep"
    ));
}

#[test]
fn invalid_utf8() {
    let mut s = Spec::valid();
    s.kvs.push((vec![b'k', 0xff], V::U8(1)));
    assert!(matches!(
        s.err(),
        GgufError::InvalidUtf8 { ref what, .. } if what == "key of metadata entry 15"
    ));
    let mut s = Spec::valid();
    s.kv("v", V::Str(vec![0xc3, 0x28]));
    assert!(matches!(s.err(), GgufError::InvalidUtf8 { ref what, .. } if what.contains("\"v\"")));
    let mut s = Spec::valid();
    s.tensors[2].name = vec![b'b', 0x80];
    let at = s.build().tensors_start;
    assert!(matches!(
        s.err(),
        GgufError::InvalidUtf8 { ref what, offset } if what == "name of tensor 2" && offset > at as u64
    ));
}

#[test]
fn duplicates() {
    let mut s = Spec::valid();
    s.kv("t.u8", V::U8(1));
    assert_eq!(
        s.err(),
        GgufError::DuplicateKey {
            key: "t.u8".into(),
            first: 2,
            second: 15
        }
    );
    let mut s = Spec::valid();
    s.tensors
        .push(T::new("blk.0.ffn_up.weight", &[8], GgmlType::F32));
    assert_eq!(
        s.err(),
        GgufError::DuplicateTensor {
            name: "blk.0.ffn_up.weight".into(),
            first: 2,
            second: 6
        }
    );
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48] {
        let mut s = Spec::valid();
        s.kv("general.alignment", V::U32(a));
        assert_eq!(
            s.err(),
            GgufError::BadAlignment {
                alignment: u64::from(a)
            }
        );
    }
    let mut s = Spec::valid();
    s.kv("general.alignment", V::U64(32));
    assert_eq!(s.err(), GgufError::AlignmentType { found: "uint64" });
}

#[test]
fn dimension_counts() {
    for n in [0usize, 5, 1000] {
        let mut s = Spec::valid();
        s.tensors[1].dims = vec![1; n];
        assert!(
            matches!(
                s.err(),
                GgufError::BadDimCount { tensor: 1, ref name, .. } if name == "blk.0.attn_norm.weight"
            ),
            "n_dims {n}"
        );
    }
    let mut s = Spec::valid();
    s.tensors[1].dims = vec![8, 1, 1, 1];
    s.parse().unwrap();
}

#[test]
fn zero_and_overflowing_dims() {
    let mut s = Spec::valid();
    s.tensors[1].dims = vec![8, 0];
    assert!(matches!(
        s.err(),
        GgufError::ZeroDim {
            tensor: 1,
            dim: 1,
            ..
        }
    ));
    for dims in [
        vec![1u64 << 32, 1 << 32],       // element count overflows u64
        vec![u64::MAX],                  // beyond i64
        vec![1 << 62, 2],                // element count beyond i64
        vec![1 << 61, 2, 1, 1],          // 2^62 elements: bytes (×4) overflow u64
        vec![1 << 20, 1 << 20, 1 << 20], // 2^60 elements: 2^62 bytes fit; see below
    ] {
        let mut s = Spec::valid();
        s.tensors[1].dims = dims.clone();
        s.tensors[1].offset = Some(128);
        let e = s.err();
        if dims.len() == 3 {
            // Fits in u64 arithmetic but not in the file.
            assert!(
                matches!(e, GgufError::TensorPastEnd { tensor: 1, .. }),
                "{e:?}"
            );
        } else {
            assert!(
                matches!(e, GgufError::DimsOverflow { tensor: 1, ref dims, .. } if !dims.is_empty()),
                "{dims:?}: {e:?}"
            );
        }
    }
}

#[test]
fn unknown_tensor_types() {
    for id in [4u32, 5, 31, 36, 99, u32::MAX] {
        let mut s = Spec::valid();
        s.tensors[0].ty = id;
        s.tensors[0].offset = Some(0);
        assert!(matches!(
            s.err(),
            GgufError::UnknownTensorType { tensor: 0, type_id, .. } if type_id == id
        ));
    }
}

#[test]
fn rows_must_be_whole_blocks() {
    let mut s = Spec::valid();
    s.tensors[2].dims = vec![16, 4];
    assert_eq!(
        s.err(),
        GgufError::NotWholeBlocks {
            tensor: 2,
            name: "blk.0.ffn_up.weight".into(),
            ggml_type: GgmlType::Q8_0,
            row: 16,
            block_size: 32
        }
    );
}

#[test]
fn unaligned_offsets() {
    let mut s = Spec::valid();
    s.tensors[3] = s.tensors[3].clone().at(260);
    assert_eq!(
        s.err(),
        GgufError::UnalignedTensor {
            tensor: 3,
            name: "blk.1.attn_norm.weight".into(),
            offset: 260,
            alignment: 32
        }
    );
}

#[test]
fn offsets_past_the_end() {
    let mut s = Spec::valid();
    s.tensors[0] = s.tensors[0].clone().at(1 << 20);
    let e = s.err();
    assert!(
        matches!(
            e,
            GgufError::TensorPastEnd {
                tensor: 0,
                size: 128,
                ..
            }
        ),
        "{e:?}"
    );
    // Offset + data offset overflows u64.
    let mut s = Spec::valid();
    s.tensors[0] = s.tensors[0].clone().at(u64::MAX - 31);
    assert!(matches!(
        s.err(),
        GgufError::TensorPastEnd {
            tensor: 0,
            offset: u64::MAX,
            ..
        }
    ));
}

#[test]
fn overlapping_tensors() {
    let mut s = Spec::valid();
    s.tensors[4] = s.tensors[4].clone().at(64);
    assert!(matches!(
        s.err(),
        GgufError::TensorsOverlap {
            first: 0,
            second: 4,
            ..
        }
    ));
}

#[test]
fn layer_holes_and_huge_layer_indices() {
    let mut s = Spec::valid();
    s.tensors[3].name = b"blk.2.attn_norm.weight".to_vec();
    s.tensors[4].name = b"blk.2.ffn_up.weight".to_vec();
    assert_eq!(
        s.err(),
        GgufError::MissingLayer {
            missing: 1,
            highest: 2
        }
    );
    let mut s = Spec::valid();
    s.tensors[3].name = b"blk.70000.attn_norm.weight".to_vec();
    assert!(matches!(
        s.err(),
        GgufError::LayerIndexTooLarge { tensor: 3, .. }
    ));
}

#[test]
fn open_reports_missing_and_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let e = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(e, llmstream::Error::Open { ref path, .. } if *path == missing));

    let damaged = dir.path().join("damaged.gguf");
    let bytes = Spec::valid().bytes();
    std::fs::write(&damaged, &bytes[..bytes.len() - 1]).unwrap();
    let e = GgufFile::open(&damaged).unwrap_err();
    assert!(matches!(
        e,
        llmstream::Error::Gguf { ref path, source: GgufError::TensorPastEnd { .. } } if *path == damaged
    ));
    assert!(e.to_string().contains("damaged.gguf"));

    let whole = dir.path().join("whole.gguf");
    std::fs::write(&whole, &bytes).unwrap();
    assert_eq!(
        GgufFile::open(&whole).unwrap(),
        GgufFile::parse_bytes(&bytes).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// Random damage.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_files_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = Spec::valid().bytes();
        for (at, b) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *b;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(f) = GgufFile::parse_bytes(&bytes) {
            check_invariants(&f, &bytes);
        }
    }

    #[test]
    fn mutated_headers_never_panic(
        edits in prop::collection::vec((0usize..1000, any::<u8>()), 1..6),
    ) {
        // Edits confined to the header hit counts, lengths and type ids far more often.
        let built = Spec::valid().build();
        let mut bytes = built.bytes;
        for (at, b) in &edits {
            let i = at % built.header_end;
            bytes[i] = *b;
        }
        if let Ok(f) = GgufFile::parse_bytes(&bytes) {
            check_invariants(&f, &bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The real model.
// ---------------------------------------------------------------------------------------------

fn shared_model(name: &str) -> PathBuf {
    let base = std::env::var_os("LLMSTREAM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    base.join("models").join(name)
}

fn fixture() -> serde_json::Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_tensors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn smollm2_matches_the_gguf_python_reader() {
    let path = shared_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        println!("skipped: {} is absent", path.display());
        return;
    }
    let fx = fixture();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(u64::from(f.version), fx["version"].as_u64().unwrap());
    assert_eq!(f.file_len, fx["file_size"].as_u64().unwrap());
    assert_eq!(f.alignment, fx["alignment"].as_u64().unwrap());
    assert_eq!(f.data_offset, fx["data_offset"].as_u64().unwrap());
    assert_eq!(f.tensors.len(), 272);

    let count = |t: GgmlType| f.tensors.iter().filter(|x| x.ggml_type == t).count();
    assert_eq!(count(GgmlType::Q4_1), 210);
    assert_eq!(count(GgmlType::F32), 61);
    assert_eq!(count(GgmlType::Q8_0), 1);

    let expected = fx["tensors"].as_array().unwrap();
    assert_eq!(expected.len(), f.tensors.len());
    for (t, e) in f.tensors.iter().zip(expected) {
        assert_eq!(t.name, e["name"].as_str().unwrap());
        assert_eq!(
            t.ggml_type.name(),
            e["type"].as_str().unwrap(),
            "{}",
            t.name
        );
        let shape: Vec<u64> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.dims, shape, "{}", t.name);
        assert_eq!(t.offset, e["offset"].as_u64().unwrap(), "{}", t.name);
        assert_eq!(t.size, e["n_bytes"].as_u64().unwrap(), "{}", t.name);
    }

    let md = &fx["metadata"];
    assert_eq!(f.metadata.len() as u64, md["kv_count"].as_u64().unwrap());
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.get_arch_u32("block_count"), Some(30));
    assert_eq!(f.get_u32("llama.embedding_length"), Some(576));
    assert_eq!(
        f.get_arch_f32("rope.freq_base"),
        Some(md["llama.rope.freq_base"].as_f64().unwrap() as f32)
    );
    assert_eq!(f.get_f32("llama.rope.freq_base"), Some(100000.0));
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(
        tokens[0],
        md["tokenizer.ggml.tokens.first"].as_str().unwrap()
    );
    assert_eq!(f.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(f.get_bool("tokenizer.ggml.add_bos_token"), Some(false));

    let layers = fx["layers"].as_array().unwrap();
    assert_eq!(f.layers.len(), 30);
    assert_eq!(layers.len(), 30);
    for (l, e) in f.layers.iter().zip(layers) {
        assert_eq!(u64::from(l.index), e["index"].as_u64().unwrap());
        assert_eq!(l.tensors.len() as u64, e["n_tensors"].as_u64().unwrap());
        assert_eq!(
            l.span.start,
            e["start"].as_u64().unwrap(),
            "layer {}",
            l.index
        );
        assert_eq!(l.span.end, e["end"].as_u64().unwrap(), "layer {}", l.index);
        assert_eq!(l.contiguous, e["contiguous"].as_bool().unwrap());
        for &t in &l.tensors {
            assert!(f.tensors[t].name.starts_with(&format!("blk.{}.", l.index)));
        }
    }
    let globals: Vec<_> = f
        .globals
        .iter()
        .map(|&i| f.tensors[i].name.as_str())
        .collect();
    assert_eq!(globals, ["token_embd.weight", "output_norm.weight"]);
    check_invariants_without_bytes(&f);
}

/// [`check_invariants`] for a file not held in memory.
fn check_invariants_without_bytes(f: &GgufFile) {
    let mut spans: Vec<_> = f
        .tensors
        .iter()
        .map(|t| (t.offset, t.offset + t.size))
        .collect();
    spans.sort_unstable();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
    assert!(spans.iter().all(|s| s.1 <= f.file_len));
}

#[test]
fn smollm2_damaged_copies() {
    let path = shared_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        println!("skipped: {} is absent", path.display());
        return;
    }
    // The header is the first 1.78 MB: cut it at a spread of places, then cut the data.
    let mut head = vec![0u8; 1_785_664];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    for n in (0..head.len()).step_by(9973) {
        let e = GgufFile::parse_bytes(&head[..n]).unwrap_err();
        assert!(
            matches!(
                e,
                GgufError::Truncated { .. }
                    | GgufError::StringTooLong { .. }
                    | GgufError::CountTooLarge { .. }
            ),
            "cut {n}: {e:?}"
        );
    }
    let e = GgufFile::parse_bytes(&head).unwrap_err();
    assert!(
        matches!(e, GgufError::TensorPastEnd { tensor: 0, .. }),
        "{e:?}"
    );
}
