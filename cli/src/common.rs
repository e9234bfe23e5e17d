//! Helpers shared by the subcommands.

use std::io::IsTerminal;

/// Logs to stderr, filtered by `LLMSTREAM_LOG` (default `warn`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LLMSTREAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The error and its causes on one line.
pub fn chain(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for c in e.chain().skip(1) {
        let c = c.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s
}

/// Parse sizes like `24G`, `512M`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    llmstream::io::parse_size(s).ok_or_else(|| format!("{s:?} is not a size (like 512M or 24G)"))
}
