//! Strings across the boundary: NUL-terminated UTF-8 in, caller-buffer writes out.

use super::error::{lls_status, FfiError};
use std::ffi::{c_char, CStr};

/// Borrow a NUL-terminated UTF-8 argument named `what`.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and unmodified for `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, FfiError> {
    if p.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: `p` is non-NULL and, by this function's contract, NUL-terminated and live for 'a.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| {
        FfiError::new(
            lls_status::InvalidUtf8,
            format!("argument `{what}` is not valid UTF-8: {e}"),
        )
    })
}

/// Write `text` and a NUL into `buf` (`len` bytes) and its length (without the NUL) into
/// `*out_n`. When it does not fit, `*out_n` receives the length needed (without the NUL), `buf`
/// is left alone and the result is `BufferTooSmall`. `buf` may be NULL when `len` is 0.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes; `out_n` is NULL or points to a writable,
/// aligned `usize`.
pub(crate) unsafe fn write_str(
    text: &str,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> Result<(), FfiError> {
    if out_n.is_null() {
        return Err(FfiError::null("out_n"));
    }
    if buf.is_null() && len > 0 {
        return Err(FfiError::null("buf"));
    }
    let n = text.len();
    if n >= len {
        // SAFETY: `out_n` is non-NULL and writable (this function's contract).
        unsafe { out_n.write(n) };
        return Err(FfiError::new(
            lls_status::BufferTooSmall,
            format!(
                "the text needs {} bytes with its NUL; the buffer has {len}",
                n + 1
            ),
        ));
    }
    // SAFETY: `buf` is non-NULL (len > n >= 0) and holds `len >= n + 1` writable bytes; `text`
    // is a distinct Rust allocation, so the ranges do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
        buf.add(n).write(0);
        out_n.write(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_in_are_checked() {
        // SAFETY: NULL is allowed.
        let e = unsafe { str_arg(std::ptr::null(), "path") }.unwrap_err();
        assert_eq!(e.status, lls_status::NullPointer);
        assert!(e.message.contains("`path`"));
        let bad = [0xffu8, 0xfe, 0];
        // SAFETY: `bad` is NUL-terminated and outlives the call.
        let e = unsafe { str_arg(bad.as_ptr().cast(), "key") }.unwrap_err();
        assert_eq!(e.status, lls_status::InvalidUtf8);
        // SAFETY: a C string literal.
        assert_eq!(unsafe { str_arg(c"ok".as_ptr(), "k") }.unwrap(), "ok");
    }

    #[test]
    fn strings_out_fit_or_report_the_size() {
        let mut buf = [0x55 as c_char; 6];
        let mut n = 0usize;
        // SAFETY: `buf` has 6 writable bytes, `n` is a usize.
        let r = unsafe { write_str("hello!", buf.as_mut_ptr(), buf.len(), &mut n) };
        assert_eq!(r.unwrap_err().status, lls_status::BufferTooSmall);
        assert_eq!(n, 6);
        assert!(buf.iter().all(|b| *b == 0x55), "untouched on failure");
        // SAFETY: as above.
        unsafe { write_str("hello", buf.as_mut_ptr(), buf.len(), &mut n) }.unwrap();
        assert_eq!(n, 5);
        // SAFETY: write_str NUL-terminated `buf`.
        assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_bytes(), b"hello");
        // Size query with a NULL buffer.
        // SAFETY: NULL buffer with len 0 is allowed.
        let r = unsafe { write_str("abc", std::ptr::null_mut(), 0, &mut n) };
        assert_eq!(r.unwrap_err().status, lls_status::BufferTooSmall);
        assert_eq!(n, 3);
        // SAFETY: NULL out_n is reported, not dereferenced.
        let r = unsafe { write_str("abc", buf.as_mut_ptr(), 6, std::ptr::null_mut()) };
        assert_eq!(r.unwrap_err().status, lls_status::NullPointer);
        // SAFETY: NULL buf with nonzero len is reported, not dereferenced.
        let r = unsafe { write_str("abc", std::ptr::null_mut(), 6, &mut n) };
        assert_eq!(r.unwrap_err().status, lls_status::NullPointer);
    }
}
