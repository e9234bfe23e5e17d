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
        /// The part of the file held in the shared RAM tier; its memfd (sealed, read-only)
        /// comes with this response as `SCM_RIGHTS`. Absent: no tier for this model (budget
        /// spent or zero); the client reads the whole file itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tier: Option<TierGrant>,
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

/// Where a model's shared RAM tier lies: memfd byte `i` is file byte `file_offset + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierGrant {
    /// File offset of the first byte held.
    pub file_offset: u64,
    /// Bytes held (the memfd's size).
    pub len: u64,
}

/// Most entries of [`StatusReport::tiers`] sent in one response.
pub const MAX_STATUS_TIERS: usize = 256;

/// Daemon-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// Connections now served.
    pub clients: u64,
    /// Models now open (all connections).
    pub models: u64,
    /// Bytes the daemon read from clients' descriptors so far (headers and tier fills).
    pub bytes_served: u64,
    /// Requests that failed and connections dropped for protocol errors, so far.
    pub errors: u64,
    /// The configured shared RAM tier budget in bytes.
    #[serde(default)]
    pub tier_budget: u64,
    /// Bytes of shared RAM tier now held (one copy per model, however many clients map it).
    #[serde(default)]
    pub tier_bytes: u64,
    /// Tier bytes handed to clients so far (a model's tier counts once per client opening it).
    #[serde(default)]
    pub tier_bytes_shared: u64,
    /// The models in the shared RAM tier (at most [`MAX_STATUS_TIERS`]).
    #[serde(default)]
    pub tiers: Vec<TierStatus>,
}

/// One model in the shared RAM tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierStatus {
    /// The label of the client that first opened it (never opened by the daemon).
    pub label: String,
    /// Bytes held.
    pub bytes: u64,
    /// Open models (on all connections) that use it.
    pub refs: u64,
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
