//! The shared RAM tier: one sealed memfd per model identity, filled once from the first client's
//! descriptor and handed to every client that opens the same file; reference counted by the
//! models open on all connections, released (memfd closed, budget returned) when the last one
//! closes, whether its client said goodbye or died.
//!
//! A model's identity is what `fstat` of the passed descriptor says (device, inode, size and
//! modification time; a block device by its device number and size), never a path: two clients
//! share a tier only when they opened the same unchanged file, and a client gets a tier only
//! for a file it could open itself.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::proto::TierStatus;

/// What makes two descriptors "the same model".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Key {
    /// The identity of an opened file (`len`: its size, from the library for block devices).
    pub fn of(meta: &Metadata, len: u64) -> Self {
        if meta.file_type().is_block_device() {
            Self {
                dev: meta.rdev(),
                ino: 0,
                size: len,
                mtime: 0,
                mtime_nsec: 0,
            }
        } else {
            Self {
                dev: meta.dev(),
                ino: meta.ino(),
                size: len,
                mtime: meta.mtime(),
                mtime_nsec: meta.mtime_nsec(),
            }
        }
    }
}

/// One model's tier.
#[derive(Debug)]
pub struct Entry {
    label: String,
    /// File offset of the memfd's first byte.
    pub file_offset: u64,
    /// Bytes held.
    pub len: u64,
    /// Bytes charged to the budget (`len` rounded up to pages).
    charged: u64,
    /// The sealed memfd once filled; `None` when filling failed.
    fd: OnceLock<Option<OwnedFd>>,
}

struct Slot {
    entry: Arc<Entry>,
    refs: u64,
}

#[derive(Default)]
struct Inner {
    used: u64,
    slots: HashMap<Key, Slot>,
}

/// All tiers of the daemon, within the budget.
pub struct Registry {
    budget: u64,
    inner: Mutex<Inner>,
    /// Tier bytes handed to clients so far.
    shared: AtomicU64,
}

/// A reference to a tier held by one open model; dropping it releases the reference.
pub struct TierRef {
    registry: Arc<Registry>,
    key: Key,
    entry: Arc<Entry>,
}

impl std::fmt::Debug for TierRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierRef").field("key", &self.key).finish()
    }
}

/// A point-in-time view for the status report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The budget.
    pub budget: u64,
    /// Bytes held (charged) by all tiers.
    pub bytes: u64,
    /// Tier bytes handed to clients so far.
    pub shared: u64,
    /// The tiers (at most `max`).
    pub tiers: Vec<TierStatus>,
}

/// The range to hold for a model: the longest prefix of its data section (from `data_offset`)
/// that ends at a layer's end or at the end of the file and whose page-rounded size fits in
/// `available` bytes. `None` when not even the first layer fits.
pub fn plan(
    data_offset: u64,
    layer_ends: impl IntoIterator<Item = u64>,
    file_len: u64,
    available: u64,
    page: u64,
) -> Option<(u64, u64)> {
    let page = page.max(1);
    layer_ends
        .into_iter()
        .chain([file_len])
        .filter(|&end| end > data_offset && end <= file_len)
        .filter(|&end| {
            (end - data_offset)
                .checked_next_multiple_of(page)
                .is_some_and(|c| c <= available)
        })
        .max()
        .map(|end| (data_offset, end - data_offset))
}

impl Registry {
    /// A registry holding at most `budget` bytes.
    pub fn new(budget: u64) -> Arc<Self> {
        Arc::new(Self {
            budget,
            inner: Mutex::new(Inner::default()),
            shared: AtomicU64::new(0),
        })
    }

    /// A reference to the tier of `key`: the existing one, or a new one planned by `plan`
    /// (given the bytes still free in the budget; `None`: no tier). Not yet filled: see
    /// [`Registry::fill`].
    pub fn acquire(
        self: &Arc<Self>,
        key: Key,
        label: &str,
        page: u64,
        plan: impl FnOnce(u64) -> Option<(u64, u64)>,
    ) -> Option<TierRef> {
        let mut inner = self.inner.lock().ok()?;
        if let Some(slot) = inner.slots.get_mut(&key) {
            slot.refs += 1;
            return Some(TierRef {
                registry: Arc::clone(self),
                key,
                entry: Arc::clone(&slot.entry),
            });
        }
        let available = self.budget.saturating_sub(inner.used);
        let (file_offset, len) = plan(available)?;
        let charged = len.checked_next_multiple_of(page.max(1))?;
        if len == 0 || charged > available {
            return None;
        }
        inner.used += charged;
        let entry = Arc::new(Entry {
            label: label.chars().take(256).collect(),
            file_offset,
            len,
            charged,
            fd: OnceLock::new(),
        });
        inner.slots.insert(
            key,
            Slot {
                entry: Arc::clone(&entry),
                refs: 1,
            },
        );
        Some(TierRef {
            registry: Arc::clone(self),
            key,
            entry,
        })
    }

    fn release(&self, key: &Key) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some(slot) = inner.slots.get_mut(key) else {
            return;
        };
        slot.refs -= 1;
        if slot.refs == 0 {
            if let Some(slot) = inner.slots.remove(key) {
                inner.used -= slot.entry.charged;
                tracing::info!(label = %slot.entry.label, bytes = slot.entry.len, "shared RAM tier released");
            }
        }
    }

    /// The state for `status`.
    pub fn snapshot(&self, max: usize) -> Snapshot {
        let shared = self.shared.load(Ordering::Relaxed);
        let Ok(inner) = self.inner.lock() else {
            return Snapshot::default();
        };
        Snapshot {
            budget: self.budget,
            bytes: inner.used,
            shared,
            tiers: inner
                .slots
                .values()
                .take(max)
                .map(|s| TierStatus {
                    label: s.entry.label.clone(),
                    bytes: s.entry.len,
                    refs: s.refs,
                })
                .collect(),
        }
    }
}

impl TierRef {
    /// The tier's range and a descriptor of its memfd to send, filling it first if no one has
    /// (`fill` runs at most once per tier; concurrent callers wait for it). `None` when the
    /// fill failed (then this model goes without a tier).
    pub fn filled(
        &self,
        fill: impl FnOnce(&Entry) -> Option<OwnedFd>,
    ) -> Option<(&Entry, OwnedFd)> {
        let fd = self.entry.fd.get_or_init(|| fill(&self.entry)).as_ref()?;
        match fd.try_clone() {
            Ok(dup) => {
                self.registry
                    .shared
                    .fetch_add(self.entry.len, Ordering::Relaxed);
                Some((&self.entry, dup))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot duplicate the tier's memfd");
                None
            }
        }
    }
}

impl Drop for TierRef {
    fn drop(&mut self) {
        self.registry.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64) -> Key {
        Key {
            dev: 1,
            ino,
            size: 10,
            mtime: 0,
            mtime_nsec: 0,
        }
    }

    #[test]
    fn plan_takes_the_longest_prefix_that_fits() {
        // Data at 100; layers end at 1100, 2100, 3100; file ends at 3200.
        let ends = [1100, 2100, 3100];
        assert_eq!(plan(100, ends, 3200, 1 << 20, 1), Some((100, 3100)));
        assert_eq!(plan(100, ends, 3200, 2500, 1), Some((100, 2000)));
        assert_eq!(plan(100, ends, 3200, 999, 1), None);
        // Page rounding counts: 2000 bytes need 2048 with 1 KiB pages.
        assert_eq!(plan(100, ends, 3200, 2047, 1024), Some((100, 1000)));
        // Ends outside the data section are ignored.
        assert_eq!(plan(100, [50, 5000], 3200, 1 << 20, 1), Some((100, 3100)));
        assert_eq!(plan(100, [], 100, 1 << 20, 1), None);
    }

    #[test]
    fn refcount_shares_and_releases() {
        let r = Registry::new(10_000);
        let a = r.acquire(key(1), "m", 1, |_| Some((0, 4000))).unwrap();
        // The second reference shares the first tier: its plan is not consulted.
        let b = r
            .acquire(key(1), "m", 1, |_| panic!("planned twice"))
            .unwrap();
        assert_eq!(r.snapshot(8).bytes, 4000);
        assert_eq!(r.snapshot(8).tiers[0].refs, 2);
        // Another file gets what is left, no more.
        assert!(r
            .acquire(key(2), "n", 1, |avail| {
                assert_eq!(avail, 6000);
                None
            })
            .is_none());
        assert!(r.acquire(key(2), "n", 1, |_| Some((0, 6001))).is_none());
        let c = r.acquire(key(2), "n", 1, |_| Some((0, 6000))).unwrap();
        assert_eq!(r.snapshot(8).bytes, 10_000);
        drop(a);
        assert_eq!(r.snapshot(8).bytes, 10_000);
        drop(b);
        assert_eq!(r.snapshot(8).bytes, 6000);
        drop(c);
        let s = r.snapshot(8);
        assert_eq!((s.bytes, s.tiers.len()), (0, 0));
    }

    #[test]
    fn fill_runs_once_and_failure_means_no_tier() {
        let r = Registry::new(1 << 20);
        let a = r.acquire(key(1), "m", 1, |_| Some((0, 10))).unwrap();
        let b = r.acquire(key(1), "m", 1, |_| None).unwrap();
        let mut calls = 0;
        assert!(a
            .filled(|_| {
                calls += 1;
                None
            })
            .is_none());
        assert!(b.filled(|_| panic!("filled twice")).is_none());
        assert_eq!(calls, 1);
        drop((a, b));
        // After the last reference a new open tries again.
        let c = r.acquire(key(1), "m", 1, |_| Some((0, 10))).unwrap();
        let dev_null = std::fs::File::open("/dev/null").unwrap();
        let (e, _fd) = c.filled(|_| Some(OwnedFd::from(dev_null))).unwrap();
        assert_eq!((e.file_offset, e.len), (0, 10));
        assert_eq!(r.snapshot(8).shared, 10);
    }
}
