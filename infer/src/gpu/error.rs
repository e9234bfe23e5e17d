//! Errors of the CUDA path.

use thiserror::Error;

/// What can go wrong on the GPU path.
#[derive(Debug, Error)]
pub enum GpuError {
    /// No usable CUDA driver, device or NVRTC library.
    #[error("CUDA unavailable: {0}")]
    Unavailable(String),
    /// A driver call failed.
    #[error("CUDA {op}: {message}")]
    Driver {
        /// The operation.
        op: &'static str,
        /// The driver's message.
        message: String,
    },
    /// NVRTC refused the kernel sources; `log` is the compiler's output.
    #[error("NVRTC compile for {arch} failed: {message}\n{log}")]
    Compile {
        /// Target architecture (`sm_90` ...).
        arch: String,
        /// Summary.
        message: String,
        /// The compiler log.
        log: String,
    },
    /// A kernel named in the Rust tables is missing from the compiled module.
    #[error("kernel {0} not found in the compiled module")]
    MissingKernel(&'static str),
    /// A launch was asked for with arguments that do not fit the buffers or the kernel.
    #[error("invalid launch of {kernel}: {why}")]
    Invalid {
        /// Kernel name.
        kernel: &'static str,
        /// What was wrong.
        why: String,
    },
    /// A type with no kernel.
    #[error("no CUDA kernel for {0}")]
    Unsupported(String),
}

/// Result alias of the CUDA path.
pub type Result<T, E = GpuError> = std::result::Result<T, E>;

impl GpuError {
    pub(crate) fn driver(op: &'static str, e: impl std::fmt::Debug) -> Self {
        GpuError::Driver {
            op,
            message: format!("{e:?}"),
        }
    }
}
