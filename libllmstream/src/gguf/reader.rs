//! Little-endian primitives read from a header whose length the caller declared: every read is
//! checked against the bytes left before anything is allocated, and every failure names the
//! item being read and its offset.

use super::GgufError;
use std::fmt;
use std::io::Read;

/// Whose item is being read, for error messages.
#[derive(Clone, Copy)]
pub(super) enum Owner<'a> {
    /// The fixed header fields.
    Header,
    /// A metadata entry whose key is not read yet.
    KeyIndex(usize),
    /// A metadata entry.
    Key(&'a str),
    /// A tensor whose name is not read yet.
    TensorIndex(usize),
    /// A tensor.
    Tensor(usize, &'a str),
}

/// An item being read: `item` of `owner`. Formatted only when an error is built.
#[derive(Clone, Copy)]
pub(super) struct What<'a> {
    pub item: &'static str,
    pub owner: Owner<'a>,
}

impl<'a> What<'a> {
    pub fn header(item: &'static str) -> Self {
        Self {
            item,
            owner: Owner::Header,
        }
    }

    pub fn new(item: &'static str, owner: Owner<'a>) -> Self {
        Self { item, owner }
    }
}

impl fmt::Display for What<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.owner {
            Owner::Header => write!(f, "{}", self.item),
            Owner::KeyIndex(i) => write!(f, "{} of metadata entry {i}", self.item),
            Owner::Key(k) => write!(f, "{} of key {k:?}", self.item),
            Owner::TensorIndex(i) => write!(f, "{} of tensor {i}", self.item),
            Owner::Tensor(i, n) => write!(f, "{} of tensor {i} {n:?}", self.item),
        }
    }
}

/// A reader that knows its position and the declared end of the file.
pub(super) struct HeaderReader<R> {
    inner: R,
    pos: u64,
    file_len: u64,
}

impl<R: Read> HeaderReader<R> {
    pub fn new(inner: R, file_len: u64) -> Self {
        Self {
            inner,
            pos: 0,
            file_len,
        }
    }

    /// Offset of the next byte.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Bytes between the position and the declared end.
    pub fn remaining(&self) -> u64 {
        self.file_len.saturating_sub(self.pos)
    }

    /// Fail unless `needed` bytes are left.
    fn ensure(&self, needed: u64, what: What<'_>) -> Result<(), GgufError> {
        let available = self.remaining();
        if needed > available {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos,
                needed,
                available,
            });
        }
        Ok(())
    }

    /// Fill `buf`, which the caller has checked against [`Self::remaining`] or is small.
    fn fill(&mut self, buf: &mut [u8], what: What<'_>) -> Result<(), GgufError> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        self.ensure(len, what)?;
        self.inner.read_exact(buf).map_err(|e| GgufError::Io {
            what: what.to_string(),
            offset: self.pos,
            message: if e.kind() == std::io::ErrorKind::UnexpectedEof {
                format!(
                    "the reader ended before the declared file length {}",
                    self.file_len
                )
            } else {
                e.to_string()
            },
        })?;
        // Cannot overflow: `len <= remaining`, so `pos + len <= file_len`.
        self.pos += len;
        Ok(())
    }

    pub fn array<const N: usize>(&mut self, what: What<'_>) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    pub fn u8(&mut self, what: What<'_>) -> Result<u8, GgufError> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }

    pub fn i8(&mut self, what: What<'_>) -> Result<i8, GgufError> {
        Ok(i8::from_le_bytes(self.array(what)?))
    }

    pub fn u16(&mut self, what: What<'_>) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn i16(&mut self, what: What<'_>) -> Result<i16, GgufError> {
        Ok(i16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: What<'_>) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn i32(&mut self, what: What<'_>) -> Result<i32, GgufError> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: What<'_>) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub fn i64(&mut self, what: What<'_>) -> Result<i64, GgufError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    pub fn f32(&mut self, what: What<'_>) -> Result<f32, GgufError> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    pub fn f64(&mut self, what: What<'_>) -> Result<f64, GgufError> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    /// A string: a u64 length then that many bytes of UTF-8. The length must fit in the bytes
    /// left and under `max_len`; the bytes are allocated only then.
    pub fn string(&mut self, what: What<'_>, max_len: u64) -> Result<String, GgufError> {
        let len_offset = self.pos;
        let len = self.u64(what)?;
        let max = self.remaining().min(max_len);
        if len > max {
            return Err(GgufError::StringTooLong {
                what: what.to_string(),
                offset: len_offset,
                len,
                max,
            });
        }
        let n = usize::try_from(len).map_err(|_| GgufError::StringTooLong {
            what: what.to_string(),
            offset: len_offset,
            len,
            max: u64::try_from(usize::MAX).unwrap_or(u64::MAX),
        })?;
        let bytes_offset = self.pos;
        let mut buf = vec![0u8; n];
        self.fill(&mut buf, what)?;
        String::from_utf8(buf).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_string(),
            offset: bytes_offset,
        })
    }
}
