//! Length-prefixed frames: `u32` little-endian payload length, then the payload.

use super::fdpass::{send_all_with_fds, RecvFds};
use super::message::{ErrorCode, Request, Response, MAGIC, VERSION};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why a frame or message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended inside a frame.
    #[error("truncated frame: {got} of {expected} bytes")]
    Truncated {
        /// Bytes the frame (header included) should have.
        expected: usize,
        /// Bytes that came.
        got: usize,
    },
    /// The length prefix exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced payload length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A zero-length frame.
    #[error("empty frame")]
    Empty,
    /// The payload is not a message of this protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A Hello with the wrong magic.
    #[error("bad magic {0:?}")]
    BadMagic(String),
    /// A Hello with a version this build does not speak.
    #[error("unsupported protocol version {got} (this daemon speaks {supported})")]
    UnsupportedVersion {
        /// The client's version.
        got: u32,
        /// Ours.
        supported: u32,
    },
    /// The peer answered with an error.
    #[error("daemon error {code:?}: {message}")]
    Remote {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The peer answered with a response that does not fit the request.
    #[error("unexpected response {0:?}")]
    Unexpected(Box<Response>),
}

impl ProtoError {
    /// The code reported to a client for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::BadMagic(_) => ErrorCode::BadMagic,
            Self::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Self::Remote { code, .. } => *code,
            Self::Io(_) | Self::Unexpected(_) => ErrorCode::Internal,
            Self::Truncated { .. } | Self::Empty | Self::Malformed(_) => ErrorCode::Malformed,
        }
    }
}

/// Fill `buf` from `src`; the bytes read (less than `buf.len()` only at end of stream).
fn fill<S: RecvFds>(
    src: &mut S,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<usize, ProtoError> {
    let mut got = 0;
    while got < buf.len() {
        let rest = buf.get_mut(got..).unwrap_or_default();
        match src.recv_fds(rest, fds) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// Read one frame's payload. `Ok(None)`: the stream ended cleanly between frames. Descriptors
/// that arrive with the frame are appended to `fds` (and closed by the caller's drop).
pub fn read_frame<S: RecvFds>(
    src: &mut S,
    max: u32,
    fds: &mut Vec<OwnedFd>,
) -> Result<Option<Vec<u8>>, ProtoError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match fill(src, &mut header, fds)? {
        0 => return Ok(None),
        FRAME_HEADER_BYTES => {}
        got => {
            return Err(ProtoError::Truncated {
                expected: FRAME_HEADER_BYTES,
                got,
            })
        }
    }
    let len = u32::from_le_bytes(header);
    if len == 0 {
        return Err(ProtoError::Empty);
    }
    if len > max {
        return Err(ProtoError::TooLarge { len, max });
    }
    let n = usize::try_from(len).map_err(|_| ProtoError::TooLarge { len, max })?;
    let mut payload = vec![0u8; n];
    let got = fill(src, &mut payload, fds)?;
    if got < n {
        return Err(ProtoError::Truncated {
            expected: FRAME_HEADER_BYTES + n,
            got: FRAME_HEADER_BYTES + got,
        });
    }
    Ok(Some(payload))
}

/// A message as a whole frame (header and payload).
pub fn encode<T: serde::Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let payload = serde_json::to_vec(msg).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    let len = u32::try_from(payload.len()).map_err(|_| ProtoError::TooLarge {
        len: u32::MAX,
        max: u32::MAX,
    })?;
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend(len.to_le_bytes());
    out.extend(payload);
    Ok(out)
}

/// Send one message as a frame, with `fds` attached.
pub fn write_frame<T: serde::Serialize>(
    stream: &UnixStream,
    msg: &T,
    fds: &[RawFd],
) -> Result<(), ProtoError> {
    send_all_with_fds(stream, &encode(msg)?, fds)?;
    Ok(())
}

/// Decode a request payload.
pub fn decode_request(payload: &[u8]) -> Result<Request, ProtoError> {
    serde_json::from_slice(payload).map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// Decode a response payload.
pub fn decode_response(payload: &[u8]) -> Result<Response, ProtoError> {
    serde_json::from_slice(payload).map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// Check a Hello's magic and version.
pub fn check_hello(magic: &str, version: u32) -> Result<(), ProtoError> {
    if magic != MAGIC {
        return Err(ProtoError::BadMagic(magic.chars().take(64).collect()));
    }
    if version != VERSION {
        return Err(ProtoError::UnsupportedVersion {
            got: version,
            supported: VERSION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::proto::message::{StatusReport, TierGrant, TierStatus};
    use proptest::prelude::*;

    const MAX: u32 = 64 << 10;

    fn one(bytes: &[u8]) -> Result<Option<Vec<u8>>, ProtoError> {
        let mut src = bytes;
        read_frame(&mut src, MAX, &mut Vec::new())
    }

    fn all_requests() -> Vec<Request> {
        vec![
            Request::hello(),
            Request::OpenModel {
                label: "/m/é.gguf".into(),
            },
            Request::Status {},
            Request::Close { model: u64::MAX },
        ]
    }

    #[test]
    fn requests_round_trip() {
        for r in all_requests() {
            let f = encode(&r).unwrap();
            let payload = one(&f).unwrap().unwrap();
            assert_eq!(decode_request(&payload).unwrap(), r);
        }
    }

    #[test]
    fn responses_round_trip() {
        let all = [
            Response::Hello {
                version: 1,
                server: "0.1.0".into(),
            },
            Response::ModelOpened {
                model: 3,
                layers: 30,
                file_size: 1 << 33,
                tier: None,
            },
            Response::ModelOpened {
                model: 4,
                layers: 2,
                file_size: 1 << 20,
                tier: Some(TierGrant {
                    file_offset: 96,
                    len: 4096,
                }),
            },
            Response::Status(StatusReport {
                clients: 1,
                models: 2,
                bytes_served: 3,
                errors: 4,
                tier_budget: 5,
                tier_bytes: 6,
                tier_bytes_shared: 7,
                tiers: vec![TierStatus {
                    label: "m".into(),
                    bytes: 6,
                    refs: 2,
                }],
            }),
            Response::Closed { model: 7 },
            Response::Error {
                code: ErrorCode::BadModel,
                message: "x".into(),
            },
        ];
        for r in all {
            let f = encode(&r).unwrap();
            assert_eq!(decode_response(&one(&f).unwrap().unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn frames_in_sequence_then_clean_end() {
        let mut bytes = encode(&Request::Status {}).unwrap();
        bytes.extend(encode(&Request::Close { model: 1 }).unwrap());
        let mut src = bytes.as_slice();
        let mut fds = Vec::new();
        let a = read_frame(&mut src, MAX, &mut fds).unwrap().unwrap();
        let b = read_frame(&mut src, MAX, &mut fds).unwrap().unwrap();
        assert_eq!(decode_request(&a).unwrap(), Request::Status {});
        assert_eq!(decode_request(&b).unwrap(), Request::Close { model: 1 });
        assert!(read_frame(&mut src, MAX, &mut fds).unwrap().is_none());
    }

    #[test]
    fn oversized_frame_is_refused_before_reading_it() {
        let mut f = (MAX + 1).to_le_bytes().to_vec();
        f.extend([b'x'; 16]);
        assert!(matches!(
            one(&f),
            Err(ProtoError::TooLarge { len, max: MAX }) if len == MAX + 1
        ));
        assert!(matches!(
            one(&u32::MAX.to_le_bytes()),
            Err(ProtoError::TooLarge { .. })
        ));
    }

    #[test]
    fn truncated_frames_are_refused() {
        let f = encode(&Request::hello()).unwrap();
        for cut in 1..f.len() {
            assert!(
                matches!(one(&f[..cut]), Err(ProtoError::Truncated { .. })),
                "cut at {cut}"
            );
        }
        assert!(matches!(one(&[0, 0, 0, 0]), Err(ProtoError::Empty)));
    }

    #[test]
    fn hello_versions_and_magic() {
        check_hello(MAGIC, VERSION).unwrap();
        assert!(matches!(
            check_hello(MAGIC, VERSION + 1),
            Err(ProtoError::UnsupportedVersion {
                got: 2,
                supported: 1
            })
        ));
        assert!(matches!(
            check_hello("llmstream", VERSION),
            Err(ProtoError::BadMagic(_))
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            &b"not json"[..],
            b"{}",
            b"{\"type\":\"hello\"}",
            b"{\"type\":\"launch\"}",
            b"{\"type\":\"status\",\"extra\":1}",
            b"{\"type\":\"close\",\"model\":-1}",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(decode_request(bad), Err(ProtoError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut src = bytes.as_slice();
            let mut fds = Vec::new();
            // Read frames until the input is used up or refused; decode whatever comes.
            while let Ok(Some(p)) = read_frame(&mut src, 256, &mut fds) {
                let _ = decode_request(&p);
                let _ = decode_response(&p);
            }
            prop_assert!(fds.is_empty());
        }

        #[test]
        fn random_payloads_in_valid_frames_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 1..300)
        ) {
            let mut f = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
            f.extend(&payload);
            let got = one(&f).unwrap().unwrap();
            prop_assert_eq!(&got, &payload);
            if let Ok(r) = decode_request(&got) {
                // Whatever decodes re-encodes to something that decodes the same.
                let again = encode(&r).unwrap();
                prop_assert_eq!(decode_request(&one(&again).unwrap().unwrap()).unwrap(), r);
            }
        }
    }
}
