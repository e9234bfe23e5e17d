//! Library and ABI versions. The `LLMSTREAM_*` constants become `#define`s of the header (which
//! also builds the string `LLMSTREAM_VERSION` from them, see cbindgen.toml); the build fails
//! when they disagree with Cargo.toml or [`crate::ABI_VERSION`].

use super::panic::guard_value;
use std::ffi::c_char;

/// Major version of the library (Cargo.toml `version`).
pub const LLMSTREAM_VERSION_MAJOR: u32 = 0;
/// Minor version of the library.
pub const LLMSTREAM_VERSION_MINOR: u32 = 1;
/// Patch version of the library.
pub const LLMSTREAM_VERSION_PATCH: u32 = 0;
/// Version of the C ABI this header describes; compare with `lls_abi_version()` at run time.
pub const LLMSTREAM_ABI_VERSION: u32 = 1;

/// Parse a decimal number at compile time (`u32::MAX` for anything else).
const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    if b.is_empty() {
        return u32::MAX;
    }
    let mut v: u32 = 0;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            return u32::MAX;
        }
        v = match v.checked_mul(10) {
            Some(t) => match t.checked_add((b[i] - b'0') as u32) {
                Some(n) => n,
                None => return u32::MAX,
            },
            None => return u32::MAX,
        };
        i += 1;
    }
    v
}

const _: () = {
    assert!(
        LLMSTREAM_VERSION_MAJOR == parse_u32(env!("CARGO_PKG_VERSION_MAJOR")),
        "update LLMSTREAM_VERSION_MAJOR to Cargo.toml's version"
    );
    assert!(
        LLMSTREAM_VERSION_MINOR == parse_u32(env!("CARGO_PKG_VERSION_MINOR")),
        "update LLMSTREAM_VERSION_MINOR to Cargo.toml's version"
    );
    assert!(
        LLMSTREAM_VERSION_PATCH == parse_u32(env!("CARGO_PKG_VERSION_PATCH")),
        "update LLMSTREAM_VERSION_PATCH to Cargo.toml's version"
    );
    assert!(
        LLMSTREAM_ABI_VERSION == crate::ABI_VERSION,
        "LLMSTREAM_ABI_VERSION and crate::ABI_VERSION disagree"
    );
};

/// The C ABI version of the loaded library (`LLMSTREAM_ABI_VERSION` of the header it was built
/// with). A program may refuse to run when it differs from the header it was compiled against.
#[no_mangle]
pub extern "C" fn lls_abi_version() -> u32 {
    crate::ABI_VERSION
}

/// The version of the loaded library (`"0.1.0"`), a static string.
#[no_mangle]
pub extern "C" fn lls_version() -> *const c_char {
    guard_value(std::ptr::null(), || {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn const_parsers() {
        assert_eq!(parse_u32("0"), 0);
        assert_eq!(parse_u32("42"), 42);
        assert_eq!(parse_u32(""), u32::MAX);
        assert_eq!(parse_u32("1a"), u32::MAX);
        assert_eq!(parse_u32("99999999999"), u32::MAX);
    }

    #[test]
    fn runtime_versions_match_the_crate() {
        // SAFETY: lls_version returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(lls_version()) };
        assert_eq!(v.to_str().unwrap(), crate::VERSION);
        assert_eq!(lls_abi_version(), LLMSTREAM_ABI_VERSION);
    }
}
