//! Stats (in progress).
pub struct Stats;
