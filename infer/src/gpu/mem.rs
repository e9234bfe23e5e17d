//! Device memory the launch wrappers accept: owned allocations ([`DevBuf`]) and checked byte
//! ranges of them ([`DevSpan`]).
//!
//! Kernels take raw device addresses; a wrapper only ever builds them from a [`DevSpan`], whose
//! constructor checks the range against its allocation, and checks that the element counts it
//! passes fit the spans. That is what keeps every launch inside its buffers.

use super::{GpuError, Result};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use std::sync::Arc;

/// An owned device allocation of `len` bytes (zeroed on creation).
#[derive(Debug)]
pub struct DevBuf {
    slice: CudaSlice<u8>,
    ptr: u64,
    len: usize,
}

impl DevBuf {
    /// Allocate `len` bytes (at least 1) on `stream`'s device, zeroed.
    pub fn zeroed(stream: &Arc<CudaStream>, len: usize) -> Result<Self> {
        let slice = stream
            .alloc_zeros::<u8>(len.max(1))
            .map_err(|e| GpuError::driver("cuMemAlloc", e))?;
        let ptr = {
            let (p, _sync) = slice.device_ptr(stream);
            p
        };
        Ok(DevBuf { slice, ptr, len })
    }

    /// Allocate and fill with `data`.
    pub fn from_host(stream: &Arc<CudaStream>, data: &[u8]) -> Result<Self> {
        let mut b = Self::zeroed(stream, data.len())?;
        if !data.is_empty() {
            stream
                .memcpy_htod(data, &mut b.slice.slice_mut(..data.len()))
                .map_err(|e| GpuError::driver("cuMemcpyHtoD", e))?;
        }
        Ok(b)
    }

    /// Allocate and fill with `f32` values.
    pub fn from_f32(stream: &Arc<CudaStream>, data: &[f32]) -> Result<Self> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_host(stream, &bytes)
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the allocation is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole allocation as a span.
    pub fn span(&self) -> DevSpan {
        DevSpan {
            ptr: self.ptr,
            len: self.len,
        }
    }

    /// Bytes `offset..offset + len` as a span.
    pub fn sub(&self, offset: usize, len: usize) -> Result<DevSpan> {
        self.span().sub(offset, len)
    }

    /// Copy the first `out.len()` bytes back (synchronises the stream).
    pub fn read(&self, stream: &Arc<CudaStream>, out: &mut [u8]) -> Result<()> {
        if out.len() > self.len {
            return Err(GpuError::Invalid {
                kernel: "memcpy",
                why: format!(
                    "read of {} bytes from a {}-byte buffer",
                    out.len(),
                    self.len
                ),
            });
        }
        if out.is_empty() {
            return Ok(());
        }
        stream
            .memcpy_dtoh(&self.slice.slice(..out.len()), out)
            .map_err(|e| GpuError::driver("cuMemcpyDtoH", e))?;
        stream
            .synchronize()
            .map_err(|e| GpuError::driver("cuStreamSynchronize", e))
    }

    /// Copy back `n` `f32` values from the start (synchronises the stream).
    pub fn read_f32(&self, stream: &Arc<CudaStream>, n: usize) -> Result<Vec<f32>> {
        let mut bytes = vec![0u8; n * 4];
        self.read(stream, &mut bytes)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Copy `data` to bytes `offset..` (asynchronous on `stream`; `data` must stay put until the
    /// stream passes this point, which cudarc ensures for pageable memory by staging).
    pub fn write(&mut self, stream: &Arc<CudaStream>, offset: usize, data: &[u8]) -> Result<()> {
        let end = offset.checked_add(data.len()).filter(|&e| e <= self.len);
        let Some(end) = end else {
            return Err(GpuError::Invalid {
                kernel: "memcpy",
                why: format!(
                    "write of {} bytes at {offset} into a {}-byte buffer",
                    data.len(),
                    self.len
                ),
            });
        };
        if data.is_empty() {
            return Ok(());
        }
        stream
            .memcpy_htod(data, &mut self.slice.slice_mut(offset..end))
            .map_err(|e| GpuError::driver("cuMemcpyHtoD", e))
    }
}

/// A byte range of device memory, checked against its allocation when made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevSpan {
    ptr: u64,
    len: usize,
}

impl DevSpan {
    /// Device address of the first byte.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes `offset..offset + len` of this span.
    pub fn sub(&self, offset: usize, len: usize) -> Result<DevSpan> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(DevSpan {
                ptr: self.ptr + offset as u64,
                len,
            }),
            _ => Err(GpuError::Invalid {
                kernel: "span",
                why: format!("bytes {offset}+{len} of a {}-byte span", self.len),
            }),
        }
    }

    /// Fail unless the span holds at least `bytes` bytes (used by wrappers before a launch).
    pub fn need(&self, kernel: &'static str, what: &str, bytes: usize) -> Result<()> {
        if bytes > self.len {
            return Err(GpuError::Invalid {
                kernel,
                why: format!("{what} needs {bytes} bytes, span has {}", self.len),
            });
        }
        Ok(())
    }

    /// A span over memory the caller vouches for (external allocations, e.g. buffers of the
    /// library's streaming context).
    ///
    /// # Safety
    /// `ptr..ptr + len` must be device memory of the context the kernels run in, valid for as
    /// long as any launch using the span can run.
    pub unsafe fn from_raw(ptr: u64, len: usize) -> DevSpan {
        DevSpan { ptr, len }
    }
}
