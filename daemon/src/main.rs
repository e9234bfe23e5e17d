//! `llmstreamd`: load the configuration, then serve.

use anyhow::Context as _;
use clap::Parser;
use llmstreamd::{creds, server};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .with_context(|| format!("installing the handler of signal {sig}"))?;
    }
    let policy = creds::policy_for(&settings.group);
    let (listener, owned) = match activated_listener()? {
        Some(l) => {
            tracing::info!("using the socket passed by systemd");
            (l, None)
        }
        None => {
            let path = settings.socket.clone();
            let l = server::bind(&path, policy.group)?;
            (l, Some(path))
        }
    };
    tracing::info!(
        socket = %settings.socket.display(),
        group = %settings.group,
        max_clients = settings.max_clients,
        "llmstreamd ready"
    );
    let srv = server::Server::new(settings, listener, owned, policy)?;
    notify(sd_notify::NotifyState::Ready);
    srv.run(&stop, || notify(sd_notify::NotifyState::Stopping))?;
    tracing::info!("stopped");
    Ok(())
}

/// Tell systemd about a state change (a no-op when `NOTIFY_SOCKET` is not set).
fn notify(state: sd_notify::NotifyState) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(false, &[state]) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }
}

/// The listening socket systemd passed (socket activation), if any.
fn activated_listener() -> anyhow::Result<Option<UnixListener>> {
    if std::env::var_os("LISTEN_FDS").is_none() {
        return Ok(None);
    }
    let mut fds = sd_notify::listen_fds().context("reading LISTEN_FDS")?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    // SAFETY: `listen_fds` checked LISTEN_PID against this process, so `fd` (3, the first
    // passed descriptor) is an open socket systemd handed to us and nothing else in this
    // process owns it; it is taken exactly once, here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let l = UnixListener::from(owned);
    l.local_addr()
        .context("the passed descriptor is not a unix socket")?;
    Ok(Some(l))
}
