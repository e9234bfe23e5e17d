//! SIMD dot-product kernels, selected at run time. All the `unsafe` code of the quant module
//! lives under this module.
//!
//! - [`avx2`]: AVX2 + FMA + F16C (x86-64), every weight type and path.
//! - `avx512`: AVX-512 F/BW/VL/VNNI (x86-64), the quantized types: wider integer work with
//!   the AVX2 kernels' `f32` accumulation, so bit-identical to them; multi-row kernels for the
//!   32-element types; software prefetch of the weight stream. Float weights stay on the AVX2
//!   kernels (they are bound by memory). Built with Rust 1.89 or later (`build.rs`), whose
//!   `std::arch` has the AVX-512 intrinsics.
//!
//! AMX is deliberately not used: the development machines advertise AMX but fault on it, and
//! its tile products would sum in another order than the reference llama.cpp (AVX2) build.

use llmstream::gguf::GgmlType;

use super::dot::{DotFn, Path, RowsFn};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(all(target_arch = "x86_64", llmstream_avx512))]
mod avx512;

/// Whether the CPU has AVX2, FMA and F16C (cached by `std`).
pub(crate) fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has everything the AVX-512 kernels need (AVX-512 F, BW, VL and VNNI, with
/// AVX2, FMA and F16C).
pub(crate) fn avx512_available() -> bool {
    #[cfg(all(target_arch = "x86_64", llmstream_avx512))]
    {
        avx512::available()
    }
    #[cfg(not(all(target_arch = "x86_64", llmstream_avx512)))]
    {
        false
    }
}

/// [`crate::ops::swiglu`]'s arithmetic compiled for AVX2 + FMA (its `f32::mul_add`s become
/// FMA instructions, the same bits as the library routine they call otherwise); `false`, with
/// nothing done, when the CPU lacks them.
pub(crate) fn swiglu_fma(gate: &mut [f32], up: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::available() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked above).
            unsafe { avx2::swiglu(gate, up) };
            return true;
        }
        false
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (gate, up);
        false
    }
}

/// The AVX2 kernel for weights of type `ty`, when the CPU supports it and one exists.
pub(crate) fn kernel(ty: GgmlType) -> Option<DotFn> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::available() {
            return avx2::kernel(ty);
        }
        None
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

/// The AVX2 kernel reproducing llama.cpp's repacked `path` for weights of type `ty`.
pub(crate) fn repack_kernel(ty: GgmlType, path: Path) -> Option<DotFn> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::available() {
            return avx2::repack_kernel(ty, path);
        }
        None
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ty, path);
        None
    }
}

/// The per-row AVX-512 kernel for `ty` on `path`, when the CPU supports it and one exists
/// (otherwise the AVX2 kernel is as fast).
pub(crate) fn avx512_kernel(ty: GgmlType, path: Path) -> Option<DotFn> {
    #[cfg(all(target_arch = "x86_64", llmstream_avx512))]
    {
        if avx512::available() {
            return avx512::kernel(ty, path);
        }
        None
    }
    #[cfg(not(all(target_arch = "x86_64", llmstream_avx512)))]
    {
        let _ = (ty, path);
        None
    }
}

/// The multi-row AVX-512 kernel for `ty` on `path`, when the CPU supports it and one exists.
pub(crate) fn avx512_rows_kernel(ty: GgmlType, path: Path) -> Option<RowsFn> {
    #[cfg(all(target_arch = "x86_64", llmstream_avx512))]
    {
        if avx512::available() {
            return avx512::rows_kernel(ty, path);
        }
        None
    }
    #[cfg(not(all(target_arch = "x86_64", llmstream_avx512)))]
    {
        let _ = (ty, path);
        None
    }
}
