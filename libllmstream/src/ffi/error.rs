//! Status codes, the error carried inside the C ABI, and the calling thread's last error.

use super::panic::guard_value;
use super::text::write_str;
use crate::error::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};

/// The result of a fallible `lls_*` call.
///
/// Codes are grouped by range: 0 success, 1xx argument errors, 2xx I/O, 3xx file format,
/// 4xx device, 5xx state, 9xx internal. A code, once published, keeps its number; a retired code
/// stays reserved. Functions that take a status as an argument accept any integer and treat an
/// unknown one as `LLS_STATUS_UNKNOWN`.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum lls_status {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullPointer = 100,
    /// An argument is outside what the call accepts (a range, an index, a size).
    InvalidArgument = 101,
    /// A caller buffer is too small; the required length was written to `*out_n`.
    BufferTooSmall = 102,
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = 103,
    /// A configuration value is invalid (`lls_config` or an `LLMSTREAM_*` variable).
    InvalidConfig = 104,
    /// No item of that name (tensor, metadata key).
    NotFound = 105,
    /// A metadata value has a type the getter does not convert.
    TypeMismatch = 106,
    /// A file could not be opened.
    Open = 200,
    /// A read failed.
    Read = 201,
    /// The requested range lies beyond the end of the file.
    OutOfRange = 202,
    /// O_DIRECT was required and the file system refuses it.
    DirectUnsupported = 203,
    /// io_uring was required and cannot be used.
    UringUnavailable = 204,
    /// RLIMIT_MEMLOCK is too low for the page-locked staging buffers.
    Memlock = 205,
    /// Another operating-system call failed.
    Os = 206,
    /// The file is not a valid GGUF model.
    InvalidGguf = 300,
    /// The requested backend cannot be used on this machine.
    BackendUnavailable = 400,
    /// A CUDA driver call failed.
    Cuda = 401,
    /// Host, pinned or device memory could not be allocated.
    OutOfMemory = 402,
    /// A buffer is in use by reads in flight (or a read was refused while it is borrowed).
    Busy = 500,
    /// The context's streaming worker has stopped.
    WorkerGone = 501,
    /// The request has not completed yet (`lls_request_poll`).
    NotDone = 502,
    /// A bug in libllmstream was caught at the C boundary. Free the objects involved.
    Panic = 900,
    /// An unknown status code (only as the description of an integer that is no status).
    Unknown = 901,
}

/// Every status, in numeric order.
const ALL_STATUS: [lls_status; 24] = [
    lls_status::Ok,
    lls_status::NullPointer,
    lls_status::InvalidArgument,
    lls_status::BufferTooSmall,
    lls_status::InvalidUtf8,
    lls_status::InvalidConfig,
    lls_status::NotFound,
    lls_status::TypeMismatch,
    lls_status::Open,
    lls_status::Read,
    lls_status::OutOfRange,
    lls_status::DirectUnsupported,
    lls_status::UringUnavailable,
    lls_status::Memlock,
    lls_status::Os,
    lls_status::InvalidGguf,
    lls_status::BackendUnavailable,
    lls_status::Cuda,
    lls_status::OutOfMemory,
    lls_status::Busy,
    lls_status::WorkerGone,
    lls_status::NotDone,
    lls_status::Panic,
    lls_status::Unknown,
];

impl lls_status {
    /// The status for an integer from C; `Unknown` for anything that is no status.
    pub fn from_u32(code: u32) -> Self {
        ALL_STATUS
            .iter()
            .copied()
            .find(|s| *s as u32 == code)
            .unwrap_or(Self::Unknown)
    }

    /// The C name (`LLS_STATUS_NULL_POINTER`), NUL-terminated.
    pub fn name(self) -> &'static CStr {
        match self {
            Self::Ok => c"LLS_STATUS_OK",
            Self::NullPointer => c"LLS_STATUS_NULL_POINTER",
            Self::InvalidArgument => c"LLS_STATUS_INVALID_ARGUMENT",
            Self::BufferTooSmall => c"LLS_STATUS_BUFFER_TOO_SMALL",
            Self::InvalidUtf8 => c"LLS_STATUS_INVALID_UTF8",
            Self::InvalidConfig => c"LLS_STATUS_INVALID_CONFIG",
            Self::NotFound => c"LLS_STATUS_NOT_FOUND",
            Self::TypeMismatch => c"LLS_STATUS_TYPE_MISMATCH",
            Self::Open => c"LLS_STATUS_OPEN",
            Self::Read => c"LLS_STATUS_READ",
            Self::OutOfRange => c"LLS_STATUS_OUT_OF_RANGE",
            Self::DirectUnsupported => c"LLS_STATUS_DIRECT_UNSUPPORTED",
            Self::UringUnavailable => c"LLS_STATUS_URING_UNAVAILABLE",
            Self::Memlock => c"LLS_STATUS_MEMLOCK",
            Self::Os => c"LLS_STATUS_OS",
            Self::InvalidGguf => c"LLS_STATUS_INVALID_GGUF",
            Self::BackendUnavailable => c"LLS_STATUS_BACKEND_UNAVAILABLE",
            Self::Cuda => c"LLS_STATUS_CUDA",
            Self::OutOfMemory => c"LLS_STATUS_OUT_OF_MEMORY",
            Self::Busy => c"LLS_STATUS_BUSY",
            Self::WorkerGone => c"LLS_STATUS_WORKER_GONE",
            Self::NotDone => c"LLS_STATUS_NOT_DONE",
            Self::Panic => c"LLS_STATUS_PANIC",
            Self::Unknown => c"LLS_STATUS_UNKNOWN",
        }
    }

    /// A generic one-line description, used when no detailed message is at hand.
    pub fn description(self) -> &'static str {
        match self {
            Self::Ok => "success",
            Self::NullPointer => "a required pointer argument was NULL",
            Self::InvalidArgument => "invalid argument",
            Self::BufferTooSmall => "the caller's buffer is too small",
            Self::InvalidUtf8 => "a string argument is not valid UTF-8",
            Self::InvalidConfig => "invalid configuration",
            Self::NotFound => "not found",
            Self::TypeMismatch => "the value has another type",
            Self::Open => "a file could not be opened",
            Self::Read => "a read failed",
            Self::OutOfRange => "the range lies beyond the end of the file",
            Self::DirectUnsupported => "O_DIRECT is not supported by the file system",
            Self::UringUnavailable => "io_uring is unavailable",
            Self::Memlock => "RLIMIT_MEMLOCK is too low",
            Self::Os => "an operating-system call failed",
            Self::InvalidGguf => "invalid GGUF file",
            Self::BackendUnavailable => "the backend is unavailable",
            Self::Cuda => "a CUDA driver call failed",
            Self::OutOfMemory => "out of memory",
            Self::Busy => "the buffer is in use by reads in flight",
            Self::WorkerGone => "the streaming worker has stopped",
            Self::NotDone => "the request has not completed",
            Self::Panic => "internal error (a panic was caught at the C boundary)",
            Self::Unknown => "unknown status code",
        }
    }
}

/// An error on its way out through the C ABI: a status and a detailed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FfiError {
    pub status: lls_status,
    pub message: String,
}

impl FfiError {
    pub fn new(status: lls_status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A NULL pointer passed as argument `what`.
    pub fn null(what: &str) -> Self {
        Self::new(
            lls_status::NullPointer,
            format!("argument `{what}` is NULL"),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(lls_status::InvalidArgument, message)
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Open { .. } => lls_status::Open,
            Error::Read { .. } => lls_status::Read,
            Error::OutOfRange { .. } => lls_status::OutOfRange,
            Error::Gguf { .. } => lls_status::InvalidGguf,
            Error::MemlockLimit { .. } => lls_status::Memlock,
            Error::UringUnavailable { .. } => lls_status::UringUnavailable,
            Error::DirectUnsupported { .. } => lls_status::DirectUnsupported,
            Error::BackendUnavailable { .. } => lls_status::BackendUnavailable,
            Error::Cuda { .. } | Error::CuFile(_) => lls_status::Cuda,
            Error::OutOfMemory { .. } => lls_status::OutOfMemory,
            Error::InvalidArgument(_) => lls_status::InvalidArgument,
            Error::Config { .. } => lls_status::InvalidConfig,
            Error::Busy(_) => lls_status::Busy,
            Error::WorkerGone(_) => lls_status::WorkerGone,
            Error::Os { .. } => lls_status::Os,
        };
        Self::new(status, e.to_string())
    }
}

/// The calling thread's last error: its status and message as a C string.
struct LastError {
    status: lls_status,
    message: CString,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

/// Record `e` as the calling thread's last error.
pub(crate) fn set_last_error(e: &FfiError) {
    // A message cannot hold NUL in a C string; show it escaped instead.
    let text = e.message.replace('\0', "\\0");
    let message = CString::new(text).unwrap_or_default();
    // `try_with` fails only while the thread is being torn down; nothing can read it then.
    let _ = LAST_ERROR.try_with(|l| {
        *l.borrow_mut() = Some(LastError {
            status: e.status,
            message,
        })
    });
}

/// Forget the calling thread's last error (a call succeeded).
pub(crate) fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|l| l.borrow_mut().take());
}

/// The detailed message of the calling thread's last failed call, or `""` when the last call
/// that returns an `lls_status` succeeded.
///
/// The string is owned by the library, never NULL, and valid until the next `lls_*` call on the
/// same thread (copy it to keep it). Each thread has its own last error. `lls_last_error`,
/// `lls_error_message` and `lls_status_name` never change it.
#[no_mangle]
pub extern "C" fn lls_last_error() -> *const c_char {
    guard_value(c"".as_ptr(), || {
        LAST_ERROR
            .try_with(|l| {
                l.borrow()
                    .as_ref()
                    .map_or(c"".as_ptr(), |e| e.message.as_ptr())
            })
            .unwrap_or(c"".as_ptr())
    })
}

/// The C name of a status code (`"LLS_STATUS_NULL_POINTER"`); `"LLS_STATUS_UNKNOWN"` for an
/// integer that is no status. The string is static.
#[no_mangle]
pub extern "C" fn lls_status_name(code: u32) -> *const c_char {
    guard_value(c"LLS_STATUS_UNKNOWN".as_ptr(), || {
        lls_status::from_u32(code).name().as_ptr()
    })
}

/// Write the message for status `code` into `buf`: the calling thread's detailed last-error
/// message when that error has this status, otherwise the generic description of the code.
///
/// On success `buf` holds the NUL-terminated text and `*out_n` its length without the NUL.
/// Returns `LLS_STATUS_BUFFER_TOO_SMALL` when `len` cannot hold text and NUL; `*out_n` then holds
/// the text's length (allocate `*out_n + 1` bytes and call again) and `buf` is untouched.
/// `buf` may be NULL when `len` is 0. Does not change the thread's last error.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes; `out_n` is NULL or a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn lls_error_message(
    code: u32,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> lls_status {
    guard_value(lls_status::Panic, || {
        let status = lls_status::from_u32(code);
        let detailed = LAST_ERROR
            .try_with(|l| {
                l.borrow()
                    .as_ref()
                    .filter(|e| e.status == status && status != lls_status::Ok)
                    .map(|e| e.message.to_string_lossy().into_owned())
            })
            .ok()
            .flatten();
        let text = detailed.unwrap_or_else(|| status.description().to_owned());
        // SAFETY: forwarded from this function's contract on `buf`, `len` and `out_n`.
        match unsafe { write_str(&text, buf, len, out_n) } {
            Ok(()) => lls_status::Ok,
            Err(e) => e.status,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_ints_map_to_unknown() {
        for s in ALL_STATUS {
            assert_eq!(lls_status::from_u32(s as u32), s);
            let name = s.name().to_str().unwrap();
            assert!(name.starts_with("LLS_STATUS_"), "{name}");
        }
        for bad in [1, 99, 107, 299, 899, 902, u32::MAX] {
            assert_eq!(lls_status::from_u32(bad), lls_status::Unknown);
        }
    }

    #[test]
    fn codes_lie_in_their_ranges() {
        let range = |s: lls_status| (s as u32) / 100;
        assert_eq!(range(lls_status::BufferTooSmall), 1);
        assert_eq!(range(lls_status::Memlock), 2);
        assert_eq!(range(lls_status::InvalidGguf), 3);
        assert_eq!(range(lls_status::OutOfMemory), 4);
        assert_eq!(range(lls_status::NotDone), 5);
        assert_eq!(range(lls_status::Panic), 9);
    }

    #[test]
    fn every_library_error_maps_to_its_status() {
        let io = || std::io::Error::from_raw_os_error(libc::EIO);
        let cases: Vec<(Error, lls_status)> = vec![
            (
                Error::Open {
                    path: "/x".into(),
                    source: io(),
                },
                lls_status::Open,
            ),
            (
                Error::Read {
                    path: "/x".into(),
                    offset: 0,
                    len: 1,
                    source: io(),
                },
                lls_status::Read,
            ),
            (
                Error::OutOfRange {
                    path: "/x".into(),
                    offset: 9,
                    len: 1,
                    file_len: 4,
                },
                lls_status::OutOfRange,
            ),
            (
                Error::Gguf {
                    path: "/x".into(),
                    source: crate::gguf::GgufFile::parse_bytes(b"nope").unwrap_err(),
                },
                lls_status::InvalidGguf,
            ),
            (
                Error::MemlockLimit {
                    current: 1,
                    required: 2,
                },
                lls_status::Memlock,
            ),
            (
                Error::UringUnavailable { reason: "x".into() },
                lls_status::UringUnavailable,
            ),
            (
                Error::DirectUnsupported {
                    path: "/x".into(),
                    source: io(),
                },
                lls_status::DirectUnsupported,
            ),
            (
                Error::BackendUnavailable {
                    backend: "cuda",
                    reason: "x".into(),
                },
                lls_status::BackendUnavailable,
            ),
            (
                Error::Cuda {
                    op: "x",
                    message: "y".into(),
                },
                lls_status::Cuda,
            ),
            (
                Error::OutOfMemory {
                    what: "device",
                    bytes: 1,
                },
                lls_status::OutOfMemory,
            ),
            (
                Error::InvalidArgument("x".into()),
                lls_status::InvalidArgument,
            ),
            (
                Error::Config {
                    field: "f",
                    reason: "r".into(),
                },
                lls_status::InvalidConfig,
            ),
            (Error::Busy(2), lls_status::Busy),
            (Error::WorkerGone("x".into()), lls_status::WorkerGone),
            (
                Error::Os {
                    op: "x",
                    source: io(),
                },
                lls_status::Os,
            ),
        ];
        for (e, want) in cases {
            let text = e.to_string();
            let f = FfiError::from(e);
            assert_eq!(f.status, want);
            assert_eq!(f.message, text);
        }
    }

    #[test]
    fn last_error_is_per_thread_and_cleared() {
        set_last_error(&FfiError::invalid("first\0second"));
        // SAFETY: lls_last_error returns a NUL-terminated string valid until the next call.
        let msg = unsafe { CStr::from_ptr(lls_last_error()) };
        assert_eq!(msg.to_str().unwrap(), "first\\0second");
        std::thread::spawn(|| {
            // SAFETY: as above.
            let other = unsafe { CStr::from_ptr(lls_last_error()) };
            assert_eq!(other.to_bytes(), b"");
        })
        .join()
        .unwrap();
        clear_last_error();
        // SAFETY: as above.
        assert_eq!(unsafe { CStr::from_ptr(lls_last_error()) }.to_bytes(), b"");
    }

    fn message(code: u32, len: usize) -> (lls_status, String, usize) {
        let mut buf = vec![0 as c_char; len.max(1)];
        let mut n = 0;
        // SAFETY: `buf` has at least `len` writable bytes, `n` is a usize.
        let s = unsafe { lls_error_message(code, buf.as_mut_ptr(), len, &mut n) };
        // SAFETY: on success write_str NUL-terminated the text; on failure buf[0] is still 0.
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
        (s, text.to_string_lossy().into_owned(), n)
    }

    #[test]
    fn error_message_gives_details_for_the_same_status() {
        set_last_error(&FfiError::invalid("index 9 of 3"));
        let code = lls_status::InvalidArgument as u32;
        assert_eq!(
            message(code, 64),
            (lls_status::Ok, "index 9 of 3".into(), 12)
        );
        let null = lls_status::NullPointer as u32;
        let (s, text, _) = message(null, 64);
        assert_eq!(s, lls_status::Ok);
        assert_eq!(text, lls_status::NullPointer.description());
        // Too small: the size needed comes back and the last error is left alone.
        let (s, text, n) = message(code, 12);
        assert_eq!((s, text.as_str(), n), (lls_status::BufferTooSmall, "", 12));
        // SAFETY: lls_last_error returns a NUL-terminated string valid until the next call.
        let last = unsafe { CStr::from_ptr(lls_last_error()) };
        assert_eq!(last.to_str().unwrap(), "index 9 of 3");
        let (_, text, _) = message(12345, 64);
        assert_eq!(text, "unknown status code");
        // SAFETY: lls_status_name returns a static NUL-terminated string.
        let name = unsafe { CStr::from_ptr(lls_status_name(12345)) };
        assert_eq!(name.to_str().unwrap(), "LLS_STATUS_UNKNOWN");
        // SAFETY: as above.
        let name = unsafe { CStr::from_ptr(lls_status_name(102)) };
        assert_eq!(name.to_str().unwrap(), "LLS_STATUS_BUFFER_TOO_SMALL");
        clear_last_error();
    }
}
