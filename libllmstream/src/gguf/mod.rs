//! GGUF model map: header parsing (v2 and v3), validation against the file size, and the
//! grouping of tensors into layers that are read in one bulk request each.
//!
//! The parser trusts nothing in the header: every count and length is checked against the
//! bytes left before anything is allocated, the decoded metadata is capped at
//! [`MAX_METADATA_BYTES`], and each kind of damage has its own [`GgufError`] variant naming
//! the place. Tensor offsets in [`TensorInfo`] are absolute file offsets.
//!
//! # Layers
//! A tensor named `blk.N.REST` (canonical decimal `N`, no sign or leading zero, below
//! [`MAX_LAYERS`]; non-empty `REST`) belongs to layer `N`; every other tensor (including
//! `blk.01.x` or `blk.3`) is a global. Layers must be numbered `0..L` without holes
//! ([`GgufError::MissingLayer`]); an index at or above the cap is
//! [`GgufError::LayerIndexTooLarge`]. [`Layer::tensor_offset`] and [`Layer::tensor_views`]
//! give each tensor's place inside a buffer holding the layer's span.

mod error;
mod layers;
mod metadata;
mod parse;
mod reader;
mod types;
pub mod write;

pub use error::GgufError;
pub use types::GgmlType;
pub use write::{GgufWriter, TensorDataWriter, WriteError};

use std::io::BufReader;
use std::ops::Range;
use std::path::Path;

/// `general.alignment` when the file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays in a metadata value (an array of arrays is 2).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Cap on the memory the decoded metadata may take (values, keys and string bytes).
pub const MAX_METADATA_BYTES: u64 = 512 << 20;
/// Longest metadata string value.
pub const MAX_STRING_LEN: u64 = 64 << 20;
/// Longest key or tensor name.
pub const MAX_NAME_LEN: u64 = 64 << 10;
/// Layer indices must be below this.
pub const MAX_LAYERS: u32 = 65536;
/// Read-buffer size used by [`GgufFile::open`] for the header.
const HEADER_BUF: usize = 1 << 20;

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
    pub fn parse<R: std::io::Read>(reader: R, file_len: u64) -> Result<Self, GgufError> {
        parse::parse(reader, file_len)
    }

    /// Parse a whole file held in memory (tests, fuzzing).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, GgufError> {
        Self::parse(bytes, u64::try_from(bytes.len()).unwrap_or(u64::MAX))
    }

    /// Open `path` and parse its header through a buffered reader (only the header is read).
    pub fn open(path: &Path) -> crate::Result<Self> {
        let file = std::fs::File::open(path).map_err(|source| crate::Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let file_len = file
            .metadata()
            .map_err(|source| crate::Error::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        Self::parse(BufReader::with_capacity(HEADER_BUF, file), file_len).map_err(|source| {
            crate::Error::Gguf {
                path: path.to_owned(),
                source,
            }
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The index of a tensor in [`Self::tensors`] by name.
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }
}
