//! Argument checks for entry-point bodies (closures returning `Result<_, FfiError>`). Every
//! entry point that uses them states in its `# Safety` section that each handle argument is NULL
//! or a live handle of its type, and each output pointer NULL or writable and aligned.

/// Borrow the handle behind pointer argument `$p` (const or mut), or return a NULL-pointer error.
macro_rules! arg_ref {
    ($p:ident) => {
        // SAFETY: the enclosing entry point's contract: `$p` is NULL or a live handle of its type
        // that no other thread frees or mutates during the call.
        match unsafe {
            $crate::ffi::handle::Handle::as_ref($crate::ffi::handle::AsConstPtr::into_const_ptr($p))
        } {
            Some(v) => v,
            None => return Err($crate::ffi::error::FfiError::null(stringify!($p))),
        }
    };
}

/// Borrow the handle behind `*mut` argument `$p` mutably, or return a NULL-pointer error.
macro_rules! arg_mut {
    ($p:ident) => {
        // SAFETY: the enclosing entry point's contract: `$p` is NULL or a live handle of its type
        // that no other thread uses during the call.
        match unsafe { $crate::ffi::handle::Handle::as_mut($p) } {
            Some(v) => v,
            None => return Err($crate::ffi::error::FfiError::null(stringify!($p))),
        }
    };
}

/// Return a NULL-pointer error unless every output pointer is non-NULL. Used first, so that a
/// call with a NULL output does nothing.
macro_rules! check_out {
    ($($p:ident),+ $(,)?) => {
        $(
            if $p.is_null() {
                return Err($crate::ffi::error::FfiError::null(stringify!($p)));
            }
        )+
    };
}

/// Write `$v` through output pointer `$p` (checked for NULL again here).
macro_rules! put {
    ($p:ident, $v:expr) => {{
        let value = $v;
        if $p.is_null() {
            return Err($crate::ffi::error::FfiError::null(stringify!($p)));
        }
        // SAFETY: `$p` is non-NULL, and the enclosing entry point's contract makes it writable
        // and aligned for its type. `write` does not read or drop the old (maybe uninitialised)
        // contents.
        unsafe { $p.write(value) };
    }};
}
