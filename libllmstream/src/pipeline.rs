//! The streaming worker: one thread per context that turns byte-range requests into storage
//! reads into a bounded pool of staging slots, and hands each filled slot to the backend while
//! later slots are still being read (overlap), with back-pressure when every slot is busy.
//!
//! Requests are served in order of arrival, each split into slot-sized chunks; a chunk reads the
//! aligned superset of its range (O_DIRECT) in `request_size` pieces. The worker never does a
//! device-wide synchronize: it waits on the engine for reads and on per-copy events for slots.

use crate::backend::{Backend, Memory, Ticket};
use crate::error::{Error, Result};
use crate::io::engine::{Completion, Engine, ReadOp};
use crate::io::{ReaderConfig, Source};
use crate::staging::StagingPool;
use crate::stats::StatsInner;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Completion state shared between a request and its handle.
#[derive(Debug, Default)]
pub(crate) struct JobState {
    result: Mutex<Option<Result<()>>>,
    cv: Condvar,
}

impl JobState {
    pub fn finish(&self, r: Result<()>) {
        if let Ok(mut g) = self.result.lock() {
            *g = Some(r);
        }
        self.cv.notify_all();
    }

    pub fn is_done(&self) -> bool {
        self.result.lock().map(|g| g.is_some()).unwrap_or(true)
    }

    pub fn wait(&self) -> Result<()> {
        let mut g = self
            .result
            .lock()
            .map_err(|_| Error::WorkerGone("poisoned completion".into()))?;
        loop {
            if let Some(r) = g.take() {
                // Leave a marker so a second wait reports completion instead of blocking.
                *g = Some(Ok(()));
                return r;
            }
            g = self
                .cv
                .wait(g)
                .map_err(|_| Error::WorkerGone("poisoned completion".into()))?;
        }
    }
}

/// Memory a request writes into, kept alive (and marked busy) until the request completes.
#[derive(Debug)]
pub(crate) struct DestMem {
    pub mem: Arc<Memory>,
    pub busy: Arc<AtomicIsize>,
}

impl Drop for DestMem {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a request's bytes go.
#[derive(Debug)]
pub(crate) enum Dest {
    /// Read into staging only (measures storage).
    Discard,
    /// Into memory at an offset.
    Mem { dst: DestMem, offset: usize },
}

/// A message to the worker.
#[derive(Debug)]
pub(crate) enum Msg {
    Read {
        src: Arc<Source>,
        offset: u64,
        len: u64,
        dest: Dest,
        state: Arc<JobState>,
    },
    Copy {
        src: DestMem,
        src_offset: usize,
        dst: DestMem,
        dst_offset: usize,
        len: usize,
        state: Arc<JobState>,
    },
}

/// What keeps a copy's source alive until the copy completes (held, never read).
#[derive(Debug)]
#[allow(dead_code)]
enum CopySrc {
    /// A buffer (marked busy).
    Mem(DestMem),
    /// A file whose shared RAM tier the bytes come from.
    Tier(Arc<Source>),
}

struct Job {
    src: Arc<Source>,
    end: u64,
    next: u64,
    dest: Dest,
    dest_start: u64,
    state: Arc<JobState>,
    chunks_out: usize,
    error: Option<Error>,
    fixed_file: Option<u32>,
}

struct Chunk {
    job: u64,
    aligned_off: u64,
    skip: usize,
    take: usize,
    pieces_left: usize,
    need_end: usize,
    req: usize,
    ticket: Option<Ticket>,
}

pub(crate) struct Worker {
    // Field order is drop order: the engine (the ring holding registered buffers) goes before
    // the pool it points into.
    engine: Engine,
    pool: StagingPool,
    backend: Arc<Backend>,
    cfg: ReaderConfig,
    stats: Arc<StatsInner>,
    rx: Receiver<Msg>,
    jobs: HashMap<u64, Job>,
    order: VecDeque<u64>,
    next_job: u64,
    chunks: Vec<Option<Chunk>>,
    free_slots: Vec<usize>,
    copying: VecDeque<usize>,
    copies: VecDeque<(Ticket, CopySrc, DestMem, Arc<JobState>)>,
    pinned: bool,
}

impl Worker {
    pub fn new(
        cfg: ReaderConfig,
        backend: Arc<Backend>,
        stats: Arc<StatsInner>,
        rx: Receiver<Msg>,
    ) -> Result<Self> {
        let pool = StagingPool::new(cfg.staging_buffers, cfg.staging_buffer_size)?;
        let engine = Engine::new(&cfg, &pool, &stats)?;
        if let Ok(mut e) = stats.engine.lock() {
            *e = engine.kind().name().to_string();
        }
        let mut pinned = true;
        for slot in pool.slots() {
            if let Err(e) = backend.pin(slot) {
                stats.fallback(format!(
                    "staging buffers not page-locked ({e}); copies are slower"
                ));
                pinned = false;
                break;
            }
        }
        let n = pool.count();
        Ok(Self {
            engine,
            pool,
            backend,
            cfg,
            stats,
            rx,
            jobs: HashMap::new(),
            order: VecDeque::new(),
            next_job: 0,
            chunks: (0..n).map(|_| None).collect(),
            free_slots: (0..n).rev().collect(),
            copying: VecDeque::new(),
            copies: VecDeque::new(),
            pinned,
        })
    }

    /// Serve requests until every sender is gone and all work is finished.
    pub fn run(mut self) {
        if let Err(e) = self.backend.bind_thread() {
            tracing::error!("streaming worker cannot use the backend: {e}");
        }
        let mut comps = Vec::new();
        let mut open = true;
        loop {
            let idle = self.jobs.is_empty() && self.copies.is_empty();
            if idle && !open {
                break;
            }
            // Intake: block only when there is nothing else to do.
            if idle {
                match self.rx.recv() {
                    Ok(m) => self.accept(m),
                    Err(_) => {
                        open = false;
                        continue;
                    }
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(m) => self.accept(m),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let t0 = Instant::now();
            self.schedule();
            self.poll_copies(false);
            if self.engine.outstanding() > 0 {
                comps.clear();
                if let Err(e) = self.engine.wait(&mut comps) {
                    self.fail_all(&e);
                    continue;
                }
                for c in comps.drain(..) {
                    self.complete_read(c);
                }
            } else if !self.copying.is_empty() || !self.copies.is_empty() {
                self.poll_copies(true);
            }
            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            StatsInner::add(&self.stats.busy_ns, ns);
        }
    }

    fn accept(&mut self, m: Msg) {
        match m {
            Msg::Read {
                src,
                offset,
                len,
                dest: Dest::Mem { dst, offset: at },
                state,
            } if len > 0 && src.tier_bytes_at(offset, len).is_some() => {
                // Held in llmstreamd's shared RAM tier: a copy from the mapping, no storage read.
                let r = usize::try_from(len)
                    .map_err(|_| Error::InvalidArgument("read too large".into()))
                    .and_then(|n| {
                        let sp = src
                            .tier_bytes_at(offset, len)
                            .ok_or_else(|| Error::InvalidArgument("tier range vanished".into()))?;
                        self.copy_from(sp, &dst, at, n)
                    });
                match r {
                    Ok(t) => {
                        StatsInner::add(&self.stats.bytes_from_tier, len);
                        self.copies.push_back((t, CopySrc::Tier(src), dst, state));
                    }
                    Err(e) => {
                        StatsInner::add(&self.stats.errors, 1);
                        state.finish(Err(e));
                    }
                }
            }
            Msg::Read {
                src,
                offset,
                len,
                dest,
                state,
            } => {
                if len == 0 {
                    drop(dest);
                    StatsInner::add(&self.stats.requests, 1);
                    state.finish(Ok(()));
                    return;
                }
                let fixed_file = self.engine.register_file(src.read_fd());
                let id = self.next_job;
                self.next_job += 1;
                self.jobs.insert(
                    id,
                    Job {
                        end: offset + len,
                        next: offset,
                        dest_start: offset,
                        src,
                        dest,
                        state,
                        chunks_out: 0,
                        error: None,
                        fixed_file,
                    },
                );
                self.order.push_back(id);
            }
            Msg::Copy {
                src,
                src_offset,
                dst,
                dst_offset,
                len,
                state,
            } => {
                let r = self.start_copy(&src, src_offset, &dst, dst_offset, len);
                match r {
                    Ok(t) => self.copies.push_back((t, CopySrc::Mem(src), dst, state)),
                    Err(e) => {
                        StatsInner::add(&self.stats.errors, 1);
                        state.finish(Err(e));
                    }
                }
            }
        }
    }

    fn start_copy(
        &self,
        src: &DestMem,
        src_offset: usize,
        dst: &DestMem,
        dst_offset: usize,
        len: usize,
    ) -> Result<Ticket> {
        let sp = src
            .mem
            .host_ptr()
            .ok_or_else(|| Error::InvalidArgument("copy source must be host memory".into()))?;
        // SAFETY: the caller (Context::copy_async) checked both ranges against the buffers'
        // lengths, and both buffers stay alive and busy until the ticket completes.
        let sp = unsafe { sp.add(src_offset) };
        self.copy_from(sp, dst, dst_offset, len)
    }

    /// Start copying `len` bytes at `sp` into `dst` at `dst_offset`. The caller keeps
    /// `sp..sp+len` alive and unchanged until the ticket completes, and has checked that the
    /// destination range lies inside `dst` and does not overlap the source.
    fn copy_from(
        &self,
        sp: *const u8,
        dst: &DestMem,
        dst_offset: usize,
        len: usize,
    ) -> Result<Ticket> {
        match (dst.mem.host_ptr(), dst.mem.device_ptr()) {
            (Some(hp), _) => {
                // SAFETY: ranges checked by the caller (Context::copy_async, or read_async for
                // a tier copy); source and destination are distinct allocations or disjoint
                // ranges (checked by copy_async; a tier mapping is read-only, never a buffer).
                unsafe { std::ptr::copy_nonoverlapping(sp, hp.add(dst_offset), len) };
                StatsInner::add(&self.stats.bytes_to_host, len as u64);
                Ok(Ticket::Done)
            }
            (None, Some(dp)) => {
                // SAFETY: as above; the source stays alive until the ticket completes.
                let t = unsafe { self.backend.h2d_async(sp, dp + dst_offset as u64, len) }?;
                StatsInner::add(&self.stats.bytes_to_device, len as u64);
                Ok(t)
            }
            (None, None) => Err(Error::InvalidArgument(
                "copy destination has no address".into(),
            )),
        }
    }

    /// Start chunks while slots are free.
    fn schedule(&mut self) {
        while let Some(&slot) = self.free_slots.last() {
            let Some(id) = self.order.front().copied() else {
                return;
            };
            let Some(job) = self.jobs.get_mut(&id) else {
                self.order.pop_front();
                continue;
            };
            if job.next >= job.end || job.error.is_some() {
                self.order.pop_front();
                continue;
            }
            self.free_slots.pop();
            let align = job.src.offset_align().max(1);
            let start = job.next;
            let aligned_off = start - start % align;
            let slot_size = self.pool.slot_size() as u64;
            let want_end = job.end.min(aligned_off + slot_size);
            let read_end = want_end
                .next_multiple_of(align)
                .min(aligned_off + slot_size);
            let take = want_end - start;
            let skip = start - aligned_off;
            job.next = want_end;
            job.chunks_out += 1;
            let total = read_end - aligned_off;
            // Split at the device's largest request, rounded down to the alignment.
            let req_us = job
                .src
                .max_request()
                .filter(|m| *m >= 4096)
                .map_or(self.cfg.request_size, |m| {
                    self.cfg.request_size.min(m & !4095)
                });
            let req = req_us as u64;
            let pieces = total.div_ceil(req);
            let base = self.pool.slot(slot).as_mut_ptr();
            #[allow(clippy::cast_possible_truncation)] // all below slot_size, a usize
            let chunk = Chunk {
                job: id,
                aligned_off,
                skip: skip as usize,
                take: take as usize,
                pieces_left: pieces as usize,
                need_end: (skip + take) as usize,
                req: req_us,
                ticket: None,
            };
            for p in 0..pieces {
                let off = p * req;
                let len = req.min(total - off);
                #[allow(clippy::cast_possible_truncation)] // off, len < slot_size, a usize
                let op = ReadOp {
                    fd: job.src.read_fd(),
                    fixed_file: job.fixed_file,
                    offset: aligned_off + off,
                    // SAFETY: off < slot_size, inside the slot's mapping.
                    buf: unsafe { base.add(off as usize) },
                    len: len as usize,
                    buf_index: u16::try_from(slot).unwrap_or(0),
                    tag: (slot as u64) << 32 | p,
                };
                self.engine.push(op);
            }
            StatsInner::add(&self.stats.read_ops, pieces);
            self.chunks[slot] = Some(chunk);
        }
    }

    fn complete_read(&mut self, c: Completion) {
        #[allow(clippy::cast_possible_truncation)] // the high half holds a slot index
        let slot = (c.tag >> 32) as usize;
        let piece = c.tag & 0xffff_ffff;
        let Some(Some(chunk)) = self.chunks.get_mut(slot) else {
            return;
        };
        let req = chunk.req;
        #[allow(clippy::cast_possible_truncation)] // piece * req < slot_size
        let piece_off = piece as usize * req;
        let job_id = chunk.job;
        chunk.pieces_left -= 1;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        match c.result {
            Err(source) => {
                if job.error.is_none() {
                    job.error = Some(Error::Read {
                        path: job.src.path().to_owned(),
                        offset: chunk.aligned_off + piece_off as u64,
                        len: req as u64,
                        source,
                    });
                }
            }
            Ok(n) => {
                let counter = if job.src.is_direct() {
                    &self.stats.bytes_direct
                } else {
                    &self.stats.bytes_buffered
                };
                StatsInner::add(counter, n as u64);
                // A short piece is fine only if it still covers what the chunk needs.
                let piece_need = chunk.need_end.saturating_sub(piece_off).min(req);
                if n < piece_need && job.error.is_none() {
                    job.error = Some(Error::OutOfRange {
                        path: job.src.path().to_owned(),
                        offset: chunk.aligned_off + piece_off as u64,
                        len: piece_need as u64,
                        file_len: chunk.aligned_off + (piece_off + n) as u64,
                    });
                }
            }
        }
        if chunk.pieces_left > 0 {
            return;
        }
        // The slot is full: deliver it.
        let delivered = if job.error.is_some() {
            Ok(Ticket::Done)
        } else {
            let src = self.pool.slot(slot).as_ptr();
            // SAFETY: skip + take <= slot length by construction in `schedule`.
            let src = unsafe { src.add(chunk.skip) };
            let dest_off = chunk.aligned_off + chunk.skip as u64 - job.dest_start;
            deliver(
                &self.backend,
                &self.stats,
                &job.dest,
                src,
                dest_off,
                chunk.take,
            )
        };
        match delivered {
            Ok(t) => {
                chunk.ticket = Some(t);
                self.copying.push_back(slot);
            }
            Err(e) => {
                if job.error.is_none() {
                    job.error = Some(e);
                }
                chunk.ticket = Some(Ticket::Done);
                self.copying.push_back(slot);
            }
        }
        self.poll_copies(false);
    }

    /// Retire finished copies (in order); with `block`, wait for the oldest one.
    fn poll_copies(&mut self, block: bool) {
        let mut block = block;
        while let Some(&slot) = self.copying.front() {
            let done = match self.chunks[slot].as_ref().and_then(|c| c.ticket.as_ref()) {
                None => Ok(true),
                Some(t) if block => self.backend.wait(t).map(|()| true),
                Some(t) => self.backend.poll(t),
            };
            block = false;
            let (done, err) = match done {
                Ok(d) => (d, None),
                Err(e) => (true, Some(e)),
            };
            if !done {
                break;
            }
            self.copying.pop_front();
            if let Some(chunk) = self.chunks[slot].take() {
                self.free_slots.push(slot);
                if let Some(job) = self.jobs.get_mut(&chunk.job) {
                    job.chunks_out -= 1;
                    if let Some(e) = err {
                        job.error.get_or_insert(e);
                    }
                    self.maybe_finish(chunk.job);
                }
            }
        }
        // Whole-buffer copies.
        while let Some((t, ..)) = self.copies.front() {
            let r = if block {
                self.backend.wait(t).map(|()| true)
            } else {
                self.backend.poll(t)
            };
            block = false;
            match r {
                Ok(false) => break,
                Ok(true) => {
                    if let Some((_, src, dst, state)) = self.copies.pop_front() {
                        drop((src, dst));
                        StatsInner::add(&self.stats.requests, 1);
                        state.finish(Ok(()));
                    }
                }
                Err(e) => {
                    if let Some((_, src, dst, state)) = self.copies.pop_front() {
                        drop((src, dst));
                        StatsInner::add(&self.stats.errors, 1);
                        state.finish(Err(e));
                    }
                }
            }
        }
    }

    fn maybe_finish(&mut self, id: u64) {
        let finished = self
            .jobs
            .get(&id)
            .is_some_and(|j| j.chunks_out == 0 && (j.next >= j.end || j.error.is_some()));
        if !finished {
            return;
        }
        if let Some(job) = self.jobs.remove(&id) {
            if let Some(slot) = job.fixed_file {
                self.engine.unregister_file(slot);
            }
            self.order.retain(|j| *j != id);
            StatsInner::add(&self.stats.requests, 1);
            // Release the buffer's busy mark before the waiter wakes up.
            drop(job.dest);
            match job.error {
                Some(e) => {
                    StatsInner::add(&self.stats.errors, 1);
                    job.state.finish(Err(e));
                }
                None => job.state.finish(Ok(())),
            }
        }
    }

    fn fail_all(&mut self, e: &Error) {
        tracing::error!("reader failed: {e}");
        let ids: Vec<u64> = self.jobs.keys().copied().collect();
        for id in ids {
            if let Some(j) = self.jobs.get_mut(&id) {
                j.error
                    .get_or_insert_with(|| Error::WorkerGone(e.to_string()));
                j.next = j.end;
            }
        }
        // Outstanding reads may still land in slots; drain them before reusing anything.
        let mut comps = Vec::new();
        while self.engine.outstanding() > 0 {
            comps.clear();
            if self.engine.wait(&mut comps).is_err() {
                break;
            }
            for c in comps.drain(..) {
                self.complete_read(c);
            }
        }
        self.poll_copies(true);
        let ids: Vec<u64> = self.jobs.keys().copied().collect();
        for id in ids {
            if let Some(j) = self.jobs.get_mut(&id) {
                j.chunks_out = 0;
            }
            self.maybe_finish(id);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.pinned {
            for slot in self.pool.slots() {
                self.backend.unpin(slot);
            }
        }
    }
}

fn deliver(
    backend: &Backend,
    stats: &StatsInner,
    dest: &Dest,
    src: *const u8,
    dest_off: u64,
    len: usize,
) -> Result<Ticket> {
    let Dest::Mem { dst, offset } = dest else {
        return Ok(Ticket::Done);
    };
    let at = usize::try_from(dest_off)
        .ok()
        .and_then(|o| o.checked_add(*offset))
        .ok_or_else(|| Error::InvalidArgument("destination offset overflows".into()))?;
    if let Some(hp) = dst.mem.host_ptr() {
        // SAFETY: Context checked offset + request length <= buffer length, and `at + len` lies
        // within that range; the staging slot and the destination are distinct allocations.
        unsafe { std::ptr::copy_nonoverlapping(src, hp.add(at), len) };
        StatsInner::add(&stats.bytes_to_host, len as u64);
        return Ok(Ticket::Done);
    }
    let dp = dst
        .mem
        .device_ptr()
        .ok_or_else(|| Error::InvalidArgument("destination has no address".into()))?;
    // SAFETY: the staging slot is not reused until this ticket completes (poll_copies), and the
    // destination range was checked by Context against the buffer's length.
    let t = unsafe { backend.h2d_async(src, dp + at as u64, len) }?;
    StatsInner::add(&stats.bytes_to_device, len as u64);
    Ok(t)
}
