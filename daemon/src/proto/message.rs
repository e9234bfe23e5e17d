//! Requests and responses (JSON, internally tagged by `"type"`).

use serde::{Deserialize, Serialize};

/// Sent in [`Request::Hello`]; anything else is not an llmstreamd client.
pub const MAGIC: &str = "llmstreamd";
/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// Client → daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// First message of every connection.
    Hello {
        /// [`MAGIC`].
        magic: String,
        /// The protocol version the client speaks.
        version: u32,
    },
    /// Open the GGUF model whose descriptor is attached (exactly one, `SCM_RIGHTS`). The daemon
    /// never opens `label`: it only names the model in messages and logs.
    OpenModel {
        /// A name for the model (often the path the client opened).
        label: String,
    },
    /// Counters of the daemon.
    Status {},
    /// Close a model this connection opened.
    Close {
        /// The id from [`Response::ModelOpened`].
        model: u64,
    },
}

/// Daemon → client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Answer to a good [`Request::Hello`].
    Hello {
        /// The version the daemon will speak on this connection.
        version: u32,
        /// The daemon's package version.
        server: String,
    },
    /// A model was opened.
    ModelOpened {
        /// Its id on this connection.
        model: u64,
        /// Number of `blk.N` layers.
        layers: u32,
        /// Size of the file in bytes.
        file_size: u64,
    },
    /// Counters.
    Status(StatusReport),
    /// A model was closed.
    Closed {
        /// Its id.
        model: u64,
    },
    /// The request failed. After codes marked fatal the daemon closes the connection.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Details for people.
        message: String,
    },
}

/// Daemon-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// Connections now served.
    pub clients: u64,
    /// Models now open (all connections).
    pub models: u64,
    /// Bytes the daemon read from clients' descriptors so far.
    pub bytes_served: u64,
    /// Requests that failed and connections dropped for protocol errors, so far.
    pub errors: u64,
}

/// Typed failure of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame or its JSON could not be decoded (fatal).
    Malformed,
    /// The frame is longer than the daemon accepts (fatal).
    TooLarge,
    /// The first request was not a Hello, or a Hello came twice (fatal).
    HelloExpected,
    /// Wrong magic (fatal).
    BadMagic,
    /// The daemon does not speak the client's version (fatal).
    UnsupportedVersion,
    /// The peer's credentials are not admitted (fatal).
    PermissionDenied,
    /// The daemon serves as many connections as it may (fatal).
    TooManyClients,
    /// OpenModel without exactly one descriptor, or descriptors with another request.
    BadDescriptor,
    /// A block device that is not in `allowed_devices`.
    DeviceNotAllowed,
    /// The descriptor does not hold a readable GGUF model.
    BadModel,
    /// This connection holds `max_models_per_client` models already.
    TooManyModels,
    /// No open model with that id on this connection.
    UnknownModel,
    /// The daemon is shutting down (fatal).
    ShuttingDown,
    /// Any other failure inside the daemon.
    Internal,
}

impl ErrorCode {
    /// Whether the daemon closes the connection after sending this code.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Self::Malformed
                | Self::TooLarge
                | Self::HelloExpected
                | Self::BadMagic
                | Self::UnsupportedVersion
                | Self::PermissionDenied
                | Self::TooManyClients
                | Self::ShuttingDown
        )
    }
}

impl Request {
    /// The Hello of this build.
    pub fn hello() -> Self {
        Self::Hello {
            magic: MAGIC.to_owned(),
            version: VERSION,
        }
    }
}
