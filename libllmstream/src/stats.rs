//! Counters of what a context moved, through which path, and which fallbacks it took.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// A snapshot of a context's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Backend name (`cuda`, `host`).
    pub backend: String,
    /// Engine name (`io_uring_fixed`, `io_uring`, `threads`).
    pub engine: String,
    /// Bytes read from storage with O_DIRECT.
    pub bytes_direct: u64,
    /// Bytes read through the page cache.
    pub bytes_buffered: u64,
    /// Bytes copied to device memory.
    pub bytes_to_device: u64,
    /// Bytes copied to host memory.
    pub bytes_to_host: u64,
    /// Bytes served from llmstreamd's shared RAM tier instead of storage.
    pub bytes_from_tier: u64,
    /// Read requests completed (one per [`crate::Context::read_async`] or layer load).
    pub requests: u64,
    /// Storage read operations issued.
    pub read_ops: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Nanoseconds the worker had work in flight.
    pub busy_ns: u64,
    /// Every fallback taken, once each, with its reason.
    pub fallbacks: Vec<String>,
}

/// Shared live counters.
#[derive(Debug, Default)]
pub(crate) struct StatsInner {
    pub bytes_direct: AtomicU64,
    pub bytes_buffered: AtomicU64,
    pub bytes_to_device: AtomicU64,
    pub bytes_to_host: AtomicU64,
    pub bytes_from_tier: AtomicU64,
    pub requests: AtomicU64,
    pub read_ops: AtomicU64,
    pub errors: AtomicU64,
    pub busy_ns: AtomicU64,
    pub fallbacks: Mutex<Vec<String>>,
    pub engine: Mutex<String>,
}

impl StatsInner {
    /// Record a fallback; logged the first time each reason is seen.
    pub fn fallback(&self, reason: String) {
        if let Ok(mut f) = self.fallbacks.lock() {
            if !f.contains(&reason) {
                tracing::warn!("{reason}");
                f.push(reason);
            }
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self, backend: &str) -> Stats {
        Stats {
            backend: backend.to_string(),
            engine: self.engine.lock().map(|e| e.clone()).unwrap_or_default(),
            bytes_direct: self.bytes_direct.load(Relaxed),
            bytes_buffered: self.bytes_buffered.load(Relaxed),
            bytes_to_device: self.bytes_to_device.load(Relaxed),
            bytes_to_host: self.bytes_to_host.load(Relaxed),
            bytes_from_tier: self.bytes_from_tier.load(Relaxed),
            requests: self.requests.load(Relaxed),
            read_ops: self.read_ops.load(Relaxed),
            errors: self.errors.load(Relaxed),
            busy_ns: self.busy_ns.load(Relaxed),
            fallbacks: self.fallbacks.lock().map(|f| f.clone()).unwrap_or_default(),
        }
    }
}
