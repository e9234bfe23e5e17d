//! The llmstreamd wire protocol, version 1 (described in `docs/daemon-protocol.md`).
//!
//! A connection carries frames in both directions: a little-endian `u32` payload length
//! (1..=`max_message_bytes`) followed by that many bytes of JSON. The client speaks first with
//! [`Request::Hello`] (magic and version); every request gets exactly one [`Response`]. A file
//! descriptor travels as `SCM_RIGHTS` ancillary data with the frame of [`Request::OpenModel`]
//! (the client's model file) and of [`Response::ModelOpened`] (the shared RAM tier's memfd).
//!
//! It lives in the library (the daemon re-exports it) because the library is the daemon's
//! client: [`crate::Context::open_model`] goes through the daemon when one is running.

pub mod client;
pub mod fdpass;
pub mod frame;
pub mod message;

pub use frame::{read_frame, write_frame, ProtoError, FRAME_HEADER_BYTES};
pub use message::{
    ErrorCode, Request, Response, StatusReport, TierGrant, TierStatus, MAGIC, MAX_STATUS_TIERS,
    VERSION,
};
