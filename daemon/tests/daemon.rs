//! llmstreamd end to end: the real binary on a temporary socket, clients passing descriptors of a
//! synthetic GGUF, a flood of malformed connections beside a working client, limits, SIGTERM,
//! and the shared RAM tier seen from client processes (this test binary run again as a client:
//! see `child_client`).
#![allow(clippy::unwrap_used)]
// Test-data generators narrow values they reduced first (`% 251`, `>> 33`).
#![allow(clippy::cast_possible_truncation)]

use llmstreamd::proto::client::Client;
use llmstreamd::proto::frame::{decode_response, encode, read_frame, ProtoError};
use llmstreamd::proto::{ErrorCode, Request, Response, MAGIC};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// A minimal GGUF v3 writer: `layers` blocks of two F32 tensors, plus token_embd and output_norm.
// ---------------------------------------------------------------------------------------------

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn synthetic_gguf(layers: u32) -> Vec<u8> {
    synthetic_gguf_sized(layers, 48)
}

/// As [`synthetic_gguf`], with `ffn_elems` f32 values in each layer's large tensor.
fn synthetic_gguf_sized(layers: u32, ffn_elems: u64) -> Vec<u8> {
    const F32: u32 = 0;
    const ALIGN: usize = 32;
    let mut tensors: Vec<(String, u64)> = vec![("token_embd.weight".into(), 64)];
    for l in 0..layers {
        tensors.push((format!("blk.{l}.attn_norm.weight"), 16));
        tensors.push((format!("blk.{l}.ffn_up.weight"), ffn_elems));
    }
    tensors.push(("output_norm.weight".into(), 16));
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend(2u64.to_le_bytes());
    put_str(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes());
    put_str(&mut out, "llama");
    put_str(&mut out, "llama.block_count");
    out.extend(4u32.to_le_bytes());
    out.extend(layers.to_le_bytes());
    let mut offset = 0u64;
    for (name, elems) in &tensors {
        put_str(&mut out, name);
        out.extend(1u32.to_le_bytes());
        out.extend(elems.to_le_bytes());
        out.extend(F32.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset = (offset + elems * 4).next_multiple_of(ALIGN as u64);
    }
    let data_start = out.len().next_multiple_of(ALIGN);
    out.resize(data_start, 0);
    out.extend((0..offset).map(|i| (i % 251) as u8));
    out
}

// ---------------------------------------------------------------------------------------------
// The daemon under test.
// ---------------------------------------------------------------------------------------------

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(config: &str) -> Daemon {
        Daemon::start_with(config, |_| {})
    }

    /// Start the daemon on a temporary socket; `adjust` may change the command first.
    fn start_with(config: &str, adjust: impl FnOnce(&mut Command)) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let cfg = dir.path().join("d.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmstreamd"));
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--socket")
            .arg(&socket)
            .env("LLMSTREAMD_LOG", "warn")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null());
        adjust(&mut cmd);
        let child = cmd.spawn().unwrap();
        let mut d = Daemon {
            child,
            socket,
            _dir: dir,
        };
        d.wait_up();
        d
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&self.socket).is_err() {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "daemon exited early"
            );
            assert!(Instant::now() < deadline, "daemon did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket).unwrap()
    }

    fn raw(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn model_file(dir: &Path, layers: u32) -> (PathBuf, std::fs::File) {
    let p = dir.join(format!("m{layers}.gguf"));
    std::fs::write(&p, synthetic_gguf(layers)).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    (p, f)
}

/// The next response on a raw stream, `None` at end of stream (or a reset).
fn next_response(s: &mut UnixStream) -> Option<Response> {
    match read_frame(s, 1 << 20, &mut Vec::new()) {
        Ok(Some(p)) => Some(decode_response(&p).unwrap()),
        Ok(None) => None,
        Err(ProtoError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("bad response stream: {e}"),
    }
}

fn code_of(r: Option<Response>) -> Option<ErrorCode> {
    match r {
        Some(Response::Error { code, .. }) => Some(code),
        _ => None,
    }
}

/// Wait (bounded) until the daemon serves `n` connections.
fn wait_clients(c: &mut Client, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.status().unwrap().clients != n {
        assert!(Instant::now() < deadline, "clients never reached {n}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn remote_code(e: ProtoError) -> ErrorCode {
    match e {
        ProtoError::Remote { code, .. } => code,
        other => panic!("expected a daemon error, got {other}"),
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn open_model_by_fd_status_close() {
    let d = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = model_file(dir.path(), 3);
    let mut c = d.client();
    assert_eq!(c.server, env!("CARGO_PKG_VERSION"));
    let m = c.open_model(&file, "m3.gguf").unwrap();
    assert_eq!(m.layers, 3);
    assert_eq!(m.file_size, std::fs::metadata(&path).unwrap().len());
    // The daemon reads by position: the offset the client shares with it has not moved.
    assert_eq!(std::io::Seek::stream_position(&mut &file).unwrap(), 0);
    let (_, f5) = model_file(dir.path(), 5);
    let m5 = c.open_model(&f5, "m5.gguf").unwrap();
    assert_eq!(m5.layers, 5);
    assert_ne!(m5.model, m.model);

    wait_clients(&mut c, 1);
    let s = c.status().unwrap();
    assert_eq!((s.clients, s.models), (1, 2));
    assert!(s.bytes_served > 0);
    c.close(m.model).unwrap();
    assert_eq!(c.status().unwrap().models, 1);
    assert_eq!(
        remote_code(c.close(m.model).unwrap_err()),
        ErrorCode::UnknownModel
    );

    // Not a model, a directory, no descriptor: typed errors, the connection goes on.
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "hello, not a gguf").unwrap();
    let e = c
        .open_model(&std::fs::File::open(&text).unwrap(), "t.txt")
        .unwrap_err();
    assert_eq!(remote_code(e), ErrorCode::BadModel);
    let e = c
        .open_model(&std::fs::File::open(dir.path()).unwrap(), "dir")
        .unwrap_err();
    assert_eq!(remote_code(e), ErrorCode::BadDescriptor);
    let e = c
        .call(&Request::OpenModel { label: "x".into() }, None)
        .unwrap_err();
    assert_eq!(remote_code(e), ErrorCode::BadDescriptor);
    let e = c.call(&Request::Status {}, Some(&file)).unwrap_err();
    assert_eq!(remote_code(e), ErrorCode::BadDescriptor);
    // The label is only a name: a path that does not exist changes nothing.
    let m = c.open_model(&file, "/nonexistent/never-opened").unwrap();
    assert_eq!(m.layers, 3);
    // A second client sees the daemon-wide counters.
    let mut c2 = d.client();
    wait_clients(&mut c2, 2);
    assert_eq!(c2.status().unwrap().models, 2);
    drop(c);
    // The first client's models go with its connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c2.status().unwrap().models != 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn handshake_errors_are_typed_and_close_the_connection() {
    let d = Daemon::start("");
    let cases: [(Request, ErrorCode); 4] = [
        (
            Request::Hello {
                magic: MAGIC.into(),
                version: 99,
            },
            ErrorCode::UnsupportedVersion,
        ),
        (
            Request::Hello {
                magic: "http".into(),
                version: 1,
            },
            ErrorCode::BadMagic,
        ),
        (Request::Status {}, ErrorCode::HelloExpected),
        (Request::Close { model: 1 }, ErrorCode::HelloExpected),
    ];
    for (req, want) in cases {
        let mut s = d.raw();
        s.write_all(&encode(&req).unwrap()).unwrap();
        assert_eq!(code_of(next_response(&mut s)), Some(want), "{req:?}");
        assert!(next_response(&mut s).is_none(), "still open after {req:?}");
    }
    // A second hello is refused too.
    let mut s = d.raw();
    s.write_all(&encode(&Request::hello()).unwrap()).unwrap();
    assert!(matches!(
        next_response(&mut s),
        Some(Response::Hello { version: 1, .. })
    ));
    s.write_all(&encode(&Request::hello()).unwrap()).unwrap();
    assert_eq!(
        code_of(next_response(&mut s)),
        Some(ErrorCode::HelloExpected)
    );
}

/// A bad connection of kind `i % 8`, with `rng` for the random parts. Returns the code the
/// daemon must answer (None: it may answer anything or just close).
fn bad_connection(d: &Daemon, i: u32, rng: &mut u64) -> Option<ErrorCode> {
    let mut next = || {
        *rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*rng >> 33) as u32
    };
    let mut s = d.raw();
    let hello = encode(&Request::hello()).unwrap();
    let (bytes, want): (Vec<u8>, Option<ErrorCode>) = match i % 8 {
        // Oversized: a length above 64 KiB, header only.
        0 => (
            (65 * 1024 + next() % (1 << 30)).to_le_bytes().to_vec(),
            Some(ErrorCode::TooLarge),
        ),
        // Truncated: the header promises more than comes before the end of stream.
        1 => {
            let mut b = hello.clone();
            b.truncate(4 + (next() as usize % (hello.len() - 4)));
            (b, Some(ErrorCode::Malformed))
        }
        // Truncated inside the header.
        2 => (vec![7, 0], Some(ErrorCode::Malformed)),
        // A frame whose payload is not JSON.
        3 => {
            let n = 1 + next() % 200;
            let mut b = n.to_le_bytes().to_vec();
            b.extend((0..n).map(|_| next().to_le_bytes()[0] | 0x80));
            (b, Some(ErrorCode::Malformed))
        }
        // JSON of the wrong shape.
        4 => {
            let p = br#"{"type":"open_model","label":3}"#;
            let mut b = u32::try_from(p.len()).unwrap().to_le_bytes().to_vec();
            b.extend(p);
            (b, Some(ErrorCode::Malformed))
        }
        // A zero-length frame after a good hello.
        5 => {
            let mut b = hello.clone();
            b.extend([0, 0, 0, 0]);
            (b, Some(ErrorCode::Malformed))
        }
        // A good hello, then a truncated status.
        6 => {
            let mut b = hello.clone();
            let st = encode(&Request::Status {}).unwrap();
            b.extend(&st[..st.len() - 1]);
            (b, Some(ErrorCode::Malformed))
        }
        // Random bytes.
        _ => {
            let n = 1 + next() % 64;
            ((0..n).map(|_| next().to_le_bytes()[0]).collect(), None)
        }
    };
    s.write_all(&bytes).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut last = None;
    // Read to the end: responses, then end of stream (the daemon closes the connection).
    while let Some(r) = next_response(&mut s) {
        last = Some(r);
    }
    if let Some(w) = want {
        assert_eq!(code_of(last), Some(w), "case {i}");
    }
    want
}

#[test]
fn malformed_connections_leave_others_working() {
    let d = Daemon::start("ram_tier_budget = \"64M\"\n");
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = model_file(dir.path(), 2);
    let mut good = d.client();
    let m = good.open_model(&file, "good").unwrap();
    // Another client process streams a model through the daemon's tier all along.
    let big = big_model(dir.path());
    let want = expected_hash(&big);
    let mut streamer = ChildClient::spawn(
        &std::env::current_exe().unwrap(),
        "stream",
        &[
            ("CHILD_MODEL", big.as_os_str()),
            ("CHILD_PASSES", "0".as_ref()),
            ("LLMSTREAM_SOCKET", d.socket.as_os_str()),
        ],
    );
    assert!(streamer.pass().via_daemon);
    let streamer_pid = nix::unistd::Pid::from_raw(i32::try_from(streamer.pid()).unwrap());
    let passes = std::thread::spawn(move || {
        let mut v = Vec::new();
        while let Some(l) = streamer.try_line() {
            v.push(l);
        }
        v
    });
    let mut rng = 0x1234_5678_u64;
    let mut typed = 0u64;
    for i in 0..1000 {
        typed += u64::from(bad_connection(&d, i, &mut rng).is_some());
        if i % 10 == 0 {
            let s = good.status().unwrap();
            assert_eq!(s.models, 2);
        }
    }
    let s = good.status().unwrap();
    assert_eq!(s.models, 2);
    assert!(s.errors >= typed, "{s:?}, {typed} typed errors sent");
    // The streaming client saw the right bytes on every pass, from the tier, throughout.
    nix::sys::signal::kill(streamer_pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let lines = passes.join().unwrap();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(l.contains(&want) && l.ends_with("via_daemon true"), "{l}");
    }
    println!("{} streaming passes during the flood", lines.len());
    wait_status(&mut good, "streamer gone", |s| s.models == 1);
    // The good client's model is still there.
    good.close(m.model).unwrap();
    let again = good.open_model(&file, "again").unwrap();
    assert_eq!(again.layers, 2);
}

#[test]
fn limits_on_clients_and_models() {
    let d = Daemon::start("[limits]\nmax_clients = 2\nmax_models_per_client = 1\n");
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = model_file(dir.path(), 1);
    let mut a = d.client();
    // The start-up probe's connection may still count for a moment.
    wait_clients(&mut a, 1);
    let b = d.client();
    let e = Client::connect(&d.socket).unwrap_err();
    assert_eq!(remote_code(e), ErrorCode::TooManyClients);
    a.open_model(&file, "one").unwrap();
    let e = a.open_model(&file, "two").unwrap_err();
    assert_eq!(remote_code(e), ErrorCode::TooManyModels);
    drop(b);
    wait_clients(&mut a, 1);
    d.client();
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut d = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = model_file(dir.path(), 2);
    let mut c = d.client();
    c.open_model(&file, "m").unwrap();
    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!d.socket.exists(), "socket file left behind");
    assert!(c.status().is_err());
}

#[test]
fn invalid_config_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    for (text, field) in [
        ("[limits]\nmax_clientz = 3\n", "max_clientz"),
        ("ram_tier_budget = \"lots\"\n", "ram_tier_budget"),
        ("[reader]\nqueue_depth = 0\n", "reader.queue_depth"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_llmstreamd"))
            .arg("--config")
            .arg(&cfg)
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{text}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_llmstreamd"))
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn a_live_socket_is_not_stolen() {
    let d = Daemon::start("");
    let out = Command::new(env!("CARGO_BIN_EXE_llmstreamd"))
        .arg("--config")
        .arg("/dev/null")
        .arg("--socket")
        .arg(&d.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    d.client().status().unwrap();
}

#[test]
fn real_model_through_the_daemon() {
    let shared = std::env::var_os("LLMSTREAM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let path = shared.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let Ok(file) = std::fs::File::open(&path) else {
        println!("skipped: {} not present", path.display());
        return;
    };
    let d = Daemon::start("");
    let m = d.client().open_model(&file, "smollm2").unwrap();
    assert_eq!(m.layers, 30);
    assert_eq!(m.file_size, file.metadata().unwrap().len());
}

#[test]
fn sd_notify_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut d = Daemon::start_with("", |c| {
        c.env("NOTIFY_SOCKET", &notify_path);
    });
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\n");
    assert_eq!(d.terminate().code(), Some(0));
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1\n");
}

#[test]
fn socket_activation_serves_the_passed_listener() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd = listener.as_raw_fd();
    let cfg = dir.path().join("d.toml");
    std::fs::write(&cfg, "").unwrap();
    let mut cmd = Command::new("/bin/sh");
    // `exec` keeps the shell's pid, so LISTEN_PID=$$ names the daemon, as systemd would.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" --config \"$1\" --socket \"$2\"")
        .arg(env!("CARGO_BIN_EXE_llmstreamd"))
        .arg(&cfg)
        .arg(dir.path().join("not-this-one.sock"))
        .env("LLMSTREAMD_LOG", "warn")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    // SAFETY: the closure runs between fork and exec and calls only dup2 and fcntl, which are
    // async-signal-safe; it captures a plain integer.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(listener);
    let mut d = Daemon {
        child,
        socket: path.clone(),
        _dir: dir,
    };
    d.wait_up();
    let mut c = d.client();
    c.status().unwrap();
    assert_eq!(d.terminate().code(), Some(0));
    // systemd owns an activated socket's file: the daemon leaves it alone.
    assert!(path.exists());
    assert!(!path.with_file_name("not-this-one.sock").exists());
}

#[test]
fn block_devices_only_from_the_allowlist() {
    // Opening a block device read-only changes nothing; it needs root (or the disk group).
    let dev = std::fs::read_dir("/dev").ok().and_then(|rd| {
        rd.flatten().map(|e| e.path()).find(|p| {
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
                && std::fs::File::open(p).is_ok()
        })
    });
    let Some(dev) = dev else {
        println!("skipped: no block device readable by this user");
        return;
    };
    let file = std::fs::File::open(&dev).unwrap();
    let d = Daemon::start("");
    let e = d.client().open_model(&file, "dev").unwrap_err();
    assert_eq!(
        remote_code(e),
        ErrorCode::DeviceNotAllowed,
        "{}",
        dev.display()
    );
    // Allowed: it gets past the allowlist (whether it holds a GGUF is another matter).
    let d = Daemon::start(&format!(
        "allowed_devices = [{:?}]\n",
        dev.display().to_string()
    ));
    match d.client().open_model(&file, "dev") {
        Ok(_) => {}
        Err(e) => assert_eq!(remote_code(e), ErrorCode::BadModel),
    }
}

#[test]
fn a_stalled_frame_is_dropped_idle_clients_are_not() {
    let d = Daemon::start("[limits]\nframe_timeout_ms = 50\n");
    let mut idle = d.client();
    // Half a header, then nothing: the daemon gives up on this connection.
    let mut stalled = d.raw();
    stalled.write_all(&[9, 0]).unwrap();
    // The daemon says why and closes (were it to wait on, this read would time out and fail).
    assert_eq!(
        code_of(next_response(&mut stalled)),
        Some(ErrorCode::Malformed)
    );
    assert!(next_response(&mut stalled).is_none());
    // Idle longer than the frame timeout between frames is fine.
    std::thread::sleep(Duration::from_millis(120));
    idle.status().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Client processes: this test binary run again as `child_client` (an ignored test, run only
// when a test spawns it), streaming a model through libllmstream as any frontend would.
// ---------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "LLMSTREAMD_TEST_CHILD";

/// FNV-1a over bytes, continued from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The helper process behind the client tests. `LLMSTREAMD_TEST_CHILD` picks the role:
/// `stream`: stream every layer of `CHILD_MODEL` with a host context `CHILD_PASSES` times (0:
///   until killed), printing the hash of each pass and where the bytes came from, then wait
///   for stdin to close;
/// `hello`: connect to `LLMSTREAM_SOCKET` and print whether the daemon admitted it.
#[test]
#[ignore = "helper process of the client tests; runs only when a test spawns it"]
fn child_client() {
    let role = std::env::var(CHILD_ENV).unwrap();
    match role.as_str() {
        "stream" => {
            let path = PathBuf::from(std::env::var_os("CHILD_MODEL").unwrap());
            let passes: u64 = std::env::var("CHILD_PASSES").unwrap().parse().unwrap();
            let ctx = llmstream::Context::new(llmstream::Config {
                backend: llmstream::BackendChoice::Host,
                ..Default::default()
            })
            .unwrap();
            let model = ctx.open_model(&path).unwrap();
            let mut pass = 0;
            while passes == 0 || pass < passes {
                let mut h = FNV_START;
                for i in 0..model.layer_count() {
                    let buf = model
                        .load_layer_owned(&ctx, i, llmstream::BufferKind::Host)
                        .unwrap();
                    h = buf.with_host_slice(|b| fnv(h, b)).unwrap();
                }
                pass += 1;
                println!(
                    "CHILD pass {pass} hash {h:016x} tier {} from_tier {} via_daemon {}",
                    model.source().shared_tier_bytes(),
                    ctx.stats().bytes_from_tier,
                    model.source().via_daemon()
                );
            }
            println!("CHILD done");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        "hello" => {
            let socket = PathBuf::from(std::env::var_os("LLMSTREAM_SOCKET").unwrap());
            match Client::connect(&socket) {
                Ok(_) => println!("CHILD hello ok"),
                Err(ProtoError::Remote { code, .. }) => println!("CHILD hello refused {code:?}"),
                Err(e) => println!("CHILD hello error {e}"),
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// A running `child_client`.
struct ChildClient {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

/// One streaming pass as a child reported it.
#[derive(Debug, PartialEq, Eq)]
struct Pass {
    hash: String,
    tier: u64,
    from_tier: u64,
    via_daemon: bool,
}

impl ChildClient {
    /// Start `child_client` as `exe` (this binary or a copy) in `role`.
    fn spawn(exe: &Path, role: &str, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        Self::spawn_with(exe, role, env, |_| {})
    }

    fn spawn_with(
        exe: &Path,
        role: &str,
        env: &[(&str, &std::ffi::OsStr)],
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let mut cmd = Command::new(exe);
        cmd.args(["--ignored", "--exact", "child_client", "--nocapture"])
            .arg("--test-threads=1")
            .env(CHILD_ENV, role)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        adjust(&mut cmd);
        // A fresh copy of the executable (a_peer_outside_the_owner_group_is_refused) can be
        // busy for a moment: another test thread's fork inherits the copy's open descriptor
        // until that child execs, and exec then fails with ETXTBSY. Try again briefly.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => break r.unwrap(),
            }
        };
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        Self { child, out }
    }

    /// The next line the child printed after `CHILD ` (the harness prints other lines).
    fn line(&mut self) -> String {
        match self.try_line() {
            Some(l) => l,
            None => panic!("child ended: {:?}", self.child.wait()),
        }
    }

    /// [`ChildClient::line`], `None` at the end of the child's output.
    fn try_line(&mut self) -> Option<String> {
        loop {
            let mut l = String::new();
            if std::io::BufRead::read_line(&mut self.out, &mut l).unwrap() == 0 {
                return None;
            }
            // The harness may print "test child_client ... " before it, on the same line.
            if let Some(at) = l.find("CHILD ") {
                return Some(l.trim_end()[at + "CHILD ".len()..].to_owned());
            }
        }
    }

    fn pass(&mut self) -> Pass {
        let l = self.line();
        let w: Vec<&str> = l.split(' ').collect();
        assert_eq!(
            (w[0], w[2], w[4], w[6], w[8]),
            ("pass", "hash", "tier", "from_tier", "via_daemon"),
            "{l}"
        );
        Pass {
            hash: w[3].to_owned(),
            tier: w[5].parse().unwrap(),
            from_tier: w[7].parse().unwrap(),
            via_daemon: w[9].parse().unwrap(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Close stdin (the child exits) and wait for a zero exit.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "{st:?}");
    }
}

impl Drop for ChildClient {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The hash a correct client computes for `path`: its layers' bytes, read here with std.
fn expected_hash(path: &Path) -> String {
    let ctx = llmstream::Context::new(llmstream::Config {
        backend: llmstream::BackendChoice::Host,
        ..Default::default()
    })
    .unwrap();
    // `open` + `from_source`: never the daemon path.
    let model = llmstream::Model::from_source(ctx.open(path).unwrap()).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let mut h = FNV_START;
    for i in 0..model.layer_count() {
        let span = &model.layer(i).unwrap().span;
        h = fnv(
            h,
            &bytes[usize::try_from(span.start).unwrap()..usize::try_from(span.end).unwrap()],
        );
    }
    format!("{h:016x}")
}

/// `/proc/<pid>/smaps_rollup` field `name` in bytes.
fn smaps(pid: u32, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in smaps_rollup"));
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().unwrap();
    kb * 1024
}

/// Wait (bounded) until the daemon's status satisfies `ok`; the last status.
fn wait_status(
    c: &mut Client,
    what: &str,
    ok: impl Fn(&llmstreamd::proto::StatusReport) -> bool,
) -> llmstreamd::proto::StatusReport {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = c.status().unwrap();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A synthetic model of about 4 x 4 MiB of layers.
fn big_model(dir: &Path) -> PathBuf {
    let p = dir.join("big.gguf");
    std::fs::write(&p, synthetic_gguf_sized(4, 1 << 20)).unwrap();
    p
}

/// Memfds of the tier held open by process `pid`.
fn tier_memfds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:llmstream-tier"))
        })
        .count()
}

#[test]
fn two_client_processes_share_one_tier_copy() {
    let d = Daemon::start("ram_tier_budget = \"64M\"\n");
    let dir = tempfile::tempdir().unwrap();
    let model = big_model(dir.path());
    let want = expected_hash(&model);
    let exe = std::env::current_exe().unwrap();
    let e = [
        ("CHILD_MODEL", model.as_os_str()),
        ("CHILD_PASSES", std::ffi::OsStr::new("1")),
        ("LLMSTREAM_SOCKET", d.socket.as_os_str()),
    ];
    let mut a = ChildClient::spawn(&exe, "stream", &e);
    let mut b = ChildClient::spawn(&exe, "stream", &e);
    let (pa, pb) = (a.pass(), b.pass());
    assert_eq!(a.line(), "done");
    assert_eq!(b.line(), "done");
    // Both streamed the right bytes, through the daemon, from a mapped tier.
    assert_eq!(pa.hash, want);
    assert_eq!(pb.hash, want);
    assert!(pa.via_daemon && pb.via_daemon);
    assert!(pa.tier > 0 && pa.tier == pb.tier, "{pa:?} {pb:?}");
    assert!(pa.from_tier > 0 && pa.from_tier == pb.from_tier);

    // One copy in the daemon: the tier bytes are one model's tier, however many clients.
    let mut c = d.client();
    let s = c.status().unwrap();
    let page = 4096;
    assert_eq!(s.tiers.len(), 1, "{s:?}");
    assert_eq!(s.tiers[0].refs, 2);
    assert_eq!(s.tiers[0].bytes, pa.tier);
    assert_eq!(s.tier_bytes, pa.tier.next_multiple_of(page));
    assert_eq!(s.models, 2);
    // The daemon keeps no mapping, only the memfd (one).
    let dpid = d.child.id();
    assert_eq!(tier_memfds(dpid), 1);
    // Each client maps all of it (mlocked, so resident), and the pages are shared: each
    // process's proportional share of shmem is about half the tier, and the pages it maps
    // shared with another process cover the whole tier.
    for pid in [a.pid(), b.pid()] {
        let pss = smaps(pid, "Pss_Shmem");
        let shared = smaps(pid, "Shared_Clean") + smaps(pid, "Shared_Dirty");
        println!(
            "client {pid}: Pss_Shmem {pss} Shared {shared} tier {}",
            pa.tier
        );
        assert!(
            shared >= pa.tier,
            "pid {pid}: shared {shared} < tier {}",
            pa.tier
        );
        assert!(
            pss * 4 < pa.tier * 3,
            "pid {pid}: Pss_Shmem {pss} not shared"
        );
        assert!(
            pss * 4 > pa.tier,
            "pid {pid}: Pss_Shmem {pss}: tier not mapped"
        );
    }
    a.finish();
    b.finish();
    // The last client gone, the tier goes.
    let s = wait_status(&mut c, "tier released", |s| s.tier_bytes == 0);
    assert!(s.tiers.is_empty() && s.models == 0);
    assert_eq!(tier_memfds(dpid), 0);

    // In-process (daemon path off) gives the same bytes.
    let mut p = ChildClient::spawn(
        &exe,
        "stream",
        &[e[0], e[1], ("LLMSTREAM_SOCKET", "none".as_ref())],
    );
    let pp = p.pass();
    assert_eq!(
        pp,
        Pass {
            hash: want,
            tier: 0,
            from_tier: 0,
            via_daemon: false
        }
    );
    p.finish();
}

#[test]
fn a_client_killed_mid_stream_frees_its_tier() {
    let d = Daemon::start("ram_tier_budget = \"64M\"\n");
    let dir = tempfile::tempdir().unwrap();
    let model = big_model(dir.path());
    let want = expected_hash(&model);
    let exe = std::env::current_exe().unwrap();
    let e = [
        ("CHILD_MODEL", model.as_os_str()),
        ("CHILD_PASSES", std::ffi::OsStr::new("0")),
        ("LLMSTREAM_SOCKET", d.socket.as_os_str()),
    ];
    let mut c = d.client();
    let served0 = c.status().unwrap().bytes_served;
    let mut k = ChildClient::spawn(&exe, "stream", &e);
    // Streaming without end: two passes seen, then killed while in a third.
    assert_eq!(k.pass().hash, want);
    let p = k.pass();
    assert!(p.via_daemon && p.tier > 0);
    let s = c.status().unwrap();
    assert_eq!((s.models, s.tiers.len()), (1, 1), "{s:?}");
    let dpid = d.child.id();
    assert_eq!(tier_memfds(dpid), 1);
    k.child.kill().unwrap();
    k.child.wait().unwrap();
    // The daemon notices the dead connection and returns the memory: no model, no tier, no
    // memfd, the budget free again.
    let s = wait_status(&mut c, "killed client released", |s| {
        s.models == 0 && s.tier_bytes == 0 && s.clients == 1
    });
    assert!(s.tiers.is_empty());
    assert_eq!(tier_memfds(dpid), 0);
    // Healthy: a new client gets a freshly filled tier and the right bytes.
    let mut n = ChildClient::spawn(
        &exe,
        "stream",
        &[e[0], ("CHILD_PASSES", "1".as_ref()), e[2]],
    );
    let p = n.pass();
    assert_eq!(p.hash, want);
    assert!(p.via_daemon && p.tier > 0 && p.from_tier > 0);
    assert_eq!(n.line(), "done");
    let s = c.status().unwrap();
    assert!(s.bytes_served >= served0 + 2 * p.tier, "{s:?}");
    n.finish();
}

#[test]
fn a_peer_outside_the_owner_group_is_refused() {
    // uid nobody is never root nor the daemon's uid; its group decides.
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to start clients as another user");
        return;
    }
    let Ok(Some(group)) = nix::unistd::Group::from_name("nogroup") else {
        println!("skipped: no group named nogroup");
        return;
    };
    let gid = group.gid.as_raw();
    let mut d = Daemon::start("group = \"nogroup\"\n");
    // The socket is mode 0660, group nogroup. Let everyone reach it (directory searchable,
    // socket writable by all) so that the daemon's own check is what decides.
    let dir = d.socket.parent().unwrap().to_owned();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let meta = std::fs::metadata(&d.socket).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.gid(), gid, "socket not given the owner group");
    assert_eq!(meta.mode() & 0o777, 0o660);
    // The user's copy of this binary (the build directory may not be searchable by nobody).
    let exe = dir.join("client");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hello = |uid: u32, gid: u32| {
        let mut h = ChildClient::spawn_with(
            &exe,
            "hello",
            &[("LLMSTREAM_SOCKET", d.socket.as_os_str())],
            |c| {
                use std::os::unix::process::CommandExt;
                c.uid(uid).gid(gid);
            },
        );
        let l = h.line();
        h.child.wait().unwrap();
        l
    };
    // With the socket's own permissions, an outsider does not even reach the daemon.
    assert!(
        hello(65534, 54321).starts_with("hello error"),
        "fs permissions"
    );
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut c = d.client();
    let errors0 = c.status().unwrap().errors;
    // Now it does, and the daemon refuses it by its credentials.
    assert_eq!(hello(65534, 54321), "hello refused PermissionDenied");
    assert!(c.status().unwrap().errors > errors0);
    // A member of the owner group (here by its primary gid) is admitted.
    assert_eq!(hello(65534, gid), "hello ok");
    // The daemon is fine.
    c.status().unwrap();
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn c_example_same_checksum_through_the_daemon() {
    let exe = std::env::current_exe().unwrap();
    // The library cargo built beside this test (target/<profile>/libllmstream.so).
    let Some(lib) = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("libllmstream.so"))
        .filter(|p| p.exists())
    else {
        println!(
            "skipped: libllmstream.so not built beside {}",
            exe.display()
        );
        return;
    };
    for cc in ["gcc", "g++", "readelf"] {
        if Command::new(cc).arg("--version").output().is_err() {
            println!("skipped: {cc} (needed by examples/c/build.sh) is not installed");
            return;
        }
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let st = Command::new("bash")
        .arg(repo.join("examples/c/build.sh"))
        .arg("--lib")
        .arg(&lib)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "examples/c/build.sh failed");
    let shared = std::env::var_os("LLMSTREAM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared"));
    let real = shared.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = if real.exists() {
        real
    } else {
        println!("{} not present: a synthetic model instead", real.display());
        big_model(dir.path())
    };
    let d = Daemon::start("ram_tier_budget = \"1G\"\n");
    let run = |socket: &std::ffi::OsStr| {
        let o = Command::new(out.join("stream_checksum"))
            .arg("--backend")
            .arg("host")
            .arg(&model)
            .env("LLMSTREAM_SOCKET", socket)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            String::from_utf8(o.stdout).unwrap(),
            String::from_utf8(o.stderr).unwrap(),
        )
    };
    let (in_process, _) = run("none".as_ref());
    let mut c = d.client();
    let s0 = c.status().unwrap();
    assert_eq!(s0.tier_bytes_shared, 0);
    let (through, err) = run(d.socket.as_os_str());
    assert!(in_process.contains("total crc32"), "{in_process}");
    assert_eq!(in_process, through);
    println!("{}", through.lines().last().unwrap());
    // It went through the daemon: a tier was filled and handed to it, no fallback recorded.
    let s = c.status().unwrap();
    assert!(s.tier_bytes_shared > 0, "{s:?}");
    assert!(s.bytes_served > s0.bytes_served);
    assert!(!err.contains("llmstreamd"), "{err}");
}

#[test]
fn a_budget_smaller_than_the_model_holds_a_prefix_and_the_rest_streams_from_storage() {
    // Layers of 4 MiB + 64 B: a 9 MiB budget holds the globals and two layers.
    let d = Daemon::start("ram_tier_budget = \"9M\"\n");
    let dir = tempfile::tempdir().unwrap();
    let model = big_model(dir.path());
    let want = expected_hash(&model);
    let exe = std::env::current_exe().unwrap();
    let stream = |m: &Path| {
        let mut c = ChildClient::spawn(
            &exe,
            "stream",
            &[
                ("CHILD_MODEL", m.as_os_str()),
                ("CHILD_PASSES", "1".as_ref()),
                ("LLMSTREAM_SOCKET", d.socket.as_os_str()),
            ],
        );
        let p = c.pass();
        assert_eq!(c.line(), "done");
        (c, p)
    };
    let (a, p) = stream(&model);
    assert_eq!(p.hash, want);
    assert!(p.via_daemon);
    let layer = (1u64 << 20) * 4 + 16 * 4;
    assert!(p.tier > 2 * layer && p.tier < 3 * layer, "{p:?}");
    // Exactly the two layers inside the tier came from it; the other two from the file.
    assert_eq!(p.from_tier, 2 * layer, "{p:?}");
    // A second model finds the budget spent: served by the daemon without a tier, same bytes.
    let other = dir.path().join("other.gguf");
    std::fs::write(&other, synthetic_gguf_sized(4, (1 << 20) + 8)).unwrap();
    let (b, q) = stream(&other);
    assert_eq!(q.hash, expected_hash(&other));
    assert_eq!((q.via_daemon, q.tier, q.from_tier), (true, 0, 0));
    let s = d.client().status().unwrap();
    assert_eq!((s.models, s.tiers.len()), (2, 1), "{s:?}");
    assert!(s.tier_bytes <= 9 << 20);
    a.finish();
    b.finish();
}
