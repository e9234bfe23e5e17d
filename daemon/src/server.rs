//! The listener: one thread per admitted connection (at most `max_clients`), a shared
//! llmstream [`Context`] that opens the models clients hand over, and a drain on shutdown.

use crate::config::Settings;
use crate::creds::{self, Policy};
use crate::proto::fdpass::RecvFds;
use crate::proto::frame::{check_hello, decode_request, read_frame, write_frame, ProtoError};
use crate::proto::{
    ErrorCode, Request, Response, StatusReport, TierGrant, MAX_STATUS_TIERS, VERSION,
};
use crate::tier::{Key, Registry, TierRef};
use llmstream::{BackendChoice, Config, Context, Model};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How often the accept loop looks at the stop flag.
const STOP_POLL_MS: u16 = 100;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A socket operation failed.
    #[error("{op} {path}: {source}")]
    Socket {
        /// What was being done.
        op: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("{0} is in use by a running daemon")]
    InUse(PathBuf),
    /// The streaming context could not start.
    #[error("llmstream context: {0}")]
    Context(#[from] llmstream::Error),
    /// The accept loop failed.
    #[error("accept loop: {0}")]
    Accept(std::io::Error),
}

/// Counters shared by all connections.
#[derive(Debug, Default)]
struct Counters {
    clients: AtomicU64,
    models: AtomicU64,
    bytes_served: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn report(&self, tiers: &Registry) -> StatusReport {
        let t = tiers.snapshot(MAX_STATUS_TIERS);
        StatusReport {
            clients: self.clients.load(Ordering::Relaxed),
            models: self.models.load(Ordering::Relaxed),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            tier_budget: t.budget,
            tier_bytes: t.bytes,
            tier_bytes_shared: t.shared,
            tiers: t.tiers,
        }
    }
}

struct Shared {
    settings: Settings,
    ctx: Context,
    counters: Counters,
    /// The shared RAM tier.
    tiers: Arc<Registry>,
    /// Block devices clients may hand over, as (st_rdev) device numbers.
    allowed_rdev: Vec<u64>,
    /// A clone of each live connection, to shut its read side on drain.
    conns: Mutex<HashMap<u64, UnixStream>>,
}

/// A bound listener and what it serves with.
pub struct Server {
    listener: UnixListener,
    /// The socket file to remove at exit (None under socket activation).
    owned_path: Option<PathBuf>,
    policy: Policy,
    shared: Arc<Shared>,
}

/// Bind `path`: a stale socket file (nobody answering) is replaced, a live one is an error.
/// The socket gets mode 0660 and, when it exists, the owner group.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, ServerError> {
    let err = |op, source| ServerError::Socket {
        op,
        path: path.to_owned(),
        source,
    };
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(err(
                "refusing to replace non-socket",
                std::io::ErrorKind::AlreadyExists.into(),
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(|e| err("remove stale socket", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| err("chmod", e))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| err("chown", e))?;
    }
    Ok(listener)
}

impl Server {
    /// Prepare to serve on `listener` (`owned_path`: the socket file this process created).
    pub fn new(
        settings: Settings,
        listener: UnixListener,
        owned_path: Option<PathBuf>,
        policy: Policy,
    ) -> Result<Self, ServerError> {
        let ctx = Context::new(Config {
            backend: BackendChoice::Host,
            device: 0,
            reader: settings.reader.clone(),
        })?;
        let allowed_rdev = settings
            .allowed_devices
            .iter()
            .filter_map(|p| match std::fs::metadata(p) {
                Ok(m) if m.file_type().is_block_device() => Some(m.rdev()),
                Ok(_) => {
                    tracing::warn!(device = %p.display(), "allowed_devices entry is not a block device; ignored");
                    None
                }
                Err(e) => {
                    tracing::warn!(device = %p.display(), error = %e, "allowed_devices entry unavailable; ignored");
                    None
                }
            })
            .collect();
        Ok(Self {
            listener,
            owned_path,
            policy,
            shared: Arc::new(Shared {
                tiers: Registry::new(settings.ram_tier_budget),
                settings,
                ctx,
                counters: Counters::default(),
                allowed_rdev,
                conns: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Serve until `stop` is set, then drain: stop accepting, end every connection after the
    /// request it is serving, wait for them.
    pub fn run(self, stop: &AtomicBool, on_stopping: impl FnOnce()) -> Result<(), ServerError> {
        self.listener
            .set_nonblocking(true)
            .map_err(ServerError::Accept)?;
        let mut workers: Vec<JoinHandle<()>> = Vec::new();
        let mut next_id = 0u64;
        let result = loop {
            if stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            workers.retain(|w| !w.is_finished());
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(STOP_POLL_MS)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => break Err(ServerError::Accept(e.into())),
            }
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // ECONNABORTED, EMFILE and the like: log and go on.
                    tracing::warn!(error = %e, "accept failed");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            };
            next_id += 1;
            if let Some(w) = self.admit(stream, next_id) {
                workers.push(w);
            }
        };
        on_stopping();
        tracing::info!(connections = workers.len(), "draining");
        if let Ok(conns) = self.shared.conns.lock() {
            for c in conns.values() {
                let _ = c.shutdown(std::net::Shutdown::Read);
            }
        }
        for w in workers {
            let _ = w.join();
        }
        if let Some(p) = &self.owned_path {
            let _ = std::fs::remove_file(p);
        }
        result
    }

    /// Check a new connection; start its thread when admitted.
    fn admit(&self, stream: UnixStream, id: u64) -> Option<JoinHandle<()>> {
        let shared = &self.shared;
        let refuse = |code: ErrorCode, message: String| {
            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(?code, %message, "connection refused");
            let _ = stream.set_nonblocking(false);
            let _ = write_frame(&stream, &Response::Error { code, message }, &[]);
            // Discard what the client already sent (without waiting), so that closing does
            // not reset the connection before the client reads the answer.
            let _ = stream.set_nonblocking(true);
            let mut sink = [0u8; 4096];
            while matches!(std::io::Read::read(&mut &stream, &mut sink), Ok(n) if n > 0) {}
        };
        if let Err(why) = creds::check(&stream, &self.policy) {
            refuse(ErrorCode::PermissionDenied, why);
            return None;
        }
        let clone = match stream.try_clone() {
            Ok(c) => c,
            Err(e) => {
                refuse(ErrorCode::Internal, e.to_string());
                return None;
            }
        };
        {
            let Ok(mut conns) = shared.conns.lock() else {
                refuse(ErrorCode::Internal, "lock poisoned".into());
                return None;
            };
            if conns.len() >= shared.settings.max_clients {
                drop(conns);
                refuse(
                    ErrorCode::TooManyClients,
                    format!("{} connections served", shared.settings.max_clients),
                );
                return None;
            }
            conns.insert(id, clone);
            shared.counters.clients.fetch_add(1, Ordering::Relaxed);
        }
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("lls-client-{id}"))
            .spawn(move || {
                Connection::new(&shared).serve(stream);
                if let Ok(mut conns) = shared.conns.lock() {
                    conns.remove(&id);
                }
                shared.counters.clients.fetch_sub(1, Ordering::Relaxed);
            });
        match spawned {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %e, "cannot start a connection thread");
                if let Ok(mut conns) = self.shared.conns.lock() {
                    conns.remove(&id);
                }
                self.shared.counters.clients.fetch_sub(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// One connection's state.
struct Connection<'a> {
    shared: &'a Shared,
    hello: bool,
    /// Open models, each with its reference to a shared tier (dropped with it).
    models: HashMap<u64, (Model, Option<TierRef>)>,
    next_model: u64,
    /// A descriptor to send with the next response (a tier's memfd).
    pending_fd: Option<OwnedFd>,
}

impl<'a> Connection<'a> {
    fn new(shared: &'a Shared) -> Self {
        Self {
            shared,
            hello: false,
            models: HashMap::new(),
            next_model: 1,
            pending_fd: None,
        }
    }

    fn serve(mut self, mut stream: UnixStream) {
        let _ = stream.set_nonblocking(false);
        let max = self.shared.settings.max_message_bytes;
        let timeout = self.shared.settings.frame_timeout;
        loop {
            let mut fds: Vec<OwnedFd> = Vec::new();
            let mut src = FrameDeadline::new(&mut stream, timeout);
            let frame = read_frame(&mut src, max, &mut fds);
            src.finish();
            let response = match frame {
                Ok(None) => break,
                Ok(Some(payload)) => match decode_request(&payload) {
                    Ok(req) => self.handle(req, fds),
                    Err(e) => error_response(&e),
                },
                Err(ProtoError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    err(
                        ErrorCode::Malformed,
                        format!("frame not completed within {timeout:?}"),
                    )
                }
                Err(ProtoError::Io(e)) => {
                    tracing::debug!(error = %e, "connection read failed");
                    self.shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => error_response(&e),
            };
            let fatal = match &response {
                Response::Error { code, message } => {
                    self.shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(?code, %message, "request failed");
                    code.is_fatal()
                }
                _ => false,
            };
            let fd = self.pending_fd.take();
            let raw: Vec<_> = fd.iter().map(AsRawFd::as_raw_fd).collect();
            if write_frame(&stream, &response, &raw).is_err() || fatal {
                break;
            }
        }
        let n = self.models.len() as u64;
        self.shared.counters.models.fetch_sub(n, Ordering::Relaxed);
    }

    fn handle(&mut self, req: Request, fds: Vec<OwnedFd>) -> Response {
        let expects_fd = matches!(req, Request::OpenModel { .. });
        match (self.hello, &req) {
            (false, Request::Hello { .. }) => {}
            (false, _) | (true, Request::Hello { .. }) => {
                return err(ErrorCode::HelloExpected, "hello must come first, once")
            }
            _ => {}
        }
        if !expects_fd && !fds.is_empty() {
            return err(
                ErrorCode::BadDescriptor,
                format!(
                    "{} descriptors sent with a request that takes none",
                    fds.len()
                ),
            );
        }
        match req {
            Request::Hello { magic, version } => match check_hello(&magic, version) {
                Ok(()) => {
                    self.hello = true;
                    Response::Hello {
                        version: VERSION,
                        server: env!("CARGO_PKG_VERSION").to_owned(),
                    }
                }
                Err(e) => error_response(&e),
            },
            Request::OpenModel { label } => self.open_model(label, fds),
            Request::Status {} => Response::Status(self.shared.counters.report(&self.shared.tiers)),
            Request::Close { model } => match self.models.remove(&model) {
                Some(_) => {
                    self.shared.counters.models.fetch_sub(1, Ordering::Relaxed);
                    Response::Closed { model }
                }
                None => err(ErrorCode::UnknownModel, format!("no open model {model}")),
            },
        }
    }

    fn open_model(&mut self, label: String, mut fds: Vec<OwnedFd>) -> Response {
        if fds.len() != 1 {
            return err(
                ErrorCode::BadDescriptor,
                format!("open_model takes exactly one descriptor, got {}", fds.len()),
            );
        }
        if self.models.len() >= self.shared.settings.max_models_per_client {
            return err(
                ErrorCode::TooManyModels,
                format!(
                    "{} models open on this connection",
                    self.shared.settings.max_models_per_client
                ),
            );
        }
        let Some(fd) = fds.pop() else {
            return err(ErrorCode::BadDescriptor, "no descriptor");
        };
        let file = std::fs::File::from(fd);
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return err(ErrorCode::BadDescriptor, format!("fstat: {e}")),
        };
        let ft = meta.file_type();
        if ft.is_block_device() {
            if !self.shared.allowed_rdev.contains(&meta.rdev()) {
                return err(
                    ErrorCode::DeviceNotAllowed,
                    "block device not in allowed_devices",
                );
            }
        } else if !ft.is_file() {
            return err(
                ErrorCode::BadDescriptor,
                "descriptor is neither a regular file nor a block device",
            );
        }
        // The label only names the model; the daemon never opens it.
        let label_path = PathBuf::from(label.chars().take(256).collect::<String>());
        let model = match self
            .shared
            .ctx
            .open_file(file, &label_path)
            .and_then(Model::from_source)
        {
            Ok(m) => m,
            Err(e) => return err(ErrorCode::BadModel, e.to_string()),
        };
        let Ok(layers) = u32::try_from(model.layer_count()) else {
            return err(ErrorCode::BadModel, "too many layers");
        };
        let file_size = model.source().len();
        self.shared
            .counters
            .bytes_served
            .fetch_add(model.gguf().data_offset, Ordering::Relaxed);
        let (tier_ref, tier) = self.tier_for(&model, Key::of(&meta, file_size), &label_path);
        let id = self.next_model;
        self.next_model += 1;
        self.models.insert(id, (model, tier_ref));
        self.shared.counters.models.fetch_add(1, Ordering::Relaxed);
        tracing::info!(model = id, label = %label_path.display(), layers, file_size,
            tier_bytes = tier.map_or(0, |t| t.len), "model opened");
        Response::ModelOpened {
            model: id,
            layers,
            file_size,
            tier,
        }
    }

    /// The model's shared tier: a reference, its range, and (in `pending_fd`) its memfd; filled
    /// from this client's descriptor when this is the first client to open the file.
    fn tier_for(
        &mut self,
        model: &Model,
        key: Key,
        label: &Path,
    ) -> (Option<TierRef>, Option<TierGrant>) {
        let g = model.gguf();
        let page = llmstream::staging::page_size() as u64;
        let label = label.to_string_lossy();
        let Some(tref) = self.shared.tiers.acquire(key, &label, page, |available| {
            crate::tier::plan(
                g.data_offset,
                g.layers.iter().map(|l| l.span.end),
                model.source().len(),
                available,
                page,
            )
        }) else {
            return (None, None);
        };
        let shared = self.shared;
        let filled = tref.filled(|e| {
            match crate::memfd::fill(&shared.ctx, model.source(), e.file_offset, e.len) {
                Ok(fd) => {
                    shared
                        .counters
                        .bytes_served
                        .fetch_add(e.len, Ordering::Relaxed);
                    tracing::info!(label = %label, bytes = e.len, "shared RAM tier filled");
                    Some(fd)
                }
                Err(err) => {
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(label = %label, error = %err, "shared RAM tier not filled");
                    None
                }
            }
        });
        let Some((entry, fd)) = filled else {
            return (None, None);
        };
        let grant = TierGrant {
            file_offset: entry.file_offset,
            len: entry.len,
        };
        self.pending_fd = Some(fd);
        (Some(tref), Some(grant))
    }
}

/// A connection's byte source that waits without limit for a frame to begin, then applies
/// the frame timeout to the rest of it.
struct FrameDeadline<'s> {
    stream: &'s mut UnixStream,
    timeout: std::time::Duration,
    started: bool,
}

impl<'s> FrameDeadline<'s> {
    fn new(stream: &'s mut UnixStream, timeout: std::time::Duration) -> Self {
        Self {
            stream,
            timeout,
            started: false,
        }
    }

    /// Back to waiting without limit (between frames).
    fn finish(self) {
        if self.started {
            let _ = self.stream.set_read_timeout(None);
        }
    }
}

impl RecvFds for FrameDeadline<'_> {
    fn recv_fds(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> std::io::Result<usize> {
        let n = self.stream.recv_fds(buf, fds)?;
        if !self.started && n > 0 {
            self.started = true;
            self.stream.set_read_timeout(Some(self.timeout))?;
        }
        Ok(n)
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

fn error_response(e: &ProtoError) -> Response {
    err(e.code(), e.to_string())
}
