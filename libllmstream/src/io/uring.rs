//! The io_uring engine: registered staging buffers (READ_FIXED) and registered files.
//!
//! Set-up order: create the ring disabled, probe opcodes, register files and buffers, enable.
//! Drop order: the ring (and with it the kernel's references to the registered buffers and files)
//! goes first, inside the worker, before the staging pool it points into is freed — the worker
//! owns both and declares the engine before the pool.

use super::engine::{Completion, ReadOp};
use super::{memlock, EngineKind, ReaderConfig};
use crate::error::{Error, Result};
use crate::staging::StagingPool;
use crate::stats::StatsInner;
use io_uring::{opcode, squeue, types, IoUring};
use std::collections::VecDeque;
use std::os::fd::RawFd;

const FILE_SLOTS: u32 = 64;

struct InFlight {
    op: ReadOp,
    done: usize,
}

pub(crate) struct UringEngine {
    ring: IoUring,
    fixed_buffers: bool,
    free_file_slots: Vec<u32>,
    pending: VecDeque<usize>,
    slab: Vec<Option<InFlight>>,
    free_slab: Vec<usize>,
    submitted: usize,
    outstanding: usize,
}

fn uring_err(what: &str, e: &std::io::Error) -> Error {
    Error::UringUnavailable {
        reason: format!("{what}: {e}"),
    }
}

impl UringEngine {
    pub fn new(cfg: &ReaderConfig, pool: &StagingPool, stats: &StatsInner) -> Result<Self> {
        let entries = cfg.queue_depth.next_power_of_two();
        let ring = match IoUring::builder().setup_r_disabled().build(entries) {
            Ok(r) => r,
            // Kernels before 5.10 lack IORING_SETUP_R_DISABLED; an enabled ring works the same.
            Err(_) => IoUring::new(entries).map_err(|e| uring_err("io_uring_setup", &e))?,
        };
        let sub = ring.submitter();
        let free_file_slots = match sub.register_files_sparse(FILE_SLOTS) {
            Ok(()) => (0..FILE_SLOTS).rev().collect(),
            Err(e) => {
                stats.fallback(format!(
                    "io_uring file registration refused ({e}); using plain fds"
                ));
                Vec::new()
            }
        };
        let iovecs: Vec<libc::iovec> = pool
            .slots()
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let required = pool.total_bytes() as u64;
        let fixed_buffers = match memlock::check(required) {
            Err(e) => {
                stats.fallback(format!(
                    "io_uring buffers not registered: {e}; reads use unregistered buffers"
                ));
                false
            }
            // SAFETY: every iovec describes a live staging mapping owned by `pool`, which the
            // worker keeps alive until after this ring is dropped (see the module docs).
            Ok(()) => match unsafe { sub.register_buffers(&iovecs) } {
                Ok(()) => true,
                Err(e) => {
                    stats.fallback(format!(
                        "io_uring buffer registration refused ({e}); reads use unregistered buffers"
                    ));
                    false
                }
            },
        };
        // Enabling an already enabled ring fails with EBADFD; that is the pre-5.10 case above.
        if let Err(e) = sub.register_enable_rings() {
            if e.raw_os_error() != Some(libc::EBADFD) {
                return Err(uring_err("IORING_REGISTER_ENABLE_RINGS", &e));
            }
        }
        Ok(Self {
            ring,
            fixed_buffers,
            free_file_slots,
            pending: VecDeque::new(),
            slab: Vec::new(),
            free_slab: Vec::new(),
            submitted: 0,
            outstanding: 0,
        })
    }

    pub fn kind(&self) -> EngineKind {
        if self.fixed_buffers {
            EngineKind::UringFixed
        } else {
            EngineKind::Uring
        }
    }

    pub fn register_file(&mut self, fd: RawFd) -> Option<u32> {
        let slot = self.free_file_slots.pop()?;
        match self.ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => Some(slot),
            Err(e) => {
                tracing::debug!("register_files_update failed: {e}");
                self.free_file_slots.push(slot);
                None
            }
        }
    }

    pub fn unregister_file(&mut self, slot: u32) {
        // -1 clears the slot; the kernel drops its file reference once no request uses it.
        if self
            .ring
            .submitter()
            .register_files_update(slot, &[-1])
            .is_ok()
        {
            self.free_file_slots.push(slot);
        }
    }

    pub fn push(&mut self, op: ReadOp) {
        let entry = InFlight { op, done: 0 };
        let idx = if let Some(i) = self.free_slab.pop() {
            self.slab[i] = Some(entry);
            i
        } else {
            self.slab.push(Some(entry));
            self.slab.len() - 1
        };
        self.pending.push_back(idx);
        self.outstanding += 1;
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    fn sqe_for(&self, idx: usize) -> Option<squeue::Entry> {
        let f = self.slab.get(idx)?.as_ref()?;
        let op = &f.op;
        let off = op.offset + f.done as u64;
        // SAFETY: `done < len` for queued entries, so the pointer stays inside the op's slot.
        let ptr = unsafe { op.buf.add(f.done) };
        let len = u32::try_from(op.len - f.done).unwrap_or(u32::MAX);
        let e = match (self.fixed_buffers, op.fixed_file) {
            (true, Some(slot)) => {
                opcode::ReadFixed::new(types::Fixed(slot), ptr, len, op.buf_index)
                    .offset(off)
                    .build()
            }
            (true, None) => opcode::ReadFixed::new(types::Fd(op.fd), ptr, len, op.buf_index)
                .offset(off)
                .build(),
            (false, Some(slot)) => opcode::Read::new(types::Fixed(slot), ptr, len)
                .offset(off)
                .build(),
            (false, None) => opcode::Read::new(types::Fd(op.fd), ptr, len)
                .offset(off)
                .build(),
        };
        Some(e.user_data(idx as u64))
    }

    pub fn wait(&mut self, out: &mut Vec<Completion>) -> Result<()> {
        if self.outstanding == 0 {
            return Ok(());
        }
        let before = out.len();
        while out.len() == before {
            // Fill the submission queue.
            while let Some(&idx) = self.pending.front() {
                let Some(sqe) = self.sqe_for(idx) else {
                    self.pending.pop_front();
                    continue;
                };
                // SAFETY: the entry's buffer is a staging slot (registered, or at least live)
                // that stays untouched until its completion is reaped below; the fd or fixed
                // slot stays valid while the job that pushed it is active.
                let pushed = unsafe { self.ring.submission().push(&sqe) };
                if pushed.is_err() {
                    break;
                }
                self.pending.pop_front();
                self.submitted += 1;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    return Err(Error::Os {
                        op: "io_uring_enter",
                        source: e,
                    })
                }
            }
            let cqes: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (ud, res) in cqes {
                self.submitted = self.submitted.saturating_sub(1);
                let idx = usize::try_from(ud).unwrap_or(usize::MAX);
                let Some(Some(f)) = self.slab.get_mut(idx) else {
                    continue;
                };
                let finished = if res < 0 {
                    if -res == libc::EAGAIN || -res == libc::EINTR {
                        self.pending.push_front(idx);
                        continue;
                    }
                    Some(Err(std::io::Error::from_raw_os_error(-res)))
                } else if res == 0 {
                    Some(Ok(f.done))
                } else {
                    f.done += usize::try_from(res).unwrap_or(0);
                    if f.done >= f.op.len {
                        Some(Ok(f.done))
                    } else {
                        // Short read: continue where it stopped.
                        self.pending.push_front(idx);
                        None
                    }
                };
                if let Some(result) = finished {
                    let tag = f.op.tag;
                    self.slab[idx] = None;
                    self.free_slab.push(idx);
                    self.outstanding -= 1;
                    out.push(Completion { tag, result });
                }
            }
        }
        Ok(())
    }
}
