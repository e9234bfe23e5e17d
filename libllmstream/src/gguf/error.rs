//! What can be wrong with a GGUF header. Every variant names the place: a byte offset, a
//! metadata key or a tensor (its index in the table and, once read, its name).

use super::GgmlType;

/// What is wrong with a GGUF file. Every variant names the place in the header.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file (as declared by its length) ends inside the header.
    #[error(
        "unexpected end of file while reading {what} at offset {offset}: {needed} bytes \
         needed, {available} left"
    )]
    Truncated {
        /// The item being read (`tensor count`, `value of key "general.name"` ...).
        what: String,
        /// Where the item starts.
        offset: u64,
        /// Bytes the item needs.
        needed: u64,
        /// Bytes left in the file at `offset`.
        available: u64,
    },
    /// The reader ended (or failed) before the length the caller declared.
    #[error("reading {what} at offset {offset} failed: {message}")]
    Io {
        /// The item being read.
        what: String,
        /// Where the read started.
        offset: u64,
        /// The reader's error.
        message: String,
    },
    /// The first four bytes are not `GGUF`.
    #[error("bad magic {found:02x?}: not a GGUF file")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The version field reads as a supported version once byte-swapped.
    #[error("big-endian GGUF (version {version}) is not supported")]
    BigEndian {
        /// The byte-swapped version.
        version: u32,
    },
    /// A version other than 2 or 3 (version 1 used 32-bit counts and is not read).
    #[error("unsupported GGUF version {version} (2 and 3 are supported)")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// A count that cannot fit in the bytes left: each item needs at least some bytes.
    #[error(
        "{what} {count} at offset {offset} cannot fit in the file: at most {max} fit in the \
         bytes left"
    )]
    CountTooLarge {
        /// `tensor count`, `metadata key count` or `length of array "KEY"`.
        what: String,
        /// The count found.
        count: u64,
        /// Where the count is.
        offset: u64,
        /// The most that could fit.
        max: u64,
    },
    /// A string length past the end of the file or beyond the per-string cap.
    #[error("{what} at offset {offset} has length {len}, more than the {max} bytes allowed there")]
    StringTooLong {
        /// The string being read.
        what: String,
        /// Where its length is.
        offset: u64,
        /// The length found.
        len: u64,
        /// The most allowed at that place (bytes left or the cap).
        max: u64,
    },
    /// A key, tensor name or string value is not valid UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The string being read.
        what: String,
        /// Where its bytes start.
        offset: u64,
    },
    /// A metadata value type id outside 0..=12.
    #[error("key {key:?}: unknown value type {type_id} at offset {offset}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type id.
        type_id: u32,
        /// Where the type id is.
        offset: u64,
    },
    /// Arrays nested deeper than [`super::MAX_ARRAY_DEPTH`].
    #[error("key {key:?}: arrays nested deeper than {max} levels at offset {offset}")]
    NestingTooDeep {
        /// The key.
        key: String,
        /// Where the too-deep array starts.
        offset: u64,
        /// The cap.
        max: usize,
    },
    /// The decoded metadata would take more memory than [`super::MAX_METADATA_BYTES`].
    #[error("key {key:?}: metadata needs more than {max} bytes of memory")]
    MetadataTooLarge {
        /// The key being read when the cap was passed.
        key: String,
        /// The cap.
        max: u64,
    },
    /// The same key appears twice.
    #[error("key {key:?} appears twice (entries {first} and {second})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Index of its first entry.
        first: usize,
        /// Index of the repeated entry.
        second: usize,
    },
    /// `general.alignment` is not a `u32`.
    #[error("general.alignment must be a uint32, found {found}")]
    AlignmentType {
        /// The type found.
        found: &'static str,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("general.alignment {alignment} is not a non-zero power of two")]
    BadAlignment {
        /// The value found.
        alignment: u64,
    },
    /// A tensor with no dimensions or more than [`super::MAX_DIMS`].
    #[error("tensor {tensor} {name:?}: {n_dims} dimensions (1 to {max} allowed)")]
    BadDimCount {
        /// Index in the tensor table.
        tensor: usize,
        /// Its name.
        name: String,
        /// The count found.
        n_dims: u32,
        /// The cap.
        max: u32,
    },
    /// A dimension is zero.
    #[error("tensor {tensor} {name:?}: dimension {dim} is zero (dims {dims:?})")]
    ZeroDim {
        /// Index in the tensor table.
        tensor: usize,
        /// Its name.
        name: String,
        /// Which dimension.
        dim: usize,
        /// All dimensions.
        dims: Vec<u64>,
    },
    /// A dimension beyond `i64::MAX`, or an element count or byte size beyond `u64`.
    #[error("tensor {tensor} {name:?}: dims {dims:?} overflow the element count or byte size")]
    DimsOverflow {
        /// Index in the tensor table.
        tensor: usize,
        /// Its name.
        name: String,
        /// Its dimensions.
        dims: Vec<u64>,
    },
    /// A type id ggml does not know (or has retired).
    #[error("tensor {tensor} {name:?}: unknown type id {type_id}")]
    UnknownTensorType {
        /// Index in the tensor table.
        tensor: usize,
        /// Its name.
        name: String,
        /// The type id.
        type_id: u32,
    },
    /// The rows (`dims[0]`) are not a whole number of blocks of the type.
    #[error(
        "tensor {tensor} {name:?}: row length {row} is not a multiple of the {ggml_type} \
         block size {block_size}"
    )]
    NotWholeBlocks {
        /// Index in the tensor table.
        tensor: usize,
        /// Its name.
        name: String,
        /// Its type.
        ggml_type: GgmlType,
        /// `dims[0]`.
        row: u64,
        /// Elements per block of the type.
        block_size: u64,
    },
    /// Two tensors share a name.
    #[error("tensor name {name:?} appears twice (tensors {first} and {second})")]
    DuplicateTensor {
        /// The name.
        name: String,
        /// Index of the first one.
        first: usize,
        /// Index of the repeated one.
        second: usize,
    },
    /// A tensor offset (relative to the data section) is not a multiple of the alignment.
    #[error(
        "tensor {tensor} {name:?}: offset {offset} is not a multiple of the alignment {alignment}"
    )]
    UnalignedTensor {
        /// Index in the tensor table.
        tensor: usize,
        /// Its name.
        name: String,
        /// Offset relative to the data section.
        offset: u64,
        /// `general.alignment`.
        alignment: u64,
    },
    /// A tensor's data does not lie inside the file.
    #[error(
        "tensor {tensor} {name:?}: data at offset {offset} (+{size} bytes) extends past the \
         end of the file ({file_len} bytes)"
    )]
    TensorPastEnd {
        /// Index in the tensor table.
        tensor: usize,
        /// Its name.
        name: String,
        /// Absolute offset (saturated at `u64::MAX` when the sum overflows).
        offset: u64,
        /// Bytes of data.
        size: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// The data of two tensors overlap.
    #[error("tensors {first} {first_name:?} and {second} {second_name:?} overlap")]
    TensorsOverlap {
        /// Index of the tensor that starts first.
        first: usize,
        /// Its name.
        first_name: String,
        /// Index of the tensor that starts inside it.
        second: usize,
        /// Its name.
        second_name: String,
    },
    /// A layer tensor (`blk.N.*`) with `N` at or beyond [`super::MAX_LAYERS`].
    #[error("tensor {tensor} {name:?}: layer index beyond the cap of {max} layers")]
    LayerIndexTooLarge {
        /// Index in the tensor table.
        tensor: usize,
        /// Its name.
        name: String,
        /// The cap.
        max: u32,
    },
    /// Layers are not numbered 0..L-1 without holes.
    #[error("layer {missing} has no tensors but layer {highest} does")]
    MissingLayer {
        /// The first missing layer.
        missing: u32,
        /// The highest layer present.
        highest: u32,
    },
    /// A required metadata key is absent.
    #[error("metadata key {key:?} is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value has a type the caller cannot use.
    #[error("metadata key {key:?} is {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What the caller wanted.
        expected: &'static str,
        /// What the file holds (or `out-of-range integer`).
        found: &'static str,
    },
}
