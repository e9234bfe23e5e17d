//! libllmstream: move model weights and other large assets from storage to GPU or host memory
//! at the speed of the hardware.
//!
//! The data path (see `docs/architecture.md`):
//! [`Source`] (a file opened with `O_DIRECT` where the file system allows) → [`io`] reader
//! (io_uring with registered buffers and files, or a pread thread pool) → page-locked staging
//! ([`staging`]) → a [`backend`] (`cuda` copies on a dedicated stream, `host` copies into plain
//! memory). [`Context`] ties them together behind a blocking and an asynchronous API, and
//! [`gguf`] maps a GGUF model onto layers that are read in one bulk request each.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backend;
pub mod context;
pub mod daemon;
pub mod doctor;
pub mod error;
pub mod ffi;
pub mod gguf;
pub mod io;
pub mod pipeline;
pub mod staging;
pub mod stats;

pub use backend::{BackendChoice, BackendKind, BufferKind};
pub use context::{Buffer, Config, Context, HostView, Model, ReadHandle};
pub use error::{Error, Result};
pub use io::{DirectChoice, EngineChoice, ReaderConfig, Source};
pub use stats::Stats;

/// The library version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The C ABI version. Bumped on every incompatible change of `include/llmstream.h`.
pub const ABI_VERSION: u32 = 1;
