//! The client side of llmstreamd: the wire protocol ([`proto`]) and the transparent daemon path
//! of [`crate::Context::open_model`].
//!
//! When a daemon's socket exists (`LLMSTREAM_SOCKET`, else [`DEFAULT_SOCKET`]), opening a model
//! opens the file here (the daemon never opens client paths), passes the descriptor to the
//! daemon, and maps the model's shared RAM tier that comes back: a sealed memfd holding a range
//! of the file, filled once by the daemon and mapped read-only by every process that opens the
//! same file. Reads that fall inside that range are copied from the mapping (page-locked, so
//! host-to-device copies are DMA); everything else is read from storage here, exactly as
//! without a daemon. Any failure to use the daemon is recorded as a fallback and the model is
//! streamed in-process: the results are the same either way.

pub mod proto;
mod tier;

pub(crate) use tier::SharedTier;

use crate::backend::Backend;
use crate::stats::StatsInner;
use proto::client::Client;
use proto::ProtoError;
use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the daemon listens unless `LLMSTREAM_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/llmstream/llmstreamd.sock";
/// The environment variable naming the daemon's socket; empty or `none`: never use a daemon.
pub const SOCKET_ENV: &str = "LLMSTREAM_SOCKET";
/// How long the library waits for any one answer of the daemon (a model's first open includes
/// the daemon filling its tier from storage).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// Why the daemon could not be used for a model (the model is then streamed in-process).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Talking to the daemon failed.
    #[error("{0}")]
    Proto(#[from] ProtoError),
    /// The tier the daemon handed over is not usable.
    #[error("shared RAM tier: {0}")]
    Tier(String),
    /// Mapping or locking the tier failed.
    #[error("shared RAM tier: {op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The daemon socket this process would use: `LLMSTREAM_SOCKET`, else [`DEFAULT_SOCKET`];
/// `None` when the variable is empty or `none` (in-process forced).
pub fn socket_path() -> Option<PathBuf> {
    match std::env::var_os(SOCKET_ENV) {
        None => Some(PathBuf::from(DEFAULT_SOCKET)),
        Some(v) if v.is_empty() || v == "none" => None,
        Some(v) => Some(PathBuf::from(v)),
    }
}

/// The daemon socket to use now: [`socket_path`] when a socket exists there.
pub fn live_socket() -> Option<PathBuf> {
    socket_path().filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
}

/// A model served by the daemon: its mapped shared tier (if the daemon gave it one) and the
/// connection, whose lifetime is the daemon's reference to the model and its tier.
#[derive(Debug)]
pub(crate) struct DaemonLink {
    tier: Option<SharedTier>,
    /// Closed after the mapping is gone (declared last: dropped last).
    _conn: Client,
}

impl DaemonLink {
    /// The mapped tier.
    pub(crate) fn tier(&self) -> Option<&SharedTier> {
        self.tier.as_ref()
    }
}

/// Hand `file` (opened by this process) to the daemon at `socket` and map the model's shared
/// tier, when the daemon gives it one (it may not: budget spent or zero).
pub(crate) fn attach(
    socket: &Path,
    file: &File,
    label: &Path,
    backend: &Arc<Backend>,
    stats: &StatsInner,
) -> Result<DaemonLink, DaemonError> {
    let mut client = Client::connect_with_timeout(socket, Some(ANSWER_TIMEOUT))?;
    let label = label.to_string_lossy();
    let label: String = label.chars().take(256).collect();
    let opened = client.open_model(file, &label)?;
    let file_len = file
        .metadata()
        .map_err(|source| DaemonError::Os {
            op: "fstat",
            source,
        })?
        .len();
    if opened.file_size != file_len {
        return Err(DaemonError::Tier(format!(
            "the daemon sees {} bytes, this process {file_len}",
            opened.file_size
        )));
    }
    let tier = match opened.tier {
        None => None,
        Some((grant, fd)) => Some(SharedTier::map(fd, grant, file_len, backend, stats)?),
    };
    Ok(DaemonLink {
        tier,
        _conn: client,
    })
}
