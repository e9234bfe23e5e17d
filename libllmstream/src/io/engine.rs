//! The engine interface the streaming worker drives: push reads into staging slots, wait for
//! completions. Short reads are continued inside the engines; a completion reports fewer bytes
//! than asked only at end of file.

use super::threads::ThreadEngine;
use super::uring::UringEngine;
use super::{probe, EngineChoice, EngineKind, ReaderConfig};
use crate::error::{Error, Result};
use crate::staging::StagingPool;
use crate::stats::StatsInner;
use std::os::fd::RawFd;

/// One read into a staging slot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadOp {
    /// Descriptor to read from.
    pub fd: RawFd,
    /// Registered-file slot of `fd`, when the engine registered it.
    pub fixed_file: Option<u32>,
    /// File offset.
    pub offset: u64,
    /// Destination inside a staging slot.
    pub buf: *mut u8,
    /// Bytes to read.
    pub len: usize,
    /// Index of the staging slot (the registered buffer index).
    pub buf_index: u16,
    /// Caller's tag, returned in the completion.
    pub tag: u64,
}

// SAFETY: `buf` points into a staging slot that the worker owns for the whole life of the op
// (the worker never drops the pool or reuses a slot with reads in flight); sending the op to an
// engine thread only moves that exclusive access.
unsafe impl Send for ReadOp {}

/// The outcome of one [`ReadOp`].
#[derive(Debug)]
pub(crate) struct Completion {
    /// The op's tag.
    pub tag: u64,
    /// Bytes read (fewer than asked only at end of file), or the OS error.
    pub result: std::io::Result<usize>,
}

/// The engine in use.
// One engine per context: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Engine {
    Uring(UringEngine),
    Threads(ThreadEngine),
}

impl Engine {
    /// Build the engine `cfg` asks for over the staging slots of `pool`, recording fallbacks.
    pub fn new(cfg: &ReaderConfig, pool: &StagingPool, stats: &StatsInner) -> Result<Self> {
        let want_uring = match cfg.engine {
            EngineChoice::Threads => false,
            EngineChoice::Uring => {
                if let Err(reason) = probe::uring_support() {
                    return Err(Error::UringUnavailable {
                        reason: reason.clone(),
                    });
                }
                true
            }
            EngineChoice::Auto => match probe::uring_support() {
                Ok(()) => true,
                Err(reason) => {
                    stats.fallback(format!(
                        "io_uring unavailable ({reason}); using the pread thread pool"
                    ));
                    false
                }
            },
        };
        if want_uring {
            match UringEngine::new(cfg, pool, stats) {
                Ok(e) => return Ok(Engine::Uring(e)),
                Err(e) if cfg.engine == EngineChoice::Auto => {
                    stats.fallback(format!(
                        "io_uring setup failed ({e}); using the pread thread pool"
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Engine::Threads(ThreadEngine::new(cfg.threads)?))
    }

    /// Which engine this is.
    pub fn kind(&self) -> EngineKind {
        match self {
            Engine::Uring(u) => u.kind(),
            Engine::Threads(_) => EngineKind::Threads,
        }
    }

    /// Register `fd` for fixed-file reads, if the engine supports it; returns the slot.
    pub fn register_file(&mut self, fd: RawFd) -> Option<u32> {
        match self {
            Engine::Uring(u) => u.register_file(fd),
            Engine::Threads(_) => None,
        }
    }

    /// Release a slot from [`Engine::register_file`].
    pub fn unregister_file(&mut self, slot: u32) {
        if let Engine::Uring(u) = self {
            u.unregister_file(slot);
        }
    }

    /// Queue a read.
    pub fn push(&mut self, op: ReadOp) {
        match self {
            Engine::Uring(u) => u.push(op),
            Engine::Threads(t) => t.push(op),
        }
    }

    /// Reads queued or in flight.
    pub fn outstanding(&self) -> usize {
        match self {
            Engine::Uring(u) => u.outstanding(),
            Engine::Threads(t) => t.outstanding(),
        }
    }

    /// Submit what is queued and block until at least one read completes (returns at once when
    /// nothing is outstanding); completions are appended to `out`.
    pub fn wait(&mut self, out: &mut Vec<Completion>) -> Result<()> {
        match self {
            Engine::Uring(u) => u.wait(out),
            Engine::Threads(t) => t.wait(out),
        }
    }
}
