//! GGUF v3 writer: a [`GgufWriter`] collects metadata and the tensor table, lays the data
//! section out (each tensor at a multiple of `general.alignment`, 32 by default), writes the
//! header, and returns a [`TensorDataWriter`] that takes each tensor's bytes in file order,
//! in as many chunks as the caller likes, and pads between tensors.
//!
//! Everything the parser ([`super::GgufFile::parse`]) would refuse is refused here first, with
//! the same limits: key and name lengths, string lengths, array nesting, dimension counts,
//! zero or overflowing dimensions, rows that are not whole blocks, duplicate keys or names, a
//! `general.alignment` that is not a power-of-two `uint32`. Arrays must hold values of a single
//! type, as the format stores one element type per array; an empty array is written with
//! element type `uint8`. Each tensor must receive exactly its byte count:
//! [`TensorDataWriter::finish`] fails on a tensor left short, and a chunk that would run past
//! its tensor's end is refused.
//!
//! ```
//! use llmstream::gguf::{GgmlType, GgufFile, GgufWriter, Value};
//! let mut w = GgufWriter::new();
//! w.add_kv("general.architecture", Value::String("llama".into()))?;
//! let t = w.add_tensor("output_norm.weight", &[8], GgmlType::F32)?;
//! let mut data = w.write_header(Vec::new())?;
//! data.write_chunk(t, &[0u8; 16])?;
//! data.write_chunk(t, &[0u8; 16])?;
//! let bytes = data.finish()?;
//! let parsed = GgufFile::parse_bytes(&bytes).unwrap();
//! assert_eq!(parsed.tensors[0].size, 32);
//! # Ok::<(), llmstream::gguf::WriteError>(())
//! ```

use super::parse::value_type;
use super::{
    GgmlType, TensorInfo, Value, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_NAME_LEN,
    MAX_STRING_LEN,
};
use std::collections::HashSet;
use std::io::Write;

/// The version written.
pub const WRITE_VERSION: u32 = 3;
const MAGIC: [u8; 4] = *b"GGUF";
/// Zeros written as padding, a slice at a time.
const ZEROS: [u8; 4096] = [0; 4096];

/// What the writer refused, or an I/O failure while writing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A metadata key was added twice.
    #[error("metadata key {key:?} added twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A tensor name was added twice.
    #[error("tensor {name:?} added twice")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// A key or tensor name longer than [`MAX_NAME_LEN`] bytes.
    #[error("{what} of {len} bytes is longer than the {max} bytes allowed (starts {start:?})")]
    NameTooLong {
        /// `key` or `tensor name`.
        what: &'static str,
        /// Its first characters.
        start: String,
        /// Its length in bytes.
        len: usize,
        /// The cap.
        max: u64,
    },
    /// A string value longer than [`MAX_STRING_LEN`] bytes.
    #[error("key {key:?}: string value of {len} bytes is longer than the {max} bytes allowed")]
    StringTooLong {
        /// The key.
        key: String,
        /// Its length in bytes.
        len: usize,
        /// The cap.
        max: u64,
    },
    /// An array whose elements are not all of one type.
    #[error("key {key:?}: array element {index} is {found} but element 0 is {first}")]
    MixedArray {
        /// The key.
        key: String,
        /// The type of element 0.
        first: &'static str,
        /// Index of the first element of another type.
        index: usize,
        /// Its type.
        found: &'static str,
    },
    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`].
    #[error("key {key:?}: arrays nested deeper than {max} levels")]
    NestingTooDeep {
        /// The key.
        key: String,
        /// The cap.
        max: usize,
    },
    /// `general.alignment` is not a non-zero power-of-two `uint32`.
    #[error("general.alignment must be a non-zero power-of-two uint32, got {found:?}")]
    BadAlignment {
        /// The value given.
        found: Value,
    },
    /// A tensor's dimensions are not ones the format allows.
    #[error("tensor {name:?}: dims {dims:?}: {problem}")]
    BadDims {
        /// The tensor.
        name: String,
        /// Its dimensions.
        dims: Vec<u64>,
        /// What is wrong.
        problem: String,
    },
    /// Tensor data was given for a tensor other than the next one in file order.
    #[error("data for tensor {got} given while tensor {expected} ({name:?}) is next")]
    OutOfOrder {
        /// The tensor the caller named.
        got: usize,
        /// The tensor whose data comes next (the tensor count when all are written).
        expected: usize,
        /// Its name (empty when all are written).
        name: String,
    },
    /// A chunk would run past the end of its tensor.
    #[error(
        "tensor {name:?} takes {size} bytes; {written} are written and a chunk of {chunk} \
         more was given"
    )]
    TooManyBytes {
        /// The tensor.
        name: String,
        /// Its byte count.
        size: u64,
        /// Bytes already written.
        written: u64,
        /// The chunk's length.
        chunk: u64,
    },
    /// The data section was closed with a tensor not fully written.
    #[error("tensor {name:?} takes {size} bytes but only {written} were written")]
    Incomplete {
        /// The first incomplete tensor.
        name: String,
        /// Its byte count.
        size: u64,
        /// Bytes written.
        written: u64,
    },
    /// A size or offset does not fit in 64 bits.
    #[error("{what} overflows 64 bits")]
    Overflow {
        /// Which quantity.
        what: &'static str,
    },
    /// The underlying writer failed.
    #[error("writing {what} at file offset {offset} failed: {source}")]
    Io {
        /// What was being written.
        what: &'static str,
        /// The file offset of the write.
        offset: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Collects the metadata and the tensor table of a GGUF file.
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<Planned>,
    names: HashSet<String>,
}

/// A tensor of the table before placement.
#[derive(Debug, Clone)]
struct Planned {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    size: u64,
}

fn check_name(what: &'static str, name: &str) -> Result<(), WriteError> {
    if u64::try_from(name.len()).map_or(true, |n| n > MAX_NAME_LEN) {
        return Err(WriteError::NameTooLong {
            what,
            start: name.chars().take(40).collect(),
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    Ok(())
}

/// Checks that `value` can be written as the parser reads it back, `depth` arrays deep.
fn check_value(key: &str, value: &Value, depth: usize) -> Result<(), WriteError> {
    match value {
        Value::String(s) if u64::try_from(s.len()).map_or(true, |n| n > MAX_STRING_LEN) => {
            Err(WriteError::StringTooLong {
                key: key.to_owned(),
                len: s.len(),
                max: MAX_STRING_LEN,
            })
        }
        Value::Array(items) => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(WriteError::NestingTooDeep {
                    key: key.to_owned(),
                    max: MAX_ARRAY_DEPTH,
                });
            }
            if let Some(first) = items.first() {
                let first_type = type_id(first);
                if let Some((index, other)) = items
                    .iter()
                    .enumerate()
                    .find(|(_, v)| type_id(v) != first_type)
                {
                    return Err(WriteError::MixedArray {
                        key: key.to_owned(),
                        first: first.type_name(),
                        index,
                        found: other.type_name(),
                    });
                }
            }
            items
                .iter()
                .try_for_each(|v| check_value(key, v, depth + 1))
        }
        _ => Ok(()),
    }
}

/// The value type id of the GGUF specification.
fn type_id(value: &Value) -> u32 {
    use value_type as t;
    match value {
        Value::U8(_) => t::U8,
        Value::I8(_) => t::I8,
        Value::U16(_) => t::U16,
        Value::I16(_) => t::I16,
        Value::U32(_) => t::U32,
        Value::I32(_) => t::I32,
        Value::F32(_) => t::F32,
        Value::Bool(_) => t::BOOL,
        Value::String(_) => t::STRING,
        Value::Array(_) => t::ARRAY,
        Value::U64(_) => t::U64,
        Value::I64(_) => t::I64,
        Value::F64(_) => t::F64,
    }
}

/// Bytes of a tensor after the parser's checks on its dims.
fn tensor_size(name: &str, dims: &[u64], ggml_type: GgmlType) -> Result<u64, WriteError> {
    let bad = |problem: String| WriteError::BadDims {
        name: name.to_owned(),
        dims: dims.to_vec(),
        problem,
    };
    if dims.is_empty() || u32::try_from(dims.len()).map_or(true, |n| n > MAX_DIMS) {
        return Err(bad(format!("1 to {MAX_DIMS} dimensions are allowed")));
    }
    if dims.contains(&0) {
        return Err(bad("a dimension is zero".into()));
    }
    let i64_max = i64::MAX.unsigned_abs();
    let elements = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d).filter(|&n| n <= i64_max))
        .ok_or_else(|| bad("the element count overflows".into()))?;
    let row = dims.first().copied().unwrap_or(1);
    let block = ggml_type.block_size();
    if row % block != 0 {
        return Err(bad(format!(
            "row length {row} is not a multiple of the {ggml_type} block size {block}"
        )));
    }
    ggml_type
        .bytes_for(elements)
        .ok_or_else(|| bad("the byte size overflows".into()))
}

/// Little-endian encoding into the header buffer.
struct Enc(Vec<u8>);

impl Enc {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        // A usize always fits a u64 on the platforms Rust supports.
        self.u64(u64::try_from(s.len()).unwrap_or(u64::MAX));
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A value without its type id.
    fn value(&mut self, v: &Value) {
        match v {
            Value::U8(x) => self.0.push(*x),
            Value::I8(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            Value::U16(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            Value::I16(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            Value::U32(x) => self.u32(*x),
            Value::I32(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            Value::F32(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            Value::Bool(x) => self.0.push(u8::from(*x)),
            Value::String(s) => self.str(s),
            Value::Array(items) => {
                self.u32(items.first().map_or(value_type::U8, type_id));
                self.u64(u64::try_from(items.len()).unwrap_or(u64::MAX));
                items.iter().for_each(|item| self.value(item));
            }
            Value::U64(x) => self.u64(*x),
            Value::I64(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            Value::F64(x) => self.0.extend_from_slice(&x.to_le_bytes()),
        }
    }
}

impl GgufWriter {
    /// An empty file: no metadata, no tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a metadata entry (entries are written in the order added).
    pub fn add_kv(
        &mut self,
        key: impl Into<String>,
        value: Value,
    ) -> Result<&mut Self, WriteError> {
        let key = key.into();
        check_name("key", &key)?;
        if self.keys.contains(&key) {
            return Err(WriteError::DuplicateKey { key });
        }
        if key == "general.alignment" {
            match value {
                Value::U32(a) if a.is_power_of_two() => {}
                found => return Err(WriteError::BadAlignment { found }),
            }
        }
        check_value(&key, &value, 0)?;
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(self)
    }

    /// Add a tensor (dims innermost first, as ggml orders them); returns its index, which
    /// [`TensorDataWriter::write_chunk`] takes. Data is laid out in the order tensors are added.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
    ) -> Result<usize, WriteError> {
        let name = name.into();
        check_name("tensor name", &name)?;
        if self.names.contains(&name) {
            return Err(WriteError::DuplicateTensor { name });
        }
        let size = tensor_size(&name, dims, ggml_type)?;
        self.names.insert(name.clone());
        self.tensors.push(Planned {
            name,
            dims: dims.to_vec(),
            ggml_type,
            size,
        });
        Ok(self.tensors.len() - 1)
    }

    /// The metadata added so far.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// `general.alignment` as added, or [`DEFAULT_ALIGNMENT`].
    pub fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The encoded header (without the padding that follows it).
    fn encode_header(&self) -> Result<Vec<u8>, WriteError> {
        let alignment = self.alignment();
        let mut e = Enc(Vec::new());
        e.0.extend_from_slice(&MAGIC);
        e.u32(WRITE_VERSION);
        e.u64(u64::try_from(self.tensors.len()).unwrap_or(u64::MAX));
        e.u64(u64::try_from(self.metadata.len()).unwrap_or(u64::MAX));
        for (key, value) in &self.metadata {
            e.str(key);
            e.u32(type_id(value));
            e.value(value);
        }
        let mut rel = 0u64;
        for t in &self.tensors {
            e.str(&t.name);
            e.u32(u32::try_from(t.dims.len()).unwrap_or(u32::MAX));
            t.dims.iter().for_each(|&d| e.u64(d));
            e.u32(t.ggml_type.id());
            e.u64(rel);
            rel = rel
                .checked_add(t.size)
                .and_then(|end| end.checked_next_multiple_of(alignment))
                .ok_or(WriteError::Overflow {
                    what: "the data section",
                })?;
        }
        Ok(e.0)
    }

    /// The tensor table with absolute offsets, and the file's total length, as
    /// [`Self::write_header`] will lay them out.
    pub fn layout(&self) -> Result<(Vec<TensorInfo>, u64), WriteError> {
        let header_len = u64::try_from(self.encode_header()?.len()).unwrap_or(u64::MAX);
        self.place(header_len)
    }

    fn place(&self, header_len: u64) -> Result<(Vec<TensorInfo>, u64), WriteError> {
        let alignment = self.alignment();
        let overflow = || WriteError::Overflow {
            what: "the file length",
        };
        let mut pos = header_len
            .checked_next_multiple_of(alignment)
            .ok_or_else(overflow)?;
        let mut infos = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            infos.push(TensorInfo {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ggml_type: t.ggml_type,
                offset: pos,
                size: t.size,
            });
            pos = pos
                .checked_add(t.size)
                .and_then(|end| end.checked_next_multiple_of(alignment))
                .ok_or_else(overflow)?;
        }
        Ok((infos, pos))
    }

    /// Write the header and the padding after it to `out`; the tensors' data follows through
    /// the returned writer. `out` should be positioned at the start of the file.
    pub fn write_header<W: Write>(self, mut out: W) -> Result<TensorDataWriter<W>, WriteError> {
        let header = self.encode_header()?;
        let header_len = u64::try_from(header.len()).unwrap_or(u64::MAX);
        let (tensors, file_len) = self.place(header_len)?;
        let alignment = self.alignment();
        out.write_all(&header).map_err(|source| WriteError::Io {
            what: "the header",
            offset: 0,
            source,
        })?;
        let mut w = TensorDataWriter {
            out,
            tensors,
            alignment,
            file_len,
            pos: header_len,
            current: 0,
            written: 0,
        };
        w.pad()?;
        Ok(w)
    }
}

/// Takes the tensors' data in file order after the header is written.
#[derive(Debug)]
pub struct TensorDataWriter<W: Write> {
    out: W,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    file_len: u64,
    /// File offset of the next byte.
    pos: u64,
    /// The tensor whose data comes next.
    current: usize,
    /// Bytes of it written.
    written: u64,
}

impl<W: Write> TensorDataWriter<W> {
    /// The tensor table, with absolute offsets.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The length the file will have once every tensor is written.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// File offset of the next byte to be written.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The index of the tensor whose data comes next, `None` when all are written.
    pub fn next_tensor(&self) -> Option<usize> {
        (self.current < self.tensors.len()).then_some(self.current)
    }

    /// Zeros up to the next multiple of the alignment.
    fn pad(&mut self) -> Result<(), WriteError> {
        let end = self
            .pos
            .checked_next_multiple_of(self.alignment)
            .ok_or(WriteError::Overflow { what: "padding" })?;
        while self.pos < end {
            let n = usize::try_from(end - self.pos)
                .unwrap_or(usize::MAX)
                .min(ZEROS.len());
            self.out
                .write_all(&ZEROS[..n])
                .map_err(|source| WriteError::Io {
                    what: "padding",
                    offset: self.pos,
                    source,
                })?;
            self.pos += u64::try_from(n).unwrap_or(u64::MAX);
        }
        Ok(())
    }

    /// Append `bytes` to tensor `tensor`'s data. Tensors are written whole and in order: the
    /// chunk must belong to the next tensor and fit in what is left of it; when a tensor is
    /// complete, the padding after it is written and the next tensor begins.
    pub fn write_chunk(&mut self, tensor: usize, bytes: &[u8]) -> Result<(), WriteError> {
        let Some(t) = self.tensors.get(self.current) else {
            return Err(WriteError::OutOfOrder {
                got: tensor,
                expected: self.current,
                name: String::new(),
            });
        };
        if tensor != self.current {
            return Err(WriteError::OutOfOrder {
                got: tensor,
                expected: self.current,
                name: t.name.clone(),
            });
        }
        let chunk = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if chunk > t.size - self.written {
            return Err(WriteError::TooManyBytes {
                name: t.name.clone(),
                size: t.size,
                written: self.written,
                chunk,
            });
        }
        let size = t.size;
        self.out.write_all(bytes).map_err(|source| WriteError::Io {
            what: "tensor data",
            offset: self.pos,
            source,
        })?;
        self.pos += chunk;
        self.written += chunk;
        if self.written == size {
            self.pad()?;
            self.current += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Write tensor `tensor`'s data in one piece: like [`Self::write_chunk`], but `bytes` must
    /// be the whole tensor.
    pub fn write_tensor(&mut self, tensor: usize, bytes: &[u8]) -> Result<(), WriteError> {
        if let Some(t) = self.tensors.get(tensor) {
            let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
            if tensor == self.current && (self.written != 0 || len != t.size) {
                return Err(if len > t.size - self.written {
                    WriteError::TooManyBytes {
                        name: t.name.clone(),
                        size: t.size,
                        written: self.written,
                        chunk: len,
                    }
                } else {
                    WriteError::Incomplete {
                        name: t.name.clone(),
                        size: t.size,
                        written: self.written + len,
                    }
                });
            }
        }
        self.write_chunk(tensor, bytes)
    }

    /// Check that every tensor is complete, flush, and hand the writer back.
    pub fn finish(mut self) -> Result<W, WriteError> {
        if let Some(t) = self.tensors.get(self.current) {
            return Err(WriteError::Incomplete {
                name: t.name.clone(),
                size: t.size,
                written: self.written,
            });
        }
        self.out.flush().map_err(|source| WriteError::Io {
            what: "the end of the file",
            offset: self.pos,
            source,
        })?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::GgufFile;
    use super::*;
    use proptest::prelude::*;

    /// Every value type, arrays of strings, ints and floats, and an array of arrays.
    fn all_values() -> Vec<(String, Value)> {
        vec![
            ("a.u8".into(), Value::U8(200)),
            ("a.i8".into(), Value::I8(-100)),
            ("a.u16".into(), Value::U16(60000)),
            ("a.i16".into(), Value::I16(-30000)),
            ("a.u32".into(), Value::U32(4_000_000_000)),
            ("a.i32".into(), Value::I32(-2_000_000_000)),
            ("a.f32".into(), Value::F32(1.5e-5)),
            ("a.bool".into(), Value::Bool(true)),
            ("a.string".into(), Value::String("héllo".into())),
            ("a.u64".into(), Value::U64(u64::MAX)),
            ("a.i64".into(), Value::I64(i64::MIN)),
            ("a.f64".into(), Value::F64(-2.25)),
            (
                "a.strings".into(),
                Value::Array(vec![
                    Value::String("x".into()),
                    Value::String(String::new()),
                ]),
            ),
            (
                "a.ints".into(),
                Value::Array((0..5).map(Value::I32).collect()),
            ),
            (
                "a.floats".into(),
                Value::Array(vec![Value::F32(0.5), Value::F32(-1.0)]),
            ),
            (
                "a.nested".into(),
                Value::Array(vec![
                    Value::Array(vec![Value::U8(1)]),
                    Value::Array(vec![Value::String("y".into())]),
                ]),
            ),
            ("a.empty".into(), Value::Array(Vec::new())),
        ]
    }

    /// Deterministic bytes for tensor `i`.
    fn data(i: usize, len: u64) -> Vec<u8> {
        (0..len)
            .map(|j| u8::try_from((j * 7 + i as u64 * 13) % 251).unwrap())
            .collect()
    }

    fn write_file(
        metadata: &[(String, Value)],
        tensors: &[(&str, Vec<u64>, GgmlType)],
        chunk: usize,
    ) -> (Vec<u8>, Vec<TensorInfo>, u64) {
        let mut w = GgufWriter::new();
        for (k, v) in metadata {
            w.add_kv(k.clone(), v.clone()).unwrap();
        }
        for (name, dims, ty) in tensors {
            w.add_tensor(*name, dims, *ty).unwrap();
        }
        let (layout, len) = w.layout().unwrap();
        let mut d = w.write_header(Vec::new()).unwrap();
        assert_eq!(d.tensors(), layout.as_slice());
        for (i, t) in layout.iter().enumerate() {
            assert_eq!(d.position(), t.offset);
            assert_eq!(d.next_tensor(), Some(i));
            for c in data(i, t.size).chunks(chunk) {
                d.write_chunk(i, c).unwrap();
            }
        }
        assert_eq!(d.next_tensor(), None);
        let bytes = d.finish().unwrap();
        assert_eq!(bytes.len() as u64, len);
        (bytes, layout, len)
    }

    fn check_round_trip(bytes: &[u8], metadata: &[(String, Value)], layout: &[TensorInfo]) {
        let g = GgufFile::parse_bytes(bytes).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.metadata, metadata);
        assert_eq!(g.tensors, layout);
        for (i, t) in g.tensors.iter().enumerate() {
            let at = usize::try_from(t.offset).unwrap();
            let n = usize::try_from(t.size).unwrap();
            assert_eq!(bytes[at..at + n], data(i, t.size), "{}", t.name);
            assert_eq!(t.offset % g.alignment, 0);
        }
    }

    fn some_tensors() -> Vec<(&'static str, Vec<u64>, GgmlType)> {
        vec![
            ("token_embd.weight", vec![256, 3], GgmlType::Q4_K),
            ("blk.0.attn_norm.weight", vec![7], GgmlType::F32),
            ("blk.0.attn_q.weight", vec![64, 2, 1, 2], GgmlType::Q8_0),
            ("blk.0.attn_q.bias", vec![3], GgmlType::F16),
            ("output.weight", vec![256, 1], GgmlType::Q6_K),
        ]
    }

    #[test]
    fn round_trip_every_value_type_and_tensor_kind() {
        let md = all_values();
        let (bytes, layout, _) = write_file(&md, &some_tensors(), 100);
        check_round_trip(&bytes, &md, &layout);
        // The default alignment and the padding after the last tensor.
        assert!(layout.iter().all(|t| t.offset % 32 == 0));
        assert_eq!(bytes.len() % 32, 0);
    }

    #[test]
    fn round_trip_with_alignment() {
        let mut md = all_values();
        md.insert(0, ("general.alignment".into(), Value::U32(4096)));
        let (bytes, layout, _) = write_file(&md, &some_tensors(), 1 << 20);
        check_round_trip(&bytes, &md, &layout);
        let g = GgufFile::parse_bytes(&bytes).unwrap();
        assert_eq!(g.alignment, 4096);
        assert_eq!(g.data_offset % 4096, 0);
        assert!(layout.iter().all(|t| t.offset % 4096 == 0));
    }

    #[test]
    fn no_tensors_and_no_metadata() {
        let (bytes, layout, len) = write_file(&[], &[], 1);
        assert!(layout.is_empty());
        let g = GgufFile::parse_bytes(&bytes).unwrap();
        assert!(g.metadata.is_empty() && g.tensors.is_empty());
        assert_eq!(len, 32); // the 24-byte fixed header padded to 32
    }

    #[test]
    fn refuses_what_the_parser_would_refuse() {
        let mut w = GgufWriter::new();
        w.add_kv("k", Value::U8(1)).unwrap();
        assert!(matches!(
            w.add_kv("k", Value::U8(2)),
            Err(WriteError::DuplicateKey { .. })
        ));
        for bad in [Value::U32(0), Value::U32(48), Value::U64(32)] {
            assert!(matches!(
                w.add_kv("general.alignment", bad),
                Err(WriteError::BadAlignment { .. })
            ));
        }
        assert!(matches!(
            w.add_kv("m", Value::Array(vec![Value::U8(1), Value::I8(1)])),
            Err(WriteError::MixedArray { index: 1, .. })
        ));
        let mut deep = Value::U8(0);
        for _ in 0..=MAX_ARRAY_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        assert!(matches!(
            w.add_kv("deep", deep),
            Err(WriteError::NestingTooDeep { .. })
        ));
        let long = "x".repeat(usize::try_from(MAX_NAME_LEN).unwrap() + 1);
        assert!(matches!(
            w.add_kv(long.clone(), Value::U8(0)),
            Err(WriteError::NameTooLong { .. })
        ));
        assert!(matches!(
            w.add_tensor(long, &[1], GgmlType::F32),
            Err(WriteError::NameTooLong { .. })
        ));
        for dims in [
            vec![],
            vec![0],
            vec![1, 1, 1, 1, 1],
            vec![u64::MAX, 2],
            vec![1 << 40, 1 << 30],
        ] {
            assert!(
                matches!(
                    w.add_tensor("t", &dims, GgmlType::F32),
                    Err(WriteError::BadDims { .. })
                ),
                "{dims:?}"
            );
        }
        assert!(matches!(
            w.add_tensor("t", &[100, 2], GgmlType::Q4_K),
            Err(WriteError::BadDims { .. })
        ));
        w.add_tensor("t", &[32], GgmlType::Q4_0).unwrap();
        assert!(matches!(
            w.add_tensor("t", &[32], GgmlType::Q4_0),
            Err(WriteError::DuplicateTensor { .. })
        ));
        // The refused entries left nothing behind.
        let (layout, _) = w.layout().unwrap();
        assert_eq!(layout.len(), 1);
        assert_eq!(w.metadata().len(), 1);
    }

    #[test]
    fn each_tensor_gets_exactly_its_bytes() {
        let mut w = GgufWriter::new();
        let a = w.add_tensor("a", &[4], GgmlType::F32).unwrap();
        let b = w.add_tensor("b", &[2], GgmlType::F16).unwrap();
        let mut d = w.write_header(Vec::new()).unwrap();
        // Wrong tensor, too long a chunk, a whole-tensor write of the wrong length.
        assert!(matches!(
            d.write_chunk(b, &[0; 4]),
            Err(WriteError::OutOfOrder {
                got: 1,
                expected: 0,
                ..
            })
        ));
        assert!(matches!(
            d.write_chunk(a, &[0; 17]),
            Err(WriteError::TooManyBytes { size: 16, .. })
        ));
        assert!(matches!(
            d.write_tensor(a, &[0; 15]),
            Err(WriteError::Incomplete { .. })
        ));
        d.write_chunk(a, &[1; 10]).unwrap();
        assert!(matches!(
            d.write_chunk(a, &[1; 7]),
            Err(WriteError::TooManyBytes {
                written: 10,
                chunk: 7,
                ..
            })
        ));
        d.write_chunk(a, &[1; 6]).unwrap();
        assert_eq!(d.next_tensor(), Some(b));
        d.write_chunk(b, &[2; 3]).unwrap();
        match d.finish() {
            Err(WriteError::Incomplete {
                name,
                size: 4,
                written: 3,
            }) => assert_eq!(name, "b"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writing_after_the_last_tensor_is_refused() {
        let mut w = GgufWriter::new();
        let a = w.add_tensor("a", &[1], GgmlType::F32).unwrap();
        let mut d = w.write_header(Vec::new()).unwrap();
        d.write_tensor(a, &[0; 4]).unwrap();
        assert!(matches!(
            d.write_chunk(a, &[0]),
            Err(WriteError::OutOfOrder { expected: 1, .. })
        ));
        assert!(d.finish().is_ok());
    }

    #[test]
    fn io_errors_name_the_offset() {
        /// Accepts `cap` bytes, then fails as a full disk does.
        struct Full {
            cap: usize,
        }
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.cap == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
                }
                let n = buf.len().min(self.cap);
                self.cap -= n;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = GgufWriter::new();
        let a = w.add_tensor("a", &[64], GgmlType::F32).unwrap();
        // 57 header bytes padded to 64, then the chunk.
        let mut d = w.write_header(Full { cap: 100 }).unwrap();
        match d.write_chunk(a, &[0; 256]) {
            Err(WriteError::Io {
                offset: 64, source, ..
            }) => assert_eq!(source.kind(), std::io::ErrorKind::StorageFull),
            other => panic!("{other:?}"),
        }
    }

    /// A homogeneous array of finite values of one scalar type, or of strings.
    fn array_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            prop::collection::vec(any::<u8>().prop_map(Value::U8), 0..8),
            prop::collection::vec(any::<i32>().prop_map(Value::I32), 0..8),
            prop::collection::vec(any::<u64>().prop_map(Value::U64), 0..8),
            prop::collection::vec((-1e30f32..1e30).prop_map(Value::F32), 0..8),
            prop::collection::vec(".{0,12}".prop_map(Value::String), 0..8),
        ]
        .prop_map(Value::Array)
    }

    fn scalar_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u8>().prop_map(Value::U8),
            any::<i8>().prop_map(Value::I8),
            any::<u16>().prop_map(Value::U16),
            any::<i16>().prop_map(Value::I16),
            any::<u32>().prop_map(Value::U32),
            any::<i32>().prop_map(Value::I32),
            (-1e30f32..1e30).prop_map(Value::F32),
            any::<bool>().prop_map(Value::Bool),
            ".{0,20}".prop_map(Value::String),
            any::<u64>().prop_map(Value::U64),
            any::<i64>().prop_map(Value::I64),
            (-1e300f64..1e300).prop_map(Value::F64),
        ]
    }

    const TYPES: [GgmlType; 8] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip_any_header(
            values in prop::collection::vec(prop_oneof![scalar_value(), array_value()], 0..12),
            shapes in prop::collection::vec((0usize..TYPES.len(), 1u64..3, 1u64..4, 1u64..3), 0..6),
            align_pow in prop::option::of(0u32..13),
            chunk in 1usize..300,
        ) {
            let mut md: Vec<(String, Value)> =
                values.into_iter().enumerate().map(|(i, v)| (format!("k.{i}"), v)).collect();
            if let Some(p) = align_pow {
                md.push(("general.alignment".into(), Value::U32(1 << p)));
            }
            let names: Vec<String> = (0..shapes.len()).map(|i| format!("blk.{i}.w")).collect();
            let tensors: Vec<(&str, Vec<u64>, GgmlType)> = shapes
                .iter()
                .zip(&names)
                .map(|(&(ty, blocks, rows, planes), name)| {
                    let ty = TYPES[ty];
                    (name.as_str(), vec![blocks * ty.block_size(), rows, planes], ty)
                })
                .collect();
            let (bytes, layout, _) = write_file(&md, &tensors, chunk);
            check_round_trip(&bytes, &md, &layout);
        }
    }
}
