//! Quantized tensor math of the reference CPU inference, numerically matched to llama.cpp's
//! CPU backend.
//!
//! - [`blocks`]: the ggml block layouts (`Q4_0` ... `Q6_K`, `Q8_K`).
//! - [`dequantize`]: any supported type to `f32` (bit-identical to ggml and to the `gguf`
//!   Python package).
//! - [`q8`]: activation quantization to a weight type's `vec_dot_type`, byte-identical to
//!   ggml's x86 CPU backend.
//! - [`dot`]: fused per-row dot products with integer block sums, bit-identical to ggml's
//!   AVX2 `ggml_vec_dot_*`, as a scalar reference and run-time selected AVX2 kernels.
//! - [`QMatrix`], [`matvec`], [`matmul`]: multithreaded products of a GGUF weight matrix with
//!   activation rows, on a dedicated thread pool ([`set_threads`]). They pick the kernel
//!   llama.cpp itself would run for the matrix ([`Path`]): `Q4_0`/`Q4_K` matrices with a row
//!   count divisible by 8 are repacked by llama.cpp and summed in another order
//!   ([`set_llama_cpp_repack`]), and float weights times batches go through llamafile's
//!   `tinyBLAS`.
//! - [`mod@bench`]: `matvec` throughput per weight type.
//!
//! Supported weight types: `F32`, `F16`, `BF16`, `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`,
//! `Q4_K`, `Q5_K`, `Q6_K` (every one with an AVX2 kernel); `Q8_1` and `Q8_K` are activation
//! types (dequantizable too). Anything else gives [`QuantError::Unsupported`].

pub mod bench;
pub mod blocks;
mod dequant;
pub mod dot;
mod error;
mod matmul;
mod pool;
pub mod q8;
mod simd;

use llmstream::gguf::GgmlType;

pub use dequant::dequantize;
pub use dot::{kernel_for, llama_cpp_repacks, llama_cpp_tinyblas, vec_dot, Backend, Path};
pub use error::QuantError;
pub use matmul::{
    default_threads, dequantize_row, hold_long_pool_spin, matmul, matmul_opts, matmul_with, matvec,
    matvec_opts, matvec_with, parallel_chunks_mut, set_llama_cpp_repack, set_pin_threads,
    set_threads, threads, MatOptions, QMatrix,
};
pub use pool::LongSpin;
pub use q8::{activation_bytes, quantize_activations};
pub(crate) use simd::swiglu_fma;

/// The type llama.cpp quantizes activations to before a dot product with weights of type
/// `ty` (ggml's `vec_dot_type` on x86-64).
pub fn vec_dot_type(ty: GgmlType) -> Result<GgmlType, QuantError> {
    Ok(match ty {
        GgmlType::F32 => GgmlType::F32,
        GgmlType::F16 => GgmlType::F16,
        GgmlType::BF16 => GgmlType::BF16,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => GgmlType::Q8_K,
        _ => return Err(QuantError::Unsupported { ty, op: "vec_dot" }),
    })
}

/// Whether [`dequantize`] handles `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    layout(ty, "dequantize").is_ok()
}

/// `(elements per block, bytes per block)` of a type handled here.
pub(crate) fn layout(ty: GgmlType, op: &'static str) -> Result<(usize, usize), QuantError> {
    match ty {
        GgmlType::F32
        | GgmlType::F16
        | GgmlType::BF16
        | GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q8_0
        | GgmlType::Q8_1
        | GgmlType::Q4_K
        | GgmlType::Q5_K
        | GgmlType::Q6_K
        | GgmlType::Q8_K => {}
        _ => return Err(QuantError::Unsupported { ty, op }),
    }
    // Block sizes are at most 256 and block byte sizes at most 292: they fit any usize.
    let block = usize::try_from(ty.block_size()).map_err(|_| QuantError::Overflow { what: op })?;
    let size = usize::try_from(ty.type_size()).map_err(|_| QuantError::Overflow { what: op })?;
    Ok((block, size))
}
