//! Public API (in progress).
pub struct Buffer;
pub enum BufferKind {
    Device,
}
pub struct Config;
pub struct Context;
pub struct Model;
pub struct ReadHandle;
