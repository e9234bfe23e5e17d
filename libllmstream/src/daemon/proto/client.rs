//! A blocking client of the daemon: the library's transparent daemon path, `llmstream status`
//! and the daemon's tests.

use super::frame::{decode_response, read_frame, write_frame, ProtoError};
use super::message::{Request, Response, StatusReport, TierGrant};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Largest response a client accepts.
const MAX_RESPONSE_BYTES: u32 = 1 << 20;

/// A model the daemon opened for this connection.
#[derive(Debug)]
pub struct OpenedModel {
    /// Its id on this connection.
    pub model: u64,
    /// Layers.
    pub layers: u32,
    /// File size in bytes.
    pub file_size: u64,
    /// The shared RAM tier: where it lies in the file and its memfd.
    pub tier: Option<(TierGrant, OwnedFd)>,
}

/// A connection that has said Hello.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    /// The daemon's package version.
    pub server: String,
}

impl Client {
    /// Connect and say Hello.
    pub fn connect(socket: &Path) -> Result<Self, ProtoError> {
        Self::connect_with_timeout(socket, None)
    }

    /// Connect with a timeout on every read and write (`None`: wait without limit).
    pub fn connect_with_timeout(
        socket: &Path,
        timeout: Option<std::time::Duration>,
    ) -> Result<Self, ProtoError> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        let mut c = Self {
            stream,
            server: String::new(),
        };
        match c.call(&Request::hello(), None)? {
            Response::Hello { server, .. } => c.server = server,
            other => return Err(unexpected(other)),
        }
        Ok(c)
    }

    /// Send one request (with `fd` attached) and wait for its response.
    pub fn call(&mut self, req: &Request, fd: Option<&File>) -> Result<Response, ProtoError> {
        self.call_fds(req, fd).map(|(r, _)| r)
    }

    /// [`Client::call`], also returning the descriptors that came with the response.
    pub fn call_fds(
        &mut self,
        req: &Request,
        fd: Option<&File>,
    ) -> Result<(Response, Vec<OwnedFd>), ProtoError> {
        let raw = fd.map(AsRawFd::as_raw_fd);
        if let Err(e) = write_frame(&self.stream, req, raw.as_slice()) {
            // A daemon that refuses a connection answers and closes at once, possibly before
            // the request got there: its answer is still worth reading.
            let closed = matches!(&e, ProtoError::Io(io) if matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ));
            if !closed {
                return Err(e);
            }
            let mut fds: Vec<OwnedFd> = Vec::new();
            return match read_frame(&mut self.stream, MAX_RESPONSE_BYTES, &mut fds) {
                Ok(Some(p)) => match decode_response(&p)? {
                    Response::Error { code, message } => Err(ProtoError::Remote { code, message }),
                    _ => Err(e),
                },
                _ => Err(e),
            };
        }
        let mut fds: Vec<OwnedFd> = Vec::new();
        let payload = read_frame(&mut self.stream, MAX_RESPONSE_BYTES, &mut fds)?.ok_or(
            ProtoError::Truncated {
                expected: 4,
                got: 0,
            },
        )?;
        match decode_response(&payload)? {
            Response::Error { code, message } => Err(ProtoError::Remote { code, message }),
            r => Ok((r, fds)),
        }
    }

    /// Hand the daemon an opened model file.
    pub fn open_model(&mut self, file: &File, label: &str) -> Result<OpenedModel, ProtoError> {
        let req = Request::OpenModel {
            label: label.to_owned(),
        };
        match self.call_fds(&req, Some(file))? {
            (
                Response::ModelOpened {
                    model,
                    layers,
                    file_size,
                    tier,
                },
                mut fds,
            ) => {
                let tier = match tier {
                    None => None,
                    Some(grant) if fds.len() == 1 => fds.pop().map(|fd| (grant, fd)),
                    Some(_) => {
                        return Err(ProtoError::Malformed(format!(
                            "model_opened with a tier carries {} descriptors, not 1",
                            fds.len()
                        )))
                    }
                };
                Ok(OpenedModel {
                    model,
                    layers,
                    file_size,
                    tier,
                })
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Daemon counters.
    pub fn status(&mut self) -> Result<StatusReport, ProtoError> {
        match self.call(&Request::Status {}, None)? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Close a model.
    pub fn close(&mut self, model: u64) -> Result<(), ProtoError> {
        match self.call(&Request::Close { model }, None)? {
            Response::Closed { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(r: Response) -> ProtoError {
    ProtoError::Unexpected(Box::new(r))
}
