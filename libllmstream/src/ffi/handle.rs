//! Opaque handles: how a C pointer maps to the Rust value behind it.
//!
//! Every handle type is a zero-sized, non-constructible Rust struct (written out by hand, not by a
//! macro, because cbindgen does not expand macros; it declares an opaque `struct` in the header)
//! that names, through [`Handle::Target`], the Rust value a C
//! pointer of that type really points to. All handles are owned through a `Box`: `into_raw`
//! hands one out, `free` takes it back, and the `as_*` functions borrow it in between.

/// A C handle type backed by a boxed `Target`.
pub(crate) trait Handle: Sized {
    /// The Rust value behind the handle.
    type Target;

    /// Box `value` and hand the pointer to C.
    fn into_raw(value: Self::Target) -> *mut Self {
        Box::into_raw(Box::new(value)).cast()
    }

    /// Borrow the value behind `p`, `None` for NULL.
    ///
    /// # Safety
    /// `p` is NULL or a pointer returned by [`Handle::into_raw`] of this type that was not freed,
    /// and no `&mut` to the same value exists for `'a`.
    unsafe fn as_ref<'a>(p: *const Self) -> Option<&'a Self::Target> {
        // SAFETY: by this function's contract `p` is NULL or points to a live, aligned `Target`
        // (it came from `Box::into_raw` of a `Target`) that nobody mutates during `'a`.
        unsafe { p.cast::<Self::Target>().as_ref() }
    }

    /// Borrow the value behind `p` mutably, `None` for NULL.
    ///
    /// # Safety
    /// As [`Handle::as_ref`], and no other reference to the value exists for `'a`.
    unsafe fn as_mut<'a>(p: *mut Self) -> Option<&'a mut Self::Target> {
        // SAFETY: by this function's contract `p` is NULL or points to a live `Target` that is
        // not otherwise borrowed during `'a`.
        unsafe { p.cast::<Self::Target>().as_mut() }
    }

    /// Take the value back and drop it; NULL is a no-op.
    ///
    /// # Safety
    /// `p` is NULL or a pointer returned by [`Handle::into_raw`] of this type that was not freed;
    /// it must not be used afterwards.
    unsafe fn free(p: *mut Self) {
        if !p.is_null() {
            // SAFETY: `p` came from `Box::into_raw` of a `Target` and is freed only once (this
            // function's contract), so rebuilding the box is sound.
            drop(unsafe { Box::from_raw(p.cast::<Self::Target>()) });
        }
    }
}

/// `*const T` or `*mut T`, seen as `*const T` (lets one macro borrow handles passed either way).
pub(crate) trait AsConstPtr {
    type Pointee;
    fn into_const_ptr(self) -> *const Self::Pointee;
}

impl<T> AsConstPtr for *const T {
    type Pointee = T;
    fn into_const_ptr(self) -> *const T {
        self
    }
}

impl<T> AsConstPtr for *mut T {
    type Pointee = T;
    fn into_const_ptr(self) -> *const T {
        self.cast_const()
    }
}
