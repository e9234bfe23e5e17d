//! `llmstreamd`: load the configuration, then serve.

use anyhow::Context as _;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for an invalid configuration or command line.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser, Debug)]
#[command(version, about = "Privileged llmstream daemon")]
struct Args {
    /// Configuration file (default /etc/llmstream/llmstreamd.toml; missing default = defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen on this socket instead of the configured one.
    #[arg(long)]
    socket: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LLMSTREAMD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut settings = match llmstreamd::config::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("llmstreamd: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(s) = args.socket {
        settings.socket = s;
    }
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmstreamd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: llmstreamd::config::Settings) -> anyhow::Result<()> {
    tracing::info!(socket = %settings.socket.display(), "configuration loaded");
    Err(anyhow::anyhow!("serving is not built yet")).context("llmstreamd")
}
