//! SIMD dot-product kernels, selected at run time. All the `unsafe` code of the quant module
//! lives under this module.
//!
//! Only AVX2 + FMA + F16C (x86-64) is implemented, for every weight type. AVX-512 and AMX are
//! deliberately not used (the development machines advertise AMX but fault on it, and the
//! reference llama.cpp build uses the AVX2 kernels, whose numerics these reproduce).

use llmstream::gguf::GgmlType;

use super::dot::DotFn;

#[cfg(target_arch = "x86_64")]
mod avx2;

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
