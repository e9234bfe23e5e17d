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

/// An error and its causes on one line, leaving out causes its message already holds.
pub fn chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// Parse sizes like `24G`, `512M`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    llmstream::io::parse_size(s).ok_or_else(|| format!("{s:?} is not a size (like 512M or 24G)"))
}
