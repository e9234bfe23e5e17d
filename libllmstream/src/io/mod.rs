//! The storage reader: io_uring with registered buffers and files, or a pool of threads doing
//! `pread`, over descriptors opened with `O_DIRECT` where the file system allows it.
//!
//! Which engine runs is decided once per process by a probe ([`probe::uring_support`]) unless the
//! configuration, the environment (`LLMSTREAM_IO_ENGINE`, `LLMSTREAM_DIRECT`) or a CLI flag forces
//! one. Every fallback taken is logged once and counted in [`crate::Stats`].

pub(crate) mod engine;
pub mod memlock;
pub mod probe;
mod source;
mod threads;
mod uring;

pub use source::Source;

use crate::error::{Error, Result};

/// Which reader engine to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// io_uring when the probe finds it usable, else the thread pool.
    #[default]
    Auto,
    /// io_uring or an error.
    Uring,
    /// A pool of threads doing pread.
    Threads,
}

/// Whether to open files with `O_DIRECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectChoice {
    /// `O_DIRECT` where the file system accepts it, buffered elsewhere.
    #[default]
    Auto,
    /// `O_DIRECT` or an error.
    On,
    /// Buffered reads through the page cache.
    Off,
}

impl std::str::FromStr for EngineChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "uring" | "io_uring" => Ok(Self::Uring),
            "threads" | "pread" => Ok(Self::Threads),
            _ => Err(Error::Config {
                field: "io engine",
                reason: format!("{s:?} is not one of auto, uring, threads"),
            }),
        }
    }
}

impl std::str::FromStr for DirectChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" | "1" | "true" => Ok(Self::On),
            "off" | "0" | "false" => Ok(Self::Off),
            _ => Err(Error::Config {
                field: "direct",
                reason: format!("{s:?} is not one of auto, on, off"),
            }),
        }
    }
}

/// Reader settings. Defaults were chosen with `llmstream bench` (see docs/architecture.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderConfig {
    /// Engine choice.
    pub engine: EngineChoice,
    /// O_DIRECT choice.
    pub direct: DirectChoice,
    /// Reads in flight at once.
    pub queue_depth: u32,
    /// Bytes per read request (split further at the device's max request size).
    pub request_size: usize,
    /// Staging slots.
    pub staging_buffers: usize,
    /// Bytes per staging slot.
    pub staging_buffer_size: usize,
    /// Threads of the pread pool.
    pub threads: usize,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        Self {
            engine: EngineChoice::Auto,
            direct: DirectChoice::Auto,
            queue_depth: 32,
            request_size: 1 << 20,
            staging_buffers: 8,
            staging_buffer_size: 8 << 20,
            threads: 8,
        }
    }
}

impl ReaderConfig {
    /// Apply `LLMSTREAM_IO_ENGINE`, `LLMSTREAM_DIRECT`, `LLMSTREAM_QUEUE_DEPTH` and
    /// `LLMSTREAM_REQUEST_SIZE` over these settings.
    pub fn with_env(mut self) -> Result<Self> {
        if let Ok(v) = std::env::var("LLMSTREAM_IO_ENGINE") {
            self.engine = v.parse()?;
        }
        if let Ok(v) = std::env::var("LLMSTREAM_DIRECT") {
            self.direct = v.parse()?;
        }
        if let Ok(v) = std::env::var("LLMSTREAM_QUEUE_DEPTH") {
            self.queue_depth = v.parse().map_err(|_| Error::Config {
                field: "LLMSTREAM_QUEUE_DEPTH",
                reason: format!("{v:?} is not a number"),
            })?;
        }
        if let Ok(v) = std::env::var("LLMSTREAM_REQUEST_SIZE") {
            self.request_size = parse_size(&v).ok_or_else(|| Error::Config {
                field: "LLMSTREAM_REQUEST_SIZE",
                reason: format!("{v:?} is not a size"),
            })?;
        }
        Ok(self)
    }

    /// Check ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::Config { field, reason });
        if !(1..=4096).contains(&self.queue_depth) {
            return bad(
                "queue_depth",
                format!("{} is outside 1..=4096", self.queue_depth),
            );
        }
        if self.request_size < 4096
            || self.request_size > (64 << 20)
            || !self.request_size.is_power_of_two()
        {
            return bad(
                "request_size",
                format!(
                    "{} is not a power of two in 4 KiB..=64 MiB",
                    self.request_size
                ),
            );
        }
        if !(1..=1024).contains(&self.staging_buffers) {
            return bad(
                "staging_buffers",
                format!("{} is outside 1..=1024", self.staging_buffers),
            );
        }
        if self.staging_buffer_size < self.request_size || self.staging_buffer_size > (1 << 30) {
            return bad(
                "staging_buffer_size",
                format!(
                    "{} must be at least request_size ({}) and at most 1 GiB",
                    self.staging_buffer_size, self.request_size
                ),
            );
        }
        if !(1..=256).contains(&self.threads) {
            return bad("threads", format!("{} is outside 1..=256", self.threads));
        }
        Ok(())
    }
}

/// Parse `512`, `64K`, `8M`, `24G`, `1T` (powers of 1024; a trailing `B`/`iB` is allowed).
pub fn parse_size(s: &str) -> Option<usize> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult): (&str, u64) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 1 << 10),
        'm' | 'M' => (&t[..t.len() - 1], 1 << 20),
        'g' | 'G' => (&t[..t.len() - 1], 1 << 30),
        't' | 'T' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let bytes = v * mult as f64;
    if bytes > usize::MAX as f64 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(bytes as usize)
}

/// The engine a reader runs, for stats and `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// io_uring with registered buffers (READ_FIXED) and files.
    UringFixed,
    /// io_uring with plain reads (buffer registration refused, e.g. by RLIMIT_MEMLOCK).
    Uring,
    /// The pread thread pool.
    Threads,
}

impl EngineKind {
    /// A stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::UringFixed => "io_uring_fixed",
            Self::Uring => "io_uring",
            Self::Threads => "threads",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64K"), Some(65536));
        assert_eq!(parse_size("24G"), Some(24 << 30));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("-1M"), None);
    }

    #[test]
    fn config_validation() {
        assert!(ReaderConfig::default().validate().is_ok());
        let bad = ReaderConfig {
            request_size: 3000,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = ReaderConfig {
            queue_depth: 0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
