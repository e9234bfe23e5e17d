//! `lls_model`: a GGUF model opened for streaming: its tensor table, layers and metadata, and
//! the calls that load layers.

use super::buffer::{buffer_kind, lls_buffer};
use super::context::lls_context;
use super::error::{lls_status, FfiError};
use super::handle::Handle;
use super::panic::{guard, guard_value};
use super::request::{lls_request, RequestState};
use super::source::lls_source;
use super::text::{str_arg, write_str};
use crate::context::Model;
use crate::gguf::Value;
use std::ffi::c_char;
use std::path::Path;
use std::sync::Arc;

/// A GGUF model opened for streaming: header parsed and checked against the file, tensors
/// grouped into layers (`blk.N.*`). Immutable: any thread may use it. Strings it hands out
/// (tensor names) live as long as the model.
#[allow(non_camel_case_types)]
pub struct lls_model {
    _private: [u8; 0],
}

/// What an `lls_model` points to: the model and what the C view needs precomputed.
#[derive(Debug)]
pub(crate) struct ModelState {
    model: Model,
    /// Tensor names with a NUL appended, by tensor index.
    names: Vec<Box<[u8]>>,
    /// Layer of each tensor, -1 for globals.
    tensor_layer: Vec<i64>,
}

impl ModelState {
    fn new(model: Model) -> Result<Self, FfiError> {
        let g = model.gguf();
        let names = g
            .tensors
            .iter()
            .map(|t| {
                let mut b = Vec::with_capacity(t.name.len() + 1);
                b.extend_from_slice(t.name.as_bytes());
                b.push(0);
                b.into_boxed_slice()
            })
            .collect();
        let mut tensor_layer = vec![-1i64; g.tensors.len()];
        for (li, l) in g.layers.iter().enumerate() {
            let li = i64::try_from(li).map_err(|_| FfiError::invalid("too many layers"))?;
            for &t in &l.tensors {
                if let Some(slot) = tensor_layer.get_mut(t) {
                    *slot = li;
                }
            }
        }
        Ok(Self {
            model,
            names,
            tensor_layer,
        })
    }

    fn meta(&self, key: &str) -> Result<&Value, FfiError> {
        self.model
            .gguf()
            .get(key)
            .ok_or_else(|| FfiError::new(lls_status::NotFound, format!("no metadata key {key:?}")))
    }
}

impl Handle for lls_model {
    type Target = ModelState;
}

/// One tensor of a model's table.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct lls_tensor_info {
    /// The name (`blk.3.attn_q.weight`), NUL-terminated, owned by the model and valid while it
    /// lives.
    pub name: *const c_char,
    /// Length of the name in bytes, without the NUL.
    pub name_len: usize,
    /// The ggml type id (as in ggml.h: 0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0, 12 Q4_K ...).
    pub ggml_type: u32,
    /// Number of dimensions (1..=4).
    pub n_dims: u32,
    /// Dimensions, innermost first (ggml order); entries beyond `n_dims` are 1.
    pub dims: [u64; 4],
    /// Offset of the tensor's data from the start of the file.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
    /// The layer (`blk.N`) the tensor belongs to, or -1 for a global tensor (`token_embd` ...).
    pub layer: i64,
}

/// The type of a metadata value (numbered as in the GGUF format).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lls_meta_type {
    /// uint8_t.
    U8 = 0,
    /// int8_t.
    I8 = 1,
    /// uint16_t.
    U16 = 2,
    /// int16_t.
    I16 = 3,
    /// uint32_t.
    U32 = 4,
    /// int32_t.
    I32 = 5,
    /// float.
    F32 = 6,
    /// bool.
    Bool = 7,
    /// UTF-8 string.
    String = 8,
    /// Array (not readable through the C ABI yet).
    Array = 9,
    /// uint64_t.
    U64 = 10,
    /// int64_t.
    I64 = 11,
    /// double.
    F64 = 12,
}

fn meta_type(v: &Value) -> lls_meta_type {
    match v {
        Value::U8(_) => lls_meta_type::U8,
        Value::I8(_) => lls_meta_type::I8,
        Value::U16(_) => lls_meta_type::U16,
        Value::I16(_) => lls_meta_type::I16,
        Value::U32(_) => lls_meta_type::U32,
        Value::I32(_) => lls_meta_type::I32,
        Value::F32(_) => lls_meta_type::F32,
        Value::Bool(_) => lls_meta_type::Bool,
        Value::String(_) => lls_meta_type::String,
        Value::Array(_) => lls_meta_type::Array,
        Value::U64(_) => lls_meta_type::U64,
        Value::I64(_) => lls_meta_type::I64,
        Value::F64(_) => lls_meta_type::F64,
    }
}

/// An integer value widened to i128 (which holds every GGUF integer), `None` for other types.
fn meta_int(v: &Value) -> Option<i128> {
    Some(match *v {
        Value::U8(x) => x.into(),
        Value::I8(x) => x.into(),
        Value::U16(x) => x.into(),
        Value::I16(x) => x.into(),
        Value::U32(x) => x.into(),
        Value::I32(x) => x.into(),
        Value::U64(x) => x.into(),
        Value::I64(x) => x.into(),
        _ => return None,
    })
}

fn mismatch(key: &str, v: &Value, want: &str) -> FfiError {
    FfiError::new(
        lls_status::TypeMismatch,
        format!("metadata {key:?} is {:?}, not {want}", meta_type(v)),
    )
}

/// Open the GGUF model at `path` (UTF-8) through `ctx`: parse and check its header. Fails with
/// `LLS_STATUS_OPEN` when the file cannot be opened, `LLS_STATUS_INVALID_GGUF` when it is no
/// valid GGUF file (truncated, damaged, or hostile).
///
/// # Safety
/// `ctx` is NULL or a live context; `path` is NULL or a NUL-terminated string; `out` is NULL or
/// points to a writable `lls_model*`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_open(
    ctx: *mut lls_context,
    path: *const c_char,
    out: *mut *mut lls_model,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { str_arg(path, "path") }?;
        check_out!(out);
        let state = ModelState::new(ctx.open_model(Path::new(path))?)?;
        put!(out, lls_model::into_raw(state));
        Ok(())
    })
}

/// Open a GGUF model from an opened source (for example one from `lls_source_open_fd`). The
/// model keeps its own reference to the source; the caller may free `src` afterwards.
///
/// # Safety
/// `src` is NULL or a live source; `out` is NULL or points to a writable `lls_model*`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_from_source(
    src: *const lls_source,
    out: *mut *mut lls_model,
) -> lls_status {
    guard(|| {
        let src = arg_ref!(src);
        check_out!(out);
        let state = ModelState::new(Model::from_source(Arc::clone(src))?)?;
        put!(out, lls_model::into_raw(state));
        Ok(())
    })
}

/// Free a model; tensor names it handed out become invalid. Layer loads in flight finish
/// normally. NULL is a no-op.
///
/// # Safety
/// `model` is NULL or a model not freed yet; no other thread uses it during or after the call.
#[no_mangle]
pub unsafe extern "C" fn lls_model_free(model: *mut lls_model) {
    guard_value((), || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_model::free(model) }
    })
}

/// Number of layers (`blk.N`); 0 for NULL.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn lls_model_layer_count(model: *const lls_model) -> usize {
    guard_value(0, || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_model::as_ref(model) }.map_or(0, |m| m.model.layer_count())
    })
}

/// Number of tensors; 0 for NULL.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn lls_model_tensor_count(model: *const lls_model) -> usize {
    guard_value(0, || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_model::as_ref(model) }.map_or(0, |m| m.model.gguf().tensors.len())
    })
}

/// Number of metadata entries; 0 for NULL.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn lls_model_meta_count(model: *const lls_model) -> usize {
    guard_value(0, || {
        // SAFETY: forwarded from this function's contract.
        unsafe { lls_model::as_ref(model) }.map_or(0, |m| m.model.gguf().metadata.len())
    })
}

/// Write tensor number `idx` (file order, 0 ..< `lls_model_tensor_count`) to `*out`.
///
/// # Safety
/// `model` is NULL or a live model; `out` is NULL or points to a writable `lls_tensor_info`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_tensor_info(
    model: *const lls_model,
    idx: usize,
    out: *mut lls_tensor_info,
) -> lls_status {
    guard(|| {
        let m = arg_ref!(model);
        check_out!(out);
        let tensors = &m.model.gguf().tensors;
        let t = tensors
            .get(idx)
            .ok_or_else(|| FfiError::invalid(format!("tensor {idx} of {}", tensors.len())))?;
        if t.dims.is_empty() || t.dims.len() > 4 {
            return Err(FfiError::new(
                lls_status::InvalidGguf,
                format!("tensor {:?} has {} dimensions", t.name, t.dims.len()),
            ));
        }
        let mut dims = [1u64; 4];
        dims[..t.dims.len()].copy_from_slice(&t.dims);
        let name = m.names.get(idx).ok_or_else(|| FfiError::invalid("name"))?;
        let layer = m.tensor_layer.get(idx).copied().unwrap_or(-1);
        put!(
            out,
            lls_tensor_info {
                name: name.as_ptr().cast(),
                name_len: t.name.len(),
                ggml_type: t.ggml_type.id(),
                // At most 4, checked above.
                n_dims: u32::try_from(t.dims.len()).unwrap_or(4),
                dims,
                offset: t.offset,
                size: t.size,
                layer,
            }
        );
        Ok(())
    })
}

/// Write the index of the tensor named `name` to `*idx`; `LLS_STATUS_NOT_FOUND` when there is
/// none.
///
/// # Safety
/// `model` is NULL or a live model; `name` is NULL or a NUL-terminated string; `idx` is NULL or
/// points to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_find_tensor(
    model: *const lls_model,
    name: *const c_char,
    idx: *mut usize,
) -> lls_status {
    guard(|| {
        let m = arg_ref!(model);
        // SAFETY: forwarded from this function's contract.
        let name = unsafe { str_arg(name, "name") }?;
        let i = m
            .model
            .gguf()
            .tensors
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| FfiError::new(lls_status::NotFound, format!("no tensor {name:?}")))?;
        put!(idx, i);
        Ok(())
    })
}

/// Write the file range of layer `layer` (from its first tensor's start to its last tensor's
/// end) and whether that range holds nothing but the layer's tensors (so one bulk read moves the
/// layer and tensor `t` lies at `t.offset - *offset` in it).
///
/// # Safety
/// `model` is NULL or a live model; `offset`, `size` and `contiguous` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lls_model_layer_span(
    model: *const lls_model,
    layer: usize,
    offset: *mut u64,
    size: *mut u64,
    contiguous: *mut bool,
) -> lls_status {
    guard(|| {
        let m = arg_ref!(model);
        check_out!(offset, size, contiguous);
        let l = m.model.layer(layer)?;
        put!(offset, l.span.start);
        put!(size, l.span.end - l.span.start);
        put!(contiguous, l.contiguous);
        Ok(())
    })
}

/// Load layer `layer` (one bulk read of its span) into `dst` at `dst_offset`, blocking.
///
/// # Safety
/// `ctx`, `model` and `dst` are NULL or live handles.
#[no_mangle]
pub unsafe extern "C" fn lls_model_load_layer(
    ctx: *mut lls_context,
    model: *const lls_model,
    layer: usize,
    dst: *mut lls_buffer,
    dst_offset: usize,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        let m = arg_ref!(model);
        let dst = arg_ref!(dst);
        m.model.load_layer(ctx, layer, dst, dst_offset)?;
        Ok(())
    })
}

/// Start loading layer `layer` into `dst` at `dst_offset`; writes the request to `*out`.
///
/// # Safety
/// `ctx`, `model` and `dst` are NULL or live handles; `out` is NULL or points to a writable
/// `lls_request*`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_load_layer_async(
    ctx: *mut lls_context,
    model: *const lls_model,
    layer: usize,
    dst: *mut lls_buffer,
    dst_offset: usize,
    out: *mut *mut lls_request,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        let m = arg_ref!(model);
        let dst = arg_ref!(dst);
        check_out!(out);
        let h = m.model.load_layer_async(ctx, layer, dst, dst_offset)?;
        put!(out, lls_request::into_raw(RequestState::new(h)));
        Ok(())
    })
}

/// Load layer `layer` into a new buffer of kind `kind` (an `lls_buffer_kind`) and exactly the
/// layer's size, blocking; writes the buffer (free it with `lls_buffer_free`) to `*out`.
///
/// # Safety
/// `ctx` and `model` are NULL or live handles; `out` is NULL or points to a writable
/// `lls_buffer*`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_load_layer_alloc(
    ctx: *mut lls_context,
    model: *const lls_model,
    layer: usize,
    kind: u32,
    out: *mut *mut lls_buffer,
) -> lls_status {
    guard(|| {
        let ctx = arg_ref!(ctx);
        let m = arg_ref!(model);
        let kind = buffer_kind(kind)?;
        check_out!(out);
        let buf = m.model.load_layer_owned(ctx, layer, kind)?;
        put!(out, lls_buffer::into_raw(buf));
        Ok(())
    })
}

/// Write metadata key number `idx` (file order, 0 ..< `lls_model_meta_count`) as
/// `lls_error_message` writes text.
///
/// # Safety
/// `model` is NULL or a live model; `buf` is NULL or points to `len` writable bytes; `out_n` is
/// NULL or points to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_meta_key(
    model: *const lls_model,
    idx: usize,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> lls_status {
    guard(|| {
        let m = arg_ref!(model);
        let meta = &m.model.gguf().metadata;
        let (key, _) = meta
            .get(idx)
            .ok_or_else(|| FfiError::invalid(format!("metadata entry {idx} of {}", meta.len())))?;
        // SAFETY: forwarded from this function's contract.
        unsafe { write_str(key, buf, len, out_n) }
    })
}

/// Write the type of metadata value `key` to `*out`; `LLS_STATUS_NOT_FOUND` for a missing key.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or a NUL-terminated string; `out` is NULL or
/// points to a writable `lls_meta_type`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_meta_type(
    model: *const lls_model,
    key: *const c_char,
    out: *mut lls_meta_type,
) -> lls_status {
    guard(|| {
        let m = arg_ref!(model);
        // SAFETY: forwarded from this function's contract.
        let key = unsafe { str_arg(key, "key") }?;
        put!(out, meta_type(m.meta(key)?));
        Ok(())
    })
}

/// Write string metadata `key` as `lls_error_message` writes text. `LLS_STATUS_NOT_FOUND` for a
/// missing key, `LLS_STATUS_TYPE_MISMATCH` when the value is no string.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or a NUL-terminated string; `buf` is NULL or
/// points to `len` writable bytes; `out_n` is NULL or points to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_meta_string(
    model: *const lls_model,
    key: *const c_char,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> lls_status {
    guard(|| {
        let m = arg_ref!(model);
        // SAFETY: forwarded from this function's contract.
        let key = unsafe { str_arg(key, "key") }?;
        match m.meta(key)? {
            // SAFETY: forwarded from this function's contract.
            Value::String(s) => unsafe { write_str(s, buf, len, out_n) },
            v => Err(mismatch(key, v, "a string")),
        }
    })
}

/// Write integer metadata `key` (of any integer width) to `*out`. `LLS_STATUS_TYPE_MISMATCH`
/// for a non-integer or a negative value.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or a NUL-terminated string; `out` is NULL or
/// points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_meta_u64(
    model: *const lls_model,
    key: *const c_char,
    out: *mut u64,
) -> lls_status {
    guard(|| {
        let m = arg_ref!(model);
        // SAFETY: forwarded from this function's contract.
        let key = unsafe { str_arg(key, "key") }?;
        let v = m.meta(key)?;
        let x = meta_int(v)
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| mismatch(key, v, "an unsigned integer"))?;
        put!(out, x);
        Ok(())
    })
}

/// Write integer metadata `key` (of any integer width) to `*out`. `LLS_STATUS_TYPE_MISMATCH`
/// for a non-integer or a value above INT64_MAX.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or a NUL-terminated string; `out` is NULL or
/// points to a writable `int64_t`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_meta_i64(
    model: *const lls_model,
    key: *const c_char,
    out: *mut i64,
) -> lls_status {
    guard(|| {
        let m = arg_ref!(model);
        // SAFETY: forwarded from this function's contract.
        let key = unsafe { str_arg(key, "key") }?;
        let v = m.meta(key)?;
        let x = meta_int(v)
            .and_then(|i| i64::try_from(i).ok())
            .ok_or_else(|| mismatch(key, v, "a signed integer"))?;
        put!(out, x);
        Ok(())
    })
}

/// Write numeric metadata `key` (a float of either width, or an integer, converted as a C cast
/// would) to `*out`. `LLS_STATUS_TYPE_MISMATCH` for a non-number.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or a NUL-terminated string; `out` is NULL or
/// points to a writable `double`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_meta_f64(
    model: *const lls_model,
    key: *const c_char,
    out: *mut f64,
) -> lls_status {
    guard(|| {
        let m = arg_ref!(model);
        // SAFETY: forwarded from this function's contract.
        let key = unsafe { str_arg(key, "key") }?;
        let v = m.meta(key)?;
        #[allow(clippy::cast_precision_loss)] // documented: integers convert as a C cast does
        let x = match *v {
            Value::F32(f) => f64::from(f),
            Value::F64(f) => f,
            _ => meta_int(v)
                .map(|i| i as f64)
                .ok_or_else(|| mismatch(key, v, "a number"))?,
        };
        put!(out, x);
        Ok(())
    })
}

/// Write boolean metadata `key` to `*out`. `LLS_STATUS_TYPE_MISMATCH` for a non-bool.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or a NUL-terminated string; `out` is NULL or
/// points to a writable `bool`.
#[no_mangle]
pub unsafe extern "C" fn lls_model_meta_bool(
    model: *const lls_model,
    key: *const c_char,
    out: *mut bool,
) -> lls_status {
    guard(|| {
        let m = arg_ref!(model);
        // SAFETY: forwarded from this function's contract.
        let key = unsafe { str_arg(key, "key") }?;
        match m.meta(key)? {
            Value::Bool(b) => put!(out, *b),
            v => return Err(mismatch(key, v, "a bool")),
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_widening() {
        assert_eq!(meta_int(&Value::I8(-3)), Some(-3));
        assert_eq!(meta_int(&Value::U64(u64::MAX)), Some(i128::from(u64::MAX)));
        assert_eq!(meta_int(&Value::F32(1.0)), None);
        assert_eq!(meta_type(&Value::String("x".into())), lls_meta_type::String);
        assert_eq!(lls_meta_type::F64 as u32, 12, "GGUF numbering");
    }
}
