//! Where a CPU layer's time goes, when `LLMSTREAM_PROFILE=1` is set: wall time per phase of
//! [`crate::forward::layer_forward`], summed over calls until [`take`]. Off, it costs one
//! relaxed load per layer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Phases of a layer, in order.
pub const PHASES: [&str; 9] = [
    "attn_norm",
    "qkv",
    "rope_kv",
    "attention",
    "attn_out",
    "ffn_norm",
    "gate_up",
    "swiglu",
    "down",
];

static NANOS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];
static LAYERS: AtomicU64 = AtomicU64::new(0);

/// Whether profiling is on (`LLMSTREAM_PROFILE` set to anything but `0` or empty).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("LLMSTREAM_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// A lap timer over the phases of one layer (inert when profiling is off).
pub(crate) struct Lap(Option<(Instant, usize)>);

impl Lap {
    pub(crate) fn start() -> Self {
        if enabled() {
            LAYERS.fetch_add(1, Ordering::Relaxed);
            Lap(Some((Instant::now(), 0)))
        } else {
            Lap(None)
        }
    }

    /// The current phase ended now; the next one starts.
    pub(crate) fn next(&mut self) {
        if let Some((t, i)) = self.0.as_mut() {
            let now = Instant::now();
            let ns = u64::try_from(now.duration_since(*t).as_nanos()).unwrap_or(u64::MAX);
            if let Some(c) = NANOS.get(*i) {
                c.fetch_add(ns, Ordering::Relaxed);
            }
            *t = now;
            *i += 1;
        }
    }
}

/// Milliseconds per phase and the number of layer calls since the last call; resets.
pub fn take() -> (Vec<(&'static str, f64)>, u64) {
    let v = PHASES
        .iter()
        .zip(NANOS.iter())
        .map(|(name, c)| {
            #[allow(clippy::cast_precision_loss)] // nanosecond sums far below 2^53
            let ms = c.swap(0, Ordering::Relaxed) as f64 / 1e6;
            (*name, ms)
        })
        .collect();
    (v, LAYERS.swap(0, Ordering::Relaxed))
}
