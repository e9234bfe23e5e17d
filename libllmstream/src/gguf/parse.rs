//! The GGUF header: fixed fields, metadata, tensor table, then validation of every tensor
//! against the alignment, the file length and the other tensors.
//!
//! Layout (all little-endian): magic `GGUF`, version u32, tensor count u64, metadata count u64,
//! metadata entries (key string, value type u32, value), tensor infos (name string, n_dims u32,
//! dims u64 × n_dims, type u32, offset u64 relative to the data section), padding to the
//! alignment, data section. A string is a u64 length and that many bytes.

use super::reader::{HeaderReader, Owner, What};
use super::{
    layers, GgmlType, GgufError, GgufFile, TensorInfo, Value, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH,
    MAX_DIMS, MAX_METADATA_BYTES, MAX_NAME_LEN, MAX_STRING_LEN,
};
use std::collections::HashMap;
use std::io::Read;

const MAGIC: [u8; 4] = *b"GGUF";

/// Smallest encoding of one metadata entry: an empty key (8), a type (4), a u8 value (1).
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest encoding of one tensor info: an empty name (8), n_dims (4), one dim (8), the type
/// (4) and the offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;
/// Most items reserved up front for a table: counts are checked against the declared file
/// length, which a caller may overstate, so larger tables grow as their items are read.
const MAX_RESERVE: usize = 1 << 16;

/// Value type ids of the GGUF specification.
pub(super) mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Bytes one value of type `type_id` takes at least in the file, or `None` for unknown types.
fn min_value_bytes(type_id: u32) -> Option<u64> {
    use value_type::*;
    Some(match type_id {
        U8 | I8 | BOOL => 1,
        U16 | I16 => 2,
        U32 | I32 | F32 => 4,
        U64 | I64 | F64 => 8,
        STRING => 8,
        ARRAY => 4 + 8,
        _ => return None,
    })
}

/// Memory charged for the decoded metadata, capped at [`MAX_METADATA_BYTES`].
struct Budget {
    used: u64,
}

impl Budget {
    fn charge(&mut self, bytes: u64, key: &str) -> Result<(), GgufError> {
        match self.used.checked_add(bytes) {
            Some(used) if used <= MAX_METADATA_BYTES => {
                self.used = used;
                Ok(())
            }
            _ => Err(GgufError::MetadataTooLarge {
                key: key.to_owned(),
                max: MAX_METADATA_BYTES,
            }),
        }
    }
}

/// `size_of::<T>()` as u64 (a size always fits).
fn size_of_u64<T>() -> u64 {
    u64::try_from(std::mem::size_of::<T>()).unwrap_or(u64::MAX)
}

pub(super) fn parse<R: Read>(reader: R, file_len: u64) -> Result<GgufFile, GgufError> {
    let mut r = HeaderReader::new(reader, file_len);

    let magic: [u8; 4] = r.array(What::header("magic"))?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = r.u32(What::header("version"))?;
    check_version(version)?;

    let tensor_count = read_count(&mut r, "tensor count", MIN_TENSOR_INFO_BYTES)?;
    let kv_count = read_count(&mut r, "metadata key count", MIN_KV_BYTES)?;

    let metadata = read_metadata(&mut r, kv_count)?;
    let alignment = alignment_of(&metadata)?;
    let raw = read_tensor_infos(&mut r, tensor_count)?;

    // Saturates only for a header ending within `alignment` of u64::MAX; every tensor then
    // fails the bounds check below.
    let data_offset = r
        .pos()
        .checked_next_multiple_of(alignment)
        .unwrap_or(u64::MAX);
    let tensors = place_tensors(raw, data_offset, alignment, file_len)?;
    check_overlaps(&tensors)?;
    let (layers, globals) = layers::group(&tensors)?;

    Ok(GgufFile {
        version,
        alignment,
        data_offset,
        file_len,
        metadata,
        tensors,
        layers,
        globals,
    })
}

fn check_version(version: u32) -> Result<(), GgufError> {
    match version {
        2 | 3 => Ok(()),
        // A big-endian file stores a small version byte-swapped: its low half reads as zero.
        v if v & 0xffff == 0 && (1..=3).contains(&v.swap_bytes()) => Err(GgufError::BigEndian {
            version: v.swap_bytes(),
        }),
        v => Err(GgufError::UnsupportedVersion { version: v }),
    }
}

/// A count of items that each need at least `min_bytes`, checked against the bytes left.
fn read_count<R: Read>(
    r: &mut HeaderReader<R>,
    what: &'static str,
    min_bytes: u64,
) -> Result<usize, GgufError> {
    let offset = r.pos();
    let count = r.u64(What::header(what))?;
    let max = r.remaining() / min_bytes;
    if count > max {
        return Err(GgufError::CountTooLarge {
            what: what.to_owned(),
            count,
            offset,
            max,
        });
    }
    // Fits: `count <= file_len / min_bytes` and the bytes were addressable.
    usize::try_from(count).map_err(|_| GgufError::CountTooLarge {
        what: what.to_owned(),
        count,
        offset,
        max: u64::try_from(usize::MAX).unwrap_or(u64::MAX),
    })
}

fn read_metadata<R: Read>(
    r: &mut HeaderReader<R>,
    kv_count: usize,
) -> Result<Vec<(String, Value)>, GgufError> {
    let mut budget = Budget { used: 0 };
    let reserve = kv_count.min(MAX_RESERVE);
    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(reserve);
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(reserve);
    for i in 0..kv_count {
        let key = r.string(What::new("key", Owner::KeyIndex(i)), MAX_NAME_LEN)?;
        budget.charge(
            size_of_u64::<(String, Value)>().saturating_add(u64::try_from(key.len()).unwrap_or(0)),
            &key,
        )?;
        let type_offset = r.pos();
        let type_id = r.u32(What::new("value type", Owner::Key(&key)))?;
        let value = read_value(r, type_id, type_offset, &key, 0, &mut budget)?;
        if let Some(&first) = seen.get(&key) {
            return Err(GgufError::DuplicateKey {
                key,
                first,
                second: i,
            });
        }
        seen.insert(key.clone(), i);
        metadata.push((key, value));
    }
    Ok(metadata)
}

/// One value of type `type_id` (read at `type_offset`), `depth` arrays deep.
fn read_value<R: Read>(
    r: &mut HeaderReader<R>,
    type_id: u32,
    type_offset: u64,
    key: &str,
    depth: usize,
    budget: &mut Budget,
) -> Result<Value, GgufError> {
    use value_type::*;
    let what = What::new("value", Owner::Key(key));
    Ok(match type_id {
        U8 => Value::U8(r.u8(what)?),
        I8 => Value::I8(r.i8(what)?),
        U16 => Value::U16(r.u16(what)?),
        I16 => Value::I16(r.i16(what)?),
        U32 => Value::U32(r.u32(what)?),
        I32 => Value::I32(r.i32(what)?),
        F32 => Value::F32(r.f32(what)?),
        // ggml writes 0 or 1; any other byte reads as true, as in llama.cpp.
        BOOL => Value::Bool(r.u8(what)? != 0),
        U64 => Value::U64(r.u64(what)?),
        I64 => Value::I64(r.i64(what)?),
        F64 => Value::F64(r.f64(what)?),
        STRING => {
            let s = r.string(what, MAX_STRING_LEN)?;
            budget.charge(u64::try_from(s.len()).unwrap_or(u64::MAX), key)?;
            Value::String(s)
        }
        ARRAY => read_array(r, type_offset, key, depth, budget)?,
        other => {
            return Err(GgufError::UnknownValueType {
                key: key.to_owned(),
                type_id: other,
                offset: type_offset,
            })
        }
    })
}

/// An array (its element type and length follow the array type id read at `type_offset`).
fn read_array<R: Read>(
    r: &mut HeaderReader<R>,
    type_offset: u64,
    key: &str,
    depth: usize,
    budget: &mut Budget,
) -> Result<Value, GgufError> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            key: key.to_owned(),
            offset: type_offset,
            max: MAX_ARRAY_DEPTH,
        });
    }
    let elem_offset = r.pos();
    let elem_type = r.u32(What::new("array element type", Owner::Key(key)))?;
    let Some(min_bytes) = min_value_bytes(elem_type) else {
        return Err(GgufError::UnknownValueType {
            key: key.to_owned(),
            type_id: elem_type,
            offset: elem_offset,
        });
    };
    let len_offset = r.pos();
    let len = r.u64(What::new("array length", Owner::Key(key)))?;
    let max = r.remaining() / min_bytes;
    if len > max {
        return Err(GgufError::CountTooLarge {
            what: format!("length of array {key:?}"),
            count: len,
            offset: len_offset,
            max,
        });
    }
    budget.charge(len.saturating_mul(size_of_u64::<Value>()), key)?;
    // Fits: the budget keeps `len` far below usize::MAX.
    let n = usize::try_from(len).map_err(|_| GgufError::MetadataTooLarge {
        key: key.to_owned(),
        max: MAX_METADATA_BYTES,
    })?;
    // Reserving `n` is bounded by the budget just charged.
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        // Every element of an array of arrays carries its own element type and length.
        let offset = r.pos();
        items.push(read_value(r, elem_type, offset, key, depth + 1, budget)?);
    }
    Ok(Value::Array(items))
}

/// `general.alignment`: a non-zero power-of-two u32, 32 when absent.
fn alignment_of(metadata: &[(String, Value)]) -> Result<u64, GgufError> {
    let Some((_, value)) = metadata.iter().find(|(k, _)| k == "general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let Value::U32(a) = value else {
        return Err(GgufError::AlignmentType {
            found: value.type_name(),
        });
    };
    if !a.is_power_of_two() {
        return Err(GgufError::BadAlignment {
            alignment: u64::from(*a),
        });
    }
    Ok(u64::from(*a))
}

/// A tensor info as read, before placement in the data section.
struct RawTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    rel_offset: u64,
    size: u64,
}

fn read_tensor_infos<R: Read>(
    r: &mut HeaderReader<R>,
    tensor_count: usize,
) -> Result<Vec<RawTensor>, GgufError> {
    let reserve = tensor_count.min(MAX_RESERVE);
    let mut raw = Vec::with_capacity(reserve);
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(reserve);
    for i in 0..tensor_count {
        let name = r.string(What::new("name", Owner::TensorIndex(i)), MAX_NAME_LEN)?;
        let owner = Owner::Tensor(i, &name);
        let n_dims = r.u32(What::new("dimension count", owner))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadDimCount {
                tensor: i,
                name,
                n_dims,
                max: MAX_DIMS,
            });
        }
        let mut dims = Vec::with_capacity(4);
        for _ in 0..n_dims {
            dims.push(r.u64(What::new("dimensions", owner))?);
        }
        let type_id = r.u32(What::new("type", owner))?;
        let rel_offset = r.u64(What::new("offset", owner))?;

        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            tensor: i,
            name: name.clone(),
            type_id,
        })?;
        let size = tensor_size(i, &name, &dims, ggml_type)?;
        if let Some(&first) = seen.get(&name) {
            return Err(GgufError::DuplicateTensor {
                name,
                first,
                second: i,
            });
        }
        seen.insert(name.clone(), i);
        raw.push(RawTensor {
            name,
            dims,
            ggml_type,
            rel_offset,
            size,
        });
    }
    Ok(raw)
}

/// Bytes of a tensor's data, after checking its dims as ggml does: each non-zero and within
/// i64, the element count within i64, rows a whole number of blocks.
fn tensor_size(
    tensor: usize,
    name: &str,
    dims: &[u64],
    ggml_type: GgmlType,
) -> Result<u64, GgufError> {
    if let Some(dim) = dims.iter().position(|&d| d == 0) {
        return Err(GgufError::ZeroDim {
            tensor,
            name: name.to_owned(),
            dim,
            dims: dims.to_vec(),
        });
    }
    let overflow = || GgufError::DimsOverflow {
        tensor,
        name: name.to_owned(),
        dims: dims.to_vec(),
    };
    let i64_max = i64::MAX.unsigned_abs();
    let mut elements: u64 = 1;
    for &d in dims {
        elements = elements
            .checked_mul(d)
            .filter(|&n| n <= i64_max)
            .ok_or_else(overflow)?;
    }
    let row = dims.first().copied().unwrap_or(1);
    let block_size = ggml_type.block_size();
    if row % block_size != 0 {
        return Err(GgufError::NotWholeBlocks {
            tensor,
            name: name.to_owned(),
            ggml_type,
            row,
            block_size,
        });
    }
    ggml_type.bytes_for(elements).ok_or_else(overflow)
}

/// Absolute offsets, checked against the alignment and the end of the file.
fn place_tensors(
    raw: Vec<RawTensor>,
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<Vec<TensorInfo>, GgufError> {
    let mut tensors = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        if t.rel_offset % alignment != 0 {
            return Err(GgufError::UnalignedTensor {
                tensor: i,
                name: t.name,
                offset: t.rel_offset,
                alignment,
            });
        }
        let offset = data_offset.checked_add(t.rel_offset);
        match offset.and_then(|o| o.checked_add(t.size)) {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(GgufError::TensorPastEnd {
                    tensor: i,
                    name: t.name,
                    offset: offset.unwrap_or(u64::MAX),
                    size: t.size,
                    file_len,
                })
            }
        }
        tensors.push(TensorInfo {
            name: t.name,
            dims: t.dims,
            ggml_type: t.ggml_type,
            offset: offset.unwrap_or(u64::MAX),
            size: t.size,
        });
    }
    Ok(tensors)
}

/// Tensors sorted by offset must each end before the next starts.
fn check_overlaps(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors.get(i).map_or(u64::MAX, |t| t.offset));
    for pair in order.windows(2) {
        let (Some(a), Some(b)) = (
            pair.first().and_then(|&i| tensors.get(i).map(|t| (i, t))),
            pair.get(1).and_then(|&i| tensors.get(i).map(|t| (i, t))),
        ) else {
            continue;
        };
        // `offset + size` was checked against the file length.
        if a.1.offset.saturating_add(a.1.size) > b.1.offset {
            return Err(GgufError::TensorsOverlap {
                first: a.0,
                first_name: a.1.name.clone(),
                second: b.0,
                second_name: b.1.name.clone(),
            });
        }
    }
    Ok(())
}
