//! The C ABI (`lls_*`). OWNED BY THE C ABI WORK ITEM.
