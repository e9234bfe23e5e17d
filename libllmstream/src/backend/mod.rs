//! Device backends. (in progress)

/// Which backend a context should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// CUDA when libcuda and a device exist, else host.
    #[default]
    Auto,
    /// CUDA or an error.
    Cuda,
    /// Plain host memory.
    Host,
}

/// The backend a context runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// CUDA.
    Cuda,
    /// Host memory.
    Host,
}
