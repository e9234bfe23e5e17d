//! The llmstreamd wire protocol, version 1 (described in `docs/daemon-protocol.md`).
//!
//! A connection carries frames in both directions: a little-endian `u32` payload length
//! (1..=`max_message_bytes`) followed by that many bytes of JSON. The client speaks first with
//! [`Request::Hello`] (magic and version); every request gets exactly one [`Response`]. A file
//! descriptor travels as `SCM_RIGHTS` ancillary data with the frame of [`Request::OpenModel`].
//!
//! This module lives in the daemon crate for now: libllmstream does not depend on `nix`, and
//! the daemon depends on libllmstream, so the library cannot import it from here. When
//! libllmstream learns to use the daemon transparently, `frame`, `message` and `client` move
//! into the library unchanged (they depend on nothing daemon-specific).

pub mod client;
pub mod fdpass;
pub mod frame;
pub mod message;

pub use frame::{read_frame, write_frame, ProtoError, FRAME_HEADER_BYTES};
pub use message::{ErrorCode, Request, Response, StatusReport, MAGIC, VERSION};
