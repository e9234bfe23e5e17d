//! Library and ABI versions. The header's version macros (`LLMSTREAM_VERSION_MAJOR` ...,
//! `LLMSTREAM_ABI_VERSION`, written in cbindgen.toml) are checked against Cargo.toml and
//! [`crate::ABI_VERSION`] by the tests below.

use super::panic::guard_value;
use std::ffi::c_char;

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

    /// The value of `#define NAME value` in the committed header.
    fn header_define(header: &str, name: &str) -> Option<u32> {
        header.lines().find_map(|l| {
            let rest = l.strip_prefix("#define ")?.strip_prefix(name)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
    }

    #[test]
    fn header_versions_match_the_crate() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../include/llmstream.h");
        let header = std::fs::read_to_string(path).unwrap();
        let want = |v: &str| v.parse::<u32>().unwrap();
        let got = |n| header_define(&header, n).unwrap_or_else(|| panic!("{n} not in {path}"));
        assert_eq!(
            got("LLMSTREAM_VERSION_MAJOR"),
            want(env!("CARGO_PKG_VERSION_MAJOR"))
        );
        assert_eq!(
            got("LLMSTREAM_VERSION_MINOR"),
            want(env!("CARGO_PKG_VERSION_MINOR"))
        );
        assert_eq!(
            got("LLMSTREAM_VERSION_PATCH"),
            want(env!("CARGO_PKG_VERSION_PATCH"))
        );
        assert_eq!(got("LLMSTREAM_ABI_VERSION"), crate::ABI_VERSION);
        assert_eq!(lls_abi_version(), crate::ABI_VERSION);
        // SAFETY: lls_version returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(lls_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn defines_are_parsed() {
        let h = "#define LLMSTREAM_ABI_VERSION 1\n#define LLMSTREAM_ABI_VERSION_X 7\n";
        assert_eq!(header_define(h, "LLMSTREAM_ABI_VERSION"), Some(1));
        assert_eq!(header_define(h, "LLMSTREAM_VERSION_MAJOR"), None);
    }
}
