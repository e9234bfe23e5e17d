//! Typed errors of the library. Every I/O error names the path, offset, length and errno.

use std::path::PathBuf;

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in libllmstream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path that was opened.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A read failed.
    #[error("read of {len} bytes at offset {offset} from {path} failed: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// File offset of the failed request.
        offset: u64,
        /// Length of the failed request.
        len: u64,
        /// The OS error (errno).
        source: std::io::Error,
    },
    /// The file ended before the requested range.
    #[error("{path} ends at {file_len} bytes; the request wanted {len} bytes at offset {offset}")]
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// A GGUF file is damaged or hostile.
    #[error("invalid GGUF file {path}: {source}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: crate::gguf::GgufError,
    },
    /// Page-locked memory beyond RLIMIT_MEMLOCK was needed.
    #[error(
        "RLIMIT_MEMLOCK is {current} bytes but {required} bytes must be locked; raise it \
         (ulimit -l, LimitMEMLOCK= in a systemd unit, or /etc/security/limits.conf) or lower \
         staging_buffers / staging_buffer_size"
    )]
    MemlockLimit {
        /// The current soft limit in bytes.
        current: u64,
        /// What the configuration needs.
        required: u64,
    },
    /// io_uring could not be used and the configuration forced it.
    #[error("io_uring is unavailable: {reason}")]
    UringUnavailable {
        /// Why (kernel.io_uring_disabled, seccomp, old kernel, missing opcode ...).
        reason: String,
    },
    /// The configuration forced O_DIRECT on a file system that refuses it.
    #[error("O_DIRECT was required but {path} refuses it: {source}")]
    DirectUnsupported {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A requested backend cannot be used on this machine.
    #[error("backend {backend} is unavailable: {reason}")]
    BackendUnavailable {
        /// The backend name.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// A CUDA driver call failed.
    #[error("CUDA {op} failed: {message}")]
    Cuda {
        /// The operation.
        op: &'static str,
        /// The driver's message.
        message: String,
    },
    /// A cuFile (GPUDirect Storage) call failed or libcufile is unusable; carries cuFile's code.
    #[error(transparent)]
    CuFile(#[from] crate::backend::cufile::CuFileError),
    /// Memory could not be allocated.
    #[error("out of {what} memory: {bytes} bytes requested")]
    OutOfMemory {
        /// Which memory (host, pinned, device).
        what: &'static str,
        /// The request.
        bytes: u64,
    },
    /// An argument is outside what the call accepts.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A configuration value is invalid.
    #[error("invalid configuration {field}: {reason}")]
    Config {
        /// The field or environment variable.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A buffer is in use by a read that has not completed.
    #[error("buffer is in use by {0} reads in flight")]
    Busy(usize),
    /// The streaming worker stopped (it panicked or the context is shutting down).
    #[error("the streaming worker has stopped: {0}")]
    WorkerGone(String),
    /// Any other OS error outside a read.
    #[error("{op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    /// A short stable name of the error kind, used in logs, stats and the C ABI.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::Open { .. } => "open",
            Error::Read { .. } => "read",
            Error::OutOfRange { .. } => "out_of_range",
            Error::Gguf { .. } => "gguf",
            Error::MemlockLimit { .. } => "memlock",
            Error::UringUnavailable { .. } => "uring_unavailable",
            Error::DirectUnsupported { .. } => "direct_unsupported",
            Error::BackendUnavailable { .. } => "backend_unavailable",
            Error::Cuda { .. } => "cuda",
            Error::CuFile(_) => "cufile",
            Error::OutOfMemory { .. } => "out_of_memory",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Config { .. } => "config",
            Error::Busy(_) => "busy",
            Error::WorkerGone(_) => "worker_gone",
            Error::Os { .. } => "os",
        }
    }
}
