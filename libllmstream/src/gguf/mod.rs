//! GGUF model map: header parsing (v2 and v3), validation against the file size, and the
//! grouping of tensors into layers that are read in one bulk request each.
//!
//! OWNED BY THE GGUF WORK ITEM: the public items below are the contract the rest of the
//! library uses; their bodies are filled in there.

mod types;

pub use types::GgmlType;

use std::ops::Range;

/// What is wrong with a GGUF file. Every variant names the place in the header.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// Placeholder until the parser lands.
    #[error("GGUF parsing is not implemented yet")]
    Unimplemented,
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// One tensor of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Its name (`blk.3.attn_q.weight`).
    pub name: String,
    /// Dimensions, innermost first (ggml order).
    pub dims: Vec<u64>,
    /// Its type.
    pub ggml_type: GgmlType,
    /// Offset of its data from the start of the file.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

/// The tensors of one layer (`blk.N.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// N.
    pub index: u32,
    /// Indices into [`GgufFile::tensors`], in file order.
    pub tensors: Vec<usize>,
    /// File byte range from the first tensor's start to the last tensor's end.
    pub span: Range<u64>,
    /// True when the span holds nothing but this layer's tensors (and alignment padding), so one
    /// bulk read moves the layer and tensor views are offsets into it.
    pub contiguous: bool,
}

/// A parsed GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    /// 2 or 3.
    pub version: u32,
    /// `general.alignment`, or 32.
    pub alignment: u64,
    /// Start of the data section.
    pub data_offset: u64,
    /// Length of the file the header was checked against.
    pub file_len: u64,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor table in file order.
    pub tensors: Vec<TensorInfo>,
    /// Layers by index (`layers[i].index == i`).
    pub layers: Vec<Layer>,
    /// Indices of tensors outside any layer (`token_embd`, `output_norm`, `output` ...).
    pub globals: Vec<usize>,
}

impl GgufFile {
    /// Parse the header of a file of `file_len` bytes from `reader`, positioned at its start.
    /// Memory use is bounded by the file size whatever the header claims.
    pub fn parse<R: std::io::Read>(_reader: R, _file_len: u64) -> Result<Self, GgufError> {
        Err(GgufError::Unimplemented)
    }

    /// Parse a whole file held in memory (tests, fuzzing).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, GgufError> {
        Self::parse(bytes, bytes.len() as u64)
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}
