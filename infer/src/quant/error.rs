//! Errors of the quantized tensor math.

use llmstream::gguf::GgmlType;

/// What went wrong in a quant call. Every length or type problem is reported here, never by a
/// panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// The type has no CPU kernel here (IQ*, Q2_K, Q3_K, integer types ...).
    #[error("ggml type {ty} is not supported for {op}")]
    Unsupported { ty: GgmlType, op: &'static str },

    /// An element count that is not a whole number of blocks of the type.
    #[error("{what}: {n} elements is not a whole number of {ty} blocks of {block}")]
    NotWholeBlocks {
        what: &'static str,
        ty: GgmlType,
        n: usize,
        block: usize,
    },

    /// A buffer of the wrong length.
    #[error("{what}: expected {expected} {unit}, got {actual}")]
    Length {
        what: &'static str,
        unit: &'static str,
        expected: usize,
        actual: usize,
    },

    /// A row index past the end of a matrix.
    #[error("row {row} out of range: the matrix has {rows} rows")]
    RowOutOfRange { row: usize, rows: usize },

    /// A size that does not fit in `usize`.
    #[error("{what}: size overflows usize")]
    Overflow { what: &'static str },

    /// The worker thread pool could not be built.
    #[error("cannot build the quant thread pool with {threads} threads: {source}")]
    ThreadPool {
        threads: usize,
        #[source]
        source: std::io::Error,
    },
}

impl QuantError {
    pub(crate) fn bytes(what: &'static str, expected: usize, actual: usize) -> Self {
        Self::Length {
            what,
            unit: "bytes",
            expected,
            actual,
        }
    }

    pub(crate) fn elements(what: &'static str, expected: usize, actual: usize) -> Self {
        Self::Length {
            what,
            unit: "elements",
            expected,
            actual,
        }
    }
}
