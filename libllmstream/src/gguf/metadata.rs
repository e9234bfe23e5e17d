//! Typed access to metadata values. Integer getters accept any integer width whose value fits
//! the requested type (converters write `uint32` or `int32` or `uint64` for the same key);
//! float getters accept `float32` and `float64`.

use super::{GgufError, GgufFile, Value};

impl Value {
    /// The GGUF name of the value's type (`uint32`, `string`, `array` ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "uint8",
            Value::I8(_) => "int8",
            Value::U16(_) => "uint16",
            Value::I16(_) => "int16",
            Value::U32(_) => "uint32",
            Value::I32(_) => "int32",
            Value::F32(_) => "float32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "uint64",
            Value::I64(_) => "int64",
            Value::F64(_) => "float64",
        }
    }

    /// Any integer as i128 (every GGUF integer fits), `None` for other types.
    fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// An integer of any width that fits a u64.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_int().and_then(|v| u64::try_from(v).ok())
    }

    /// An integer of any width that fits a u32.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_int().and_then(|v| u32::try_from(v).ok())
    }

    /// An integer of any width that fits an i64.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_int().and_then(|v| i64::try_from(v).ok())
    }

    /// A `float32` or `float64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(f64::from(v)),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    /// A `float32`, or a `float64` rounded to f32.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            #[allow(clippy::cast_possible_truncation)] // Rounding to f32 is the intent.
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// A bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An array's items.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

impl GgufFile {
    /// An integer value (any width) that fits a u32.
    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(Value::as_u32)
    }

    /// An integer value (any width) that fits a u64.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// An integer value (any width) that fits an i64.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(Value::as_i64)
    }

    /// A float value (`float32`, or `float64` rounded).
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key).and_then(Value::as_f32)
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// An array value's items.
    pub fn get_array(&self, key: &str) -> Option<&[Value]> {
        self.get(key).and_then(Value::as_array)
    }

    /// An array of strings (`None` when absent, not an array, or holding a non-string).
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get_array(key)?.iter().map(Value::as_str).collect()
    }

    /// `general.architecture` (`llama`, `qwen2` ...).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `ARCH.suffix` for this file's architecture (`llama.block_count` for `block_count`).
    pub fn arch_key(&self, suffix: &str) -> Option<String> {
        self.architecture().map(|a| format!("{a}.{suffix}"))
    }

    /// [`Self::get_u32`] of `ARCH.suffix`.
    pub fn get_arch_u32(&self, suffix: &str) -> Option<u32> {
        self.arch_key(suffix).and_then(|k| self.get_u32(&k))
    }

    /// [`Self::get_f32`] of `ARCH.suffix`.
    pub fn get_arch_f32(&self, suffix: &str) -> Option<f32> {
        self.arch_key(suffix).and_then(|k| self.get_f32(&k))
    }

    /// A value that must be present, converted by `conv`.
    fn require<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        conv: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T, GgufError> {
        let value = self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })?;
        conv(value).ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected,
            found: if value.as_int().is_some() {
                "an integer out of range"
            } else {
                value.type_name()
            },
        })
    }

    /// Like [`Self::get_u32`], with an error naming the key when absent or of another type.
    pub fn require_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.require(key, "an integer fitting uint32", Value::as_u32)
    }

    /// Like [`Self::get_u64`], with an error naming the key when absent or of another type.
    pub fn require_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.require(key, "an integer fitting uint64", Value::as_u64)
    }

    /// Like [`Self::get_f32`], with an error naming the key when absent or of another type.
    pub fn require_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.require(key, "a float", Value::as_f32)
    }

    /// Like [`Self::get_str`], with an error naming the key when absent or of another type.
    pub fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        self.require(key, "a string", Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_getters_accept_any_width_that_fits() {
        assert_eq!(Value::I32(7).as_u32(), Some(7));
        assert_eq!(Value::U64(7).as_u32(), Some(7));
        assert_eq!(Value::U8(255).as_u64(), Some(255));
        assert_eq!(Value::I32(-1).as_u32(), None);
        assert_eq!(Value::U64(u64::MAX).as_u32(), None);
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::I64(-5).as_i64(), Some(-5));
        assert_eq!(Value::F32(1.0).as_u32(), None);
        assert_eq!(Value::Bool(true).as_u64(), None);
        assert_eq!(Value::F64(0.5).as_f32(), Some(0.5));
        assert_eq!(Value::U32(1).as_f32(), None);
    }
}
