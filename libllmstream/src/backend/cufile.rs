//! cuFile (GPUDirect Storage) through `libcufile`, loaded at run time with `dlopen`: nothing
//! from GDS is needed to build, and a machine without it gets [`CuFileError::Library`].
//!
//! Layers: [`Api`] holds the raw entry points (the only `unsafe` of this module), [`Driver`]
//! an opened cuFile driver, [`FileHandle`] a registered `O_DIRECT` file, [`BufRegistration`] a
//! registered range of device memory. Every cuFile status is turned into a [`CuFileError`]
//! carrying cuFile's own code (`CU_FILE_*`, 5000 and up) and, for CUDA failures, the `CUresult`.
//!
//! Compatibility mode: without nvidia-fs, libcufile still serves `cuFileRead` by reading into
//! its own host bounce buffers and copying to the GPU, as long as the configuration allows it
//! (`properties.allow_compat_mode` in `/etc/cufile.json` or in the file named by
//! `CUFILE_ENV_PATH_JSON`; true by default). The library is kept loaded for the life of the
//! process (libcufile starts threads and is not safe to unload).

use std::ffi::{c_int, c_void};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Names tried by `dlopen`, in order. `libcufile.so.0` is the runtime SONAME (the unversioned
/// name comes only with the development package); the absolute paths cover a CUDA toolkit that
/// is not on the loader's path. `LLMSTREAM_CUFILE_LIB` (a path) is tried first when set.
pub const LIBRARY_NAMES: &[&str] = &[
    "libcufile.so.0",
    "libcufile.so",
    "/usr/local/cuda/lib64/libcufile.so.0",
    "/usr/local/cuda/targets/x86_64-linux/lib/libcufile.so.0",
];

/// Environment variable naming a libcufile to load instead of the default names.
pub const LIBRARY_ENV: &str = "LLMSTREAM_CUFILE_LIB";

/// cuFile's status codes (`CUfileOpError`) start above this base.
const OP_BASE: i32 = 5000;

/// A cuFile failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CuFileError {
    /// libcufile could not be loaded.
    #[error("libcufile could not be loaded (tried {tried}): {reason}")]
    Library {
        /// The names and paths tried.
        tried: String,
        /// The loader's message for the last one.
        reason: String,
    },
    /// libcufile lacks an entry point llmstream needs (a version older than CUDA 11.4).
    #[error("libcufile {library} lacks the symbol {symbol}")]
    Symbol {
        /// The library that was loaded.
        library: String,
        /// The missing symbol.
        symbol: &'static str,
    },
    /// A cuFile call returned an error status.
    #[error("cuFile {op} failed: {name} ({code}){cuda}", cuda = cuda_suffix(*.cuda))]
    Status {
        /// The call.
        op: &'static str,
        /// cuFile's code (`CUfileOpError`).
        code: i32,
        /// Its name (`CU_FILE_DRIVER_NOT_INITIALIZED`, ...).
        name: &'static str,
        /// The CUDA driver's `CUresult` when `code` is `CU_FILE_CUDA_DRIVER_ERROR`, else 0.
        cuda: i32,
    },
    /// cuFileRead failed with an OS error (its return value -1, errno set).
    #[error("cuFileRead of {len} bytes at offset {offset} failed: {source}")]
    Io {
        /// File offset.
        offset: u64,
        /// Requested length.
        len: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An argument is outside what the call accepts (ranges, sizes).
    #[error("invalid cuFile argument: {0}")]
    InvalidArgument(String),
}

fn cuda_suffix(cuda: i32) -> String {
    if cuda == 0 {
        String::new()
    } else {
        format!(", CUresult {cuda}")
    }
}

impl CuFileError {
    /// cuFile's code, for [`CuFileError::Status`].
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The name of a cuFile status code, as in `cufile.h`.
pub fn status_name(code: i32) -> &'static str {
    match code {
        0 => "CU_FILE_SUCCESS",
        5001 => "CU_FILE_DRIVER_NOT_INITIALIZED",
        5002 => "CU_FILE_DRIVER_INVALID_PROPS",
        5003 => "CU_FILE_DRIVER_UNSUPPORTED_LIMIT",
        5004 => "CU_FILE_DRIVER_VERSION_MISMATCH",
        5005 => "CU_FILE_DRIVER_VERSION_READ_ERROR",
        5006 => "CU_FILE_DRIVER_CLOSING",
        5007 => "CU_FILE_PLATFORM_NOT_SUPPORTED",
        5008 => "CU_FILE_IO_NOT_SUPPORTED",
        5009 => "CU_FILE_DEVICE_NOT_SUPPORTED",
        5010 => "CU_FILE_NVFS_DRIVER_ERROR",
        5011 => "CU_FILE_CUDA_DRIVER_ERROR",
        5012 => "CU_FILE_CUDA_POINTER_INVALID",
        5013 => "CU_FILE_CUDA_MEMORY_TYPE_INVALID",
        5014 => "CU_FILE_CUDA_POINTER_RANGE_ERROR",
        5015 => "CU_FILE_CUDA_CONTEXT_MISMATCH",
        5016 => "CU_FILE_INVALID_MAPPING_SIZE",
        5017 => "CU_FILE_INVALID_MAPPING_RANGE",
        5018 => "CU_FILE_INVALID_FILE_TYPE",
        5019 => "CU_FILE_INVALID_FILE_OPEN_FLAG",
        5020 => "CU_FILE_DIO_NOT_SET",
        5022 => "CU_FILE_INVALID_VALUE",
        5023 => "CU_FILE_MEMORY_ALREADY_REGISTERED",
        5024 => "CU_FILE_MEMORY_NOT_REGISTERED",
        5025 => "CU_FILE_PERMISSION_DENIED",
        5026 => "CU_FILE_DRIVER_ALREADY_OPEN",
        5027 => "CU_FILE_HANDLE_NOT_REGISTERED",
        5028 => "CU_FILE_HANDLE_ALREADY_REGISTERED",
        5029 => "CU_FILE_DEVICE_NOT_FOUND",
        5030 => "CU_FILE_INTERNAL_ERROR",
        5031 => "CU_FILE_GETNEWFD_FAILED",
        5033 => "CU_FILE_NVFS_SETUP_ERROR",
        5034 => "CU_FILE_IO_DISABLED",
        5035 => "CU_FILE_BATCH_SUBMIT_FAILED",
        5036 => "CU_FILE_GPU_MEMORY_PINNING_FAILED",
        5037 => "CU_FILE_BATCH_FULL",
        5038 => "CU_FILE_ASYNC_NOT_SUPPORTED",
        5039 => "CU_FILE_IO_MAX_ERROR",
        c if c > OP_BASE => "CU_FILE_(unknown code)",
        _ => "(not a cuFile code)",
    }
}

/// `CUfileError_t`: cuFile's status and, for CUDA failures, the driver's `CUresult` (both C
/// enums, so `int`-sized).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RawStatus {
    err: c_int,
    cu_err: c_int,
}

impl RawStatus {
    fn check(self, op: &'static str) -> Result<(), CuFileError> {
        if self.err == 0 {
            return Ok(());
        }
        Err(CuFileError::Status {
            op,
            code: self.err,
            name: status_name(self.err),
            cuda: if self.err == 5011 { self.cu_err } else { 0 },
        })
    }
}

/// A CUDA device address as the `void *` cuFile takes.
// cuFile exists only on 64-bit Linux, where a CUdeviceptr (u64) and a pointer have the same
// width, so the cast cannot truncate.
#[allow(clippy::cast_possible_truncation)]
fn dev_addr(p: u64) -> *mut c_void {
    p as usize as *mut c_void
}

/// `CU_FILE_HANDLE_TYPE_OPAQUE_FD`.
const HANDLE_TYPE_OPAQUE_FD: c_int = 1;

/// `CUfileDescr_t` for an opaque fd: the handle union (`int fd` or `void *`) is pointer-sized,
/// so it is declared as a pointer-sized field whose low 32 bits hold the fd.
#[repr(C)]
struct RawDescr {
    kind: c_int,
    handle: RawHandleUnion,
    fs_ops: *const c_void,
}

#[repr(C)]
union RawHandleUnion {
    fd: c_int,
    handle: *mut c_void,
}

type FnStatus = unsafe extern "C" fn() -> RawStatus;
type FnHandleRegister = unsafe extern "C" fn(*mut *mut c_void, *mut RawDescr) -> RawStatus;
type FnHandleDeregister = unsafe extern "C" fn(*mut c_void);
type FnBufRegister = unsafe extern "C" fn(*const c_void, usize, c_int) -> RawStatus;
type FnBufDeregister = unsafe extern "C" fn(*const c_void) -> RawStatus;
type FnRead = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, i64, i64) -> isize;
type FnGetVersion = unsafe extern "C" fn(*mut c_int) -> RawStatus;

/// The loaded library and its entry points.
struct Api {
    /// Keeps the entry points valid; never dropped (the `OnceLock` is static).
    _lib: libloading::Library,
    path: String,
    driver_open: FnStatus,
    driver_close: FnStatus,
    handle_register: FnHandleRegister,
    handle_deregister: FnHandleDeregister,
    buf_register: FnBufRegister,
    buf_deregister: FnBufDeregister,
    read: FnRead,
    get_version: Option<FnGetVersion>,
}

fn candidates() -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    if let Some(p) = std::env::var_os(LIBRARY_ENV) {
        v.push(p.to_string_lossy().into_owned());
    }
    v.extend(LIBRARY_NAMES.iter().map(|s| (*s).to_owned()));
    v
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("libcufile")
            .field("path", &self.path)
            .finish()
    }
}

impl Api {
    fn load(names: &[String]) -> Result<Self, CuFileError> {
        let mut reason = String::from("no candidate");
        for name in names {
            // SAFETY: loading a shared library runs its constructors; libcufile's only set up
            // its own state. The handle is kept for the life of the process.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => return Self::bind(lib, name.clone()),
                Err(e) => {
                    // libloading keeps dlerror()'s text in the source.
                    reason = match std::error::Error::source(&e) {
                        Some(src) => format!("{e}: {src}"),
                        None => e.to_string(),
                    }
                }
            }
        }
        Err(CuFileError::Library {
            tried: names.join(", "),
            reason,
        })
    }

    fn bind(lib: libloading::Library, path: String) -> Result<Self, CuFileError> {
        /// Look a symbol up as the function pointer type `T`.
        ///
        /// # Safety
        /// `T` must be the C signature of `name` in cufile.h.
        unsafe fn sym<T: Copy>(
            lib: &libloading::Library,
            path: &str,
            name: &'static str,
        ) -> Result<T, CuFileError> {
            // SAFETY: the caller guarantees `T` matches the symbol's C signature.
            unsafe { lib.get::<T>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|_| CuFileError::Symbol {
                    library: path.to_owned(),
                    symbol: name,
                })
        }
        // SAFETY: each type below is the cufile.h signature of the named function (status
        // structs of two ints, opaque handles as void *, off_t as i64 on Linux x86_64/aarch64).
        unsafe {
            let driver_close = sym::<FnStatus>(&lib, &path, "cuFileDriverClose_v2")
                .or_else(|_| sym::<FnStatus>(&lib, &path, "cuFileDriverClose"))?;
            Ok(Self {
                driver_open: sym(&lib, &path, "cuFileDriverOpen")?,
                driver_close,
                handle_register: sym(&lib, &path, "cuFileHandleRegister")?,
                handle_deregister: sym(&lib, &path, "cuFileHandleDeregister")?,
                buf_register: sym(&lib, &path, "cuFileBufRegister")?,
                buf_deregister: sym(&lib, &path, "cuFileBufDeregister")?,
                read: sym(&lib, &path, "cuFileRead")?,
                get_version: sym(&lib, &path, "cuFileGetVersion").ok(),
                path,
                _lib: lib,
            })
        }
    }
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// The process-wide library, loaded on first use. A failure is remembered (as its message)
/// and reported again on later calls.
fn api() -> Result<&'static Api, CuFileError> {
    let r = API.get_or_init(|| {
        Api::load(&candidates()).map_err(|e| match e {
            CuFileError::Library { reason, .. } => reason,
            other => other.to_string(),
        })
    });
    match r {
        Ok(a) => Ok(a),
        Err(msg) => Err(CuFileError::Library {
            tried: candidates().join(", "),
            reason: msg.clone(),
        }),
    }
}

/// What loading libcufile found, without opening the driver.
#[derive(Debug, Clone)]
pub struct LibraryInfo {
    /// The name or path that loaded.
    pub path: String,
    /// `cuFileGetVersion` (e.g. 1150 for 1.15), when the library has it and it answers.
    pub version: Option<i32>,
}

/// Load libcufile (once per process) and report which one; nothing else is called.
pub fn probe_library() -> Result<LibraryInfo, CuFileError> {
    let a = api()?;
    let version = a.get_version.and_then(|f| {
        let mut v: c_int = 0;
        // SAFETY: `f` is cuFileGetVersion; `v` is a valid out-pointer. The call needs no open
        // driver.
        let st = unsafe { f(&mut v) };
        (st.err == 0).then_some(v)
    });
    Ok(LibraryInfo {
        path: a.path.clone(),
        version,
    })
}

/// A reference to the process's cuFile driver.
///
/// cuFile has one driver per process and refuses a second `cuFileDriverOpen`, so the driver is
/// reference-counted here: the first `Driver` opens it, the last one dropped closes it (unless
/// something else in the process had opened it first). cuFile calls on device memory need the
/// memory's CUDA context current on the calling thread; the callers in [`super::direct`] bind
/// it first.
#[derive(Debug)]
pub struct Driver {
    api: &'static Api,
}

/// Open `Driver`s, and whether this module opened the driver (and so closes it).
static OPEN: std::sync::Mutex<(usize, bool)> = std::sync::Mutex::new((0, false));

/// `CU_FILE_DRIVER_ALREADY_OPEN`.
const ALREADY_OPEN: c_int = 5026;

impl Driver {
    /// Load libcufile and open the driver (or take another reference to it).
    pub fn open() -> Result<Self, CuFileError> {
        let a = api()?;
        let mut open = OPEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.0 == 0 {
            // SAFETY: cuFileDriverOpen takes no arguments; serialised by `OPEN`.
            let st = unsafe { (a.driver_open)() };
            open.1 = if st.err == ALREADY_OPEN {
                false // opened by someone else in this process: theirs to close
            } else {
                st.check("cuFileDriverOpen")?;
                true
            };
        }
        open.0 += 1;
        Ok(Self { api: a })
    }

    /// The library in use.
    pub fn library(&self) -> &str {
        &self.api.path
    }

    /// Register an open file (ideally `O_DIRECT`) with cuFile. The handle owns the fd.
    pub fn register_file(&self, fd: OwnedFd) -> Result<FileHandle<'_>, CuFileError> {
        let mut descr = RawDescr {
            kind: HANDLE_TYPE_OPAQUE_FD,
            handle: RawHandleUnion {
                handle: std::ptr::null_mut(),
            },
            fs_ops: std::ptr::null(),
        };
        descr.handle.fd = fd.as_raw_fd();
        let mut h: *mut c_void = std::ptr::null_mut();
        // SAFETY: `descr` is a valid CUfileDescr_t for an open fd that outlives the handle
        // (the handle owns it); `h` is a valid out-pointer.
        unsafe { (self.api.handle_register)(&mut h, &mut descr) }.check("cuFileHandleRegister")?;
        Ok(FileHandle {
            driver: self,
            handle: h,
            _fd: fd,
        })
    }

    /// Register `len` bytes of device memory at `dev_ptr` for cuFile I/O.
    ///
    /// # Safety
    /// `dev_ptr..dev_ptr+len` must be device memory of the CUDA context current on this thread
    /// that stays allocated until the returned registration is dropped.
    pub unsafe fn register_buffer(
        &self,
        dev_ptr: u64,
        len: usize,
    ) -> Result<BufRegistration<'_>, CuFileError> {
        let p = dev_addr(dev_ptr).cast_const();
        // SAFETY: forwarded from this function's contract; flags 0.
        unsafe { (self.api.buf_register)(p, len, 0) }.check("cuFileBufRegister")?;
        Ok(BufRegistration {
            driver: self,
            ptr: dev_ptr,
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let mut open = OPEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.0 = open.0.saturating_sub(1);
        if open.0 > 0 || !open.1 {
            return;
        }
        open.1 = false;
        // SAFETY: the driver was opened by `Driver::open` and this was its last reference; file
        // handles and buffer registrations borrow a `Driver`, so none is alive here.
        let st = unsafe { (self.api.driver_close)() };
        if let Err(e) = st.check("cuFileDriverClose") {
            tracing::warn!("{e}");
        }
    }
}

/// A file registered with cuFile (`cuFileHandleRegister`), deregistered on drop before its fd
/// closes.
#[derive(Debug)]
pub struct FileHandle<'d> {
    driver: &'d Driver,
    handle: *mut c_void,
    _fd: OwnedFd,
}

// SAFETY: cuFile APIs are thread-safe (cuFile API reference, "Usage"); the handle is an opaque
// token and the fd is owned.
unsafe impl Send for FileHandle<'_> {}
// SAFETY: as above: concurrent cuFileRead calls on one handle are allowed.
unsafe impl Sync for FileHandle<'_> {}

impl FileHandle<'_> {
    /// Read `len` bytes at file `offset` into device memory `dev_base + dev_offset`, looping
    /// over short reads; returns the bytes read (less than `len` only at end of file).
    ///
    /// # Safety
    /// `dev_base + dev_offset .. + len` must be device memory of the CUDA context current on
    /// this thread, not accessed by anything else until this returns.
    pub unsafe fn read(
        &self,
        dev_base: u64,
        dev_offset: u64,
        offset: u64,
        len: usize,
    ) -> Result<usize, CuFileError> {
        let mut done = 0usize;
        while done < len {
            let bad = |what: &str| CuFileError::InvalidArgument(format!("{what} exceeds off_t"));
            let done64 = done as u64;
            let file_off = i64::try_from(offset + done64).map_err(|_| bad("file offset"))?;
            let buf_off = i64::try_from(dev_offset + done64).map_err(|_| bad("buffer offset"))?;
            let base = dev_addr(dev_base);
            // SAFETY: the destination range lies inside the caller's device memory (contract);
            // the handle is registered and alive.
            let n =
                unsafe { (self.driver.api.read)(self.handle, base, len - done, file_off, buf_off) };
            match n {
                0 => break,
                n if n > 0 => done += n.unsigned_abs(),
                -1 => {
                    return Err(CuFileError::Io {
                        offset: offset + done64,
                        len: len - done,
                        source: std::io::Error::last_os_error(),
                    })
                }
                n => {
                    let code = i32::try_from(n.unsigned_abs()).unwrap_or(i32::MAX);
                    return Err(if code > OP_BASE {
                        CuFileError::Status {
                            op: "cuFileRead",
                            code,
                            name: status_name(code),
                            cuda: 0,
                        }
                    } else {
                        CuFileError::Io {
                            offset: offset + done64,
                            len: len - done,
                            source: std::io::Error::from_raw_os_error(code),
                        }
                    });
                }
            }
        }
        Ok(done)
    }
}

impl Drop for FileHandle<'_> {
    fn drop(&mut self) {
        // SAFETY: `handle` was registered by `register_file` and is deregistered once, while
        // its fd (dropped after this) is still open.
        unsafe { (self.driver.api.handle_deregister)(self.handle) };
    }
}

/// A device range registered with `cuFileBufRegister`, deregistered on drop.
#[derive(Debug)]
pub struct BufRegistration<'d> {
    driver: &'d Driver,
    ptr: u64,
}

impl Drop for BufRegistration<'_> {
    fn drop(&mut self) {
        let p = dev_addr(self.ptr).cast_const();
        // SAFETY: `p` was registered by `register_buffer`, whose contract keeps the memory
        // allocated until now.
        let st = unsafe { (self.driver.api.buf_deregister)(p) };
        if let Err(e) = st.check("cuFileBufDeregister") {
            tracing::warn!("{e}");
        }
    }
}

/// Open `path` for cuFile: `O_DIRECT` first (GDS proper needs it), buffered where the file
/// system refuses `O_DIRECT` (compatibility mode accepts that). Returns the fd and whether it
/// is direct.
pub fn open_for_cufile(path: &Path) -> Result<(OwnedFd, bool), CuFileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |flags: c_int| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
    };
    match open(libc::O_DIRECT) {
        Ok(f) => Ok((f.into(), true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(0)
            .map(|f| (f.into(), false))
            .map_err(|source| CuFileError::Open {
                path: path.to_owned(),
                source,
            }),
        Err(source) => Err(CuFileError::Open {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_follow_cufile_h() {
        assert_eq!(status_name(0), "CU_FILE_SUCCESS");
        assert_eq!(status_name(5001), "CU_FILE_DRIVER_NOT_INITIALIZED");
        assert_eq!(status_name(5011), "CU_FILE_CUDA_DRIVER_ERROR");
        assert_eq!(status_name(5020), "CU_FILE_DIO_NOT_SET");
        assert_eq!(status_name(5999), "CU_FILE_(unknown code)");
        assert_eq!(status_name(22), "(not a cuFile code)");
    }

    #[test]
    fn raw_status_carries_codes() {
        assert!(RawStatus { err: 0, cu_err: 7 }.check("x").is_ok());
        let e = RawStatus {
            err: 5011,
            cu_err: 201,
        }
        .check("cuFileBufRegister")
        .unwrap_err();
        assert_eq!(e.code(), Some(5011));
        let text = e.to_string();
        assert!(text.contains("cuFileBufRegister"), "{text}");
        assert!(text.contains("CU_FILE_CUDA_DRIVER_ERROR (5011)"), "{text}");
        assert!(text.contains("CUresult 201"), "{text}");
        // The CUDA code is only kept for CUDA driver errors.
        let e = RawStatus {
            err: 5001,
            cu_err: 3,
        }
        .check("cuFileDriverOpen")
        .unwrap_err();
        assert!(!e.to_string().contains("CUresult"), "{e}");
    }

    #[test]
    fn descriptor_layout_matches_cufile_h() {
        // CUfileDescr_t: int type; union { int fd; void *handle; }; const CUfileFSOps_t *.
        assert_eq!(std::mem::size_of::<RawHandleUnion>(), 8);
        assert_eq!(std::mem::offset_of!(RawDescr, handle), 8);
        assert_eq!(std::mem::offset_of!(RawDescr, fs_ops), 16);
        assert_eq!(std::mem::size_of::<RawStatus>(), 8);
    }

    #[test]
    fn absent_library_is_a_typed_error_naming_what_was_tried() {
        let names = vec![
            "/nonexistent/llmstream/libcufile.so.0".to_owned(),
            "libllmstream-no-such-cufile.so.0".to_owned(),
        ];
        let e = Api::load(&names).unwrap_err();
        match &e {
            CuFileError::Library { tried, reason } => {
                assert!(
                    tried.contains("/nonexistent/llmstream/libcufile.so.0"),
                    "{tried}"
                );
                assert!(reason.contains("libllmstream-no-such-cufile"), "{reason}");
            }
            other => panic!("wanted Library, got {other:?}"),
        }
        assert_eq!(e.code(), None);
    }

    #[test]
    fn a_library_without_cufile_symbols_is_refused() {
        // The C library loads everywhere and has none of cuFile's entry points.
        let e = Api::load(&["libc.so.6".to_owned()]).unwrap_err();
        match e {
            CuFileError::Symbol { library, symbol } => {
                assert_eq!(library, "libc.so.6");
                assert!(symbol.starts_with("cuFile"), "{symbol}");
            }
            other => panic!("wanted Symbol, got {other:?}"),
        }
    }

    #[test]
    fn open_for_cufile_names_missing_files() {
        let e = open_for_cufile(Path::new("/nonexistent/llmstream-cufile")).unwrap_err();
        assert!(matches!(e, CuFileError::Open { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/llmstream-cufile"));
    }

    #[test]
    fn open_for_cufile_falls_back_where_o_direct_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [1u8; 4096]).unwrap();
        // Either outcome is legitimate depending on the file system; the fd must be readable.
        let (fd, _direct) = open_for_cufile(&p).unwrap();
        assert!(fd.as_raw_fd() >= 0);
    }
}
