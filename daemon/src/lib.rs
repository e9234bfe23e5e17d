//! llmstreamd: the privileged llmstream daemon. It owns raw devices (from an allowlist) and
//! serves many processes over a unix socket; clients pass file descriptors (the daemon never
//! opens a path a client names) and are admitted by their peer credentials.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod creds;
pub mod memfd;
pub use llmstream::daemon::proto;
pub mod server;
pub mod tier;
