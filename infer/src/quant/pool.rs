//! A persistent thread pool for the matrix products: workers spin briefly between jobs and then
//! sleep, so the back-to-back products of a decode step start without a wake-up (the pool that
//! sleeps right away spent a quarter of decode time in futex wake-ups), and an idle process
//! uses no CPU.
//!
//! Workers can be pinned to CPUs (`pin`): worker `i` to the `i`-th CPU of the process's
//! affinity mask, leaving the first one to the calling thread (which is never pinned: it
//! belongs to the caller). When the mask holds fewer CPUs than threads, or the kernel refuses,
//! the pool runs unpinned.
//!
//! The only `unsafe` here erases the lifetime of the job closure so workers can call it;
//! [`SpinPool::run`] does not return before every worker has left the job, so the closure
//! outlives every call.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);
/// The same while a [`LongSpin`] is held.
const LONG_SPIN: Duration = Duration::from_millis(5);
/// Live [`LongSpin`]s.
static LONG_SPIN_HOLDERS: AtomicUsize = AtomicUsize::new(0);

/// While one is held, idle workers spin 5 ms before they sleep instead of 200 µs: the GPU
/// engine's hybrid split holds one, as its CPU layers come a GPU segment (about a
/// millisecond) apart and each would otherwise start by waking every worker. Dropping the last
/// one restores the short spin, so a later CPU-only user of the pool does not keep cores busy.
#[derive(Debug)]
pub struct LongSpin(());

impl LongSpin {
    pub(crate) fn hold() -> Self {
        LONG_SPIN_HOLDERS.fetch_add(1, Ordering::Relaxed);
        LongSpin(())
    }
}

impl Drop for LongSpin {
    fn drop(&mut self) {
        LONG_SPIN_HOLDERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The spin before sleeping: `LLMSTREAM_POOL_SPIN_US` when set to a number (at most a
/// second), else [`LONG_SPIN`] while a [`LongSpin`] is held, else [`SPIN`].
fn spin() -> Duration {
    static FROM_ENV: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let env = *FROM_ENV.get_or_init(|| {
        std::env::var("LLMSTREAM_POOL_SPIN_US")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
    });
    spin_for(env, LONG_SPIN_HOLDERS.load(Ordering::Relaxed))
}

/// The spin for an `LLMSTREAM_POOL_SPIN_US` value and a number of live [`LongSpin`]s.
fn spin_for(env_us: Option<u64>, holders: usize) -> Duration {
    match env_us {
        Some(us) => Duration::from_micros(us.min(1_000_000)),
        None if holders > 0 => LONG_SPIN,
        None => SPIN,
    }
}
/// Spins of a waiting thread before it yields its core between checks (some tens of
/// microseconds: a PAUSE takes 10-140 cycles depending on the core). A thread that spins on
/// while the worker it waits for has lost its core delays that worker: with 3 threads on 2
/// cores, decode ran at 0.70x of 2 threads without the yield and 0.87x with it.
const YIELD_AFTER: u32 = 2048;

type Task = dyn Fn(usize) + Sync;

struct Shared {
    epoch: AtomicU64,
    job: UnsafeCell<Option<*const Task>>,
    n_tasks: AtomicUsize,
    next: AtomicUsize,
    active: AtomicUsize,
    parked: AtomicUsize,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
    caller: Mutex<()>,
    /// Workers that pinned themselves to their CPU.
    pinned: AtomicUsize,
}

// SAFETY: `job` is written only by the thread holding `caller` while no worker is inside a job
// (`active == 0`), and read by workers only between observing a new epoch and decrementing
// `active`; the pointee is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// The pool: `threads - 1` workers plus the calling thread.
pub(crate) struct SpinPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl std::fmt::Debug for SpinPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpinPool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl SpinPool {
    /// A pool of `threads` (at least 1) threads, counting the caller; with `pin`, workers
    /// pinned to CPUs where the affinity mask allows it (see the module docs).
    pub(crate) fn new(threads: usize, pin: bool) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let cpus = if pin && threads > 1 {
            let cpus = affinity::allowed_cpus();
            if cpus.len() < threads {
                tracing::debug!(
                    allowed = cpus.len(),
                    threads,
                    "quant pool not pinned: the affinity mask has fewer CPUs than threads"
                );
                Vec::new()
            } else {
                cpus
            }
        } else {
            Vec::new()
        };
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            caller: Mutex::new(()),
            pinned: AtomicUsize::new(0),
        });
        let mut workers = Vec::with_capacity(threads - 1);
        for i in 1..threads {
            let s = Arc::clone(&shared);
            let cpu = cpus.get(i).copied();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("llmstream-quant-{i}"))
                    .spawn(move || {
                        if let Some(cpu) = cpu {
                            match affinity::pin_current_thread(cpu) {
                                Ok(()) => {
                                    s.pinned.fetch_add(1, Ordering::SeqCst);
                                }
                                Err(e) => tracing::debug!(cpu, "quant worker not pinned: {e}"),
                            }
                        }
                        worker(&s)
                    })?,
            );
        }
        Ok(SpinPool {
            shared,
            workers,
            threads,
        })
    }

    /// Threads, counting the caller.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Workers pinned to a CPU so far (they pin themselves as they start).
    #[cfg(test)]
    fn pinned(&self) -> usize {
        self.shared.pinned.load(Ordering::SeqCst)
    }

    /// Run `f(0) .. f(n_tasks - 1)` across the pool; returns when all are done. A second
    /// caller while a job runs (another thread) runs its tasks inline instead of waiting.
    pub(crate) fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync + '_)) {
        let s = &*self.shared;
        let guard = match s.caller.try_lock() {
            Ok(g) if self.threads > 1 && n_tasks > 1 => g,
            _ => {
                (0..n_tasks).for_each(f);
                return;
            }
        };
        let short: *const (dyn Fn(usize) + Sync + '_) = f;
        // SAFETY: only the lifetime bound changes (same fat pointer layout); the pointer is
        // dereferenced by workers only while this call runs (see the module docs).
        let erased: *const Task = unsafe { std::mem::transmute(short) };
        // SAFETY: we hold `caller` and the previous job is finished (`active == 0`, waited for
        // below before the previous `run` returned), so no worker reads `job` now.
        unsafe { *s.job.get() = Some(erased) };
        s.next.store(0, Ordering::SeqCst);
        s.n_tasks.store(n_tasks, Ordering::SeqCst);
        s.active.store(self.threads - 1, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.parked.load(Ordering::SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
        take_tasks(s, f);
        let mut spins = 0u32;
        while s.active.load(Ordering::Acquire) > 0 {
            spins = spins.saturating_add(1);
            if spins < YIELD_AFTER {
                std::hint::spin_loop();
            } else {
                // a worker still holds a task: when it has lost its core, give it ours
                std::thread::yield_now();
            }
        }
        drop(guard);
    }
}

/// A base pointer that tasks on other threads may offset into disjoint ranges.
struct SendPtr<T>(*mut T);
// SAFETY: only used by `SpinPool::for_each_chunk_mut`, whose tasks touch disjoint ranges.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl SpinPool {
    /// `f(i, chunk_i)` for every `chunk`-sized piece of `data` (the last one may be shorter),
    /// across the pool.
    pub(crate) fn for_each_chunk_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let chunk = chunk.max(1);
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        let base = &base;
        self.run(len.div_ceil(chunk), &|i| {
            let start = i * chunk;
            let n = chunk.min(len - start);
            // SAFETY: `run` hands each index to exactly one call, so the ranges
            // `start..start + n` of the calls are disjoint and inside `data`, which stays
            // mutably borrowed (by this function) until every call has returned.
            let part = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), n) };
            f(i, part);
        });
    }
}

fn take_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync + '_)) {
    let n = s.n_tasks.load(Ordering::SeqCst);
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    // Epoch 0 is the state at creation: a job published before this thread got to run is
    // still taken (loading the epoch here could skip it and leave the caller waiting).
    let mut seen = 0;
    loop {
        let t0 = Instant::now();
        let mut spins = 0u32;
        while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
            if spins < YIELD_AFTER {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            spins = spins.wrapping_add(1);
            if spins % 256 == 0 && t0.elapsed() > spin() {
                s.parked.fetch_add(1, Ordering::SeqCst);
                let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                    g = s.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                drop(g);
                s.parked.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        seen = s.epoch.load(Ordering::SeqCst);
        // SAFETY: a new epoch was published after `job` was written (SeqCst), and the caller
        // waits for this worker's `active` decrement before it returns or writes `job` again,
        // so the closure is alive and unchanged while we use it.
        if let Some(f) = unsafe { *s.job.get() } {
            // SAFETY: see above: the pointer came from a live `&Task` of the running `run`.
            let f = unsafe { &*f };
            take_tasks(s, f);
        }
        s.active.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _l = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.cv.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// CPU affinity of the pool's threads (Linux; elsewhere nothing is pinned).
mod affinity {
    /// The CPUs the calling thread may run on, ascending; empty when unknown.
    pub(super) fn allowed_cpus() -> Vec<usize> {
        #[cfg(target_os = "linux")]
        {
            use nix::sched::{sched_getaffinity, CpuSet};
            use nix::unistd::Pid;
            match sched_getaffinity(Pid::from_raw(0)) {
                Ok(set) => (0..CpuSet::count())
                    .filter(|&c| set.is_set(c).unwrap_or(false))
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            Vec::new()
        }
    }

    /// Restricts the calling thread to `cpu`.
    pub(super) fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use nix::sched::{sched_setaffinity, CpuSet};
            use nix::unistd::Pid;
            let mut set = CpuSet::new();
            set.set(cpu).map_err(std::io::Error::from)?;
            // pid 0: the calling thread
            sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = cpu;
            Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// The long spin lasts exactly as long as a guard lives (no engine left holding it for
    /// later users of the pool), and the environment's value overrides both spins.
    #[test]
    fn long_spin_lasts_while_a_guard_is_held() {
        let held = || LONG_SPIN_HOLDERS.load(Ordering::Relaxed);
        let before = held();
        let a = LongSpin::hold();
        let b = LongSpin::hold();
        assert_eq!(held(), before + 2);
        assert_eq!(spin_for(None, held()), LONG_SPIN);
        drop(a);
        assert_eq!(held(), before + 1);
        assert_eq!(spin_for(None, held()), LONG_SPIN);
        drop(b);
        assert_eq!(held(), before);
        assert_eq!(spin_for(None, 0), SPIN);
        assert_eq!(spin_for(Some(50), 0), Duration::from_micros(50));
        assert_eq!(spin_for(Some(50), 3), Duration::from_micros(50));
        assert_eq!(spin_for(Some(u64::MAX), 0), Duration::from_secs(1));
    }

    #[test]
    fn runs_every_task_once_across_many_jobs_and_sleeps() {
        let p = SpinPool::new(3, false).unwrap();
        for round in 0..2000u64 {
            let hits: Vec<AtomicU64> = (0..37).map(|_| AtomicU64::new(0)).collect();
            p.run(37, &|i| {
                hits[i].fetch_add(round + 1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == round + 1));
            if round % 500 == 0 {
                std::thread::sleep(Duration::from_millis(2)); // workers park and wake again
            }
        }
    }

    #[test]
    fn chunks_cover_the_slice_once_with_a_short_last_one() {
        let p = SpinPool::new(3, false).unwrap();
        for (len, chunk) in [(0usize, 4usize), (1, 4), (37, 5), (64, 8), (10, 100)] {
            let mut v = vec![0u32; len];
            p.for_each_chunk_mut(&mut v, chunk, &|i, part| {
                assert!(part.len() <= chunk);
                for (k, x) in part.iter_mut().enumerate() {
                    *x += u32::try_from(i * chunk + k + 1).unwrap();
                }
            });
            let want: Vec<u32> = (1..=u32::try_from(len).unwrap()).collect();
            assert_eq!(v, want, "len {len} chunk {chunk}");
        }
    }

    #[test]
    fn concurrent_callers_do_not_deadlock() {
        let p = Arc::new(SpinPool::new(2, false).unwrap());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let p = Arc::clone(&p);
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        let c = AtomicU64::new(0);
                        p.run(9, &|_| {
                            c.fetch_add(1, Ordering::Relaxed);
                        });
                        assert_eq!(c.load(Ordering::Relaxed), 9);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }

    #[test]
    fn pinned_pool_pins_its_workers_where_the_mask_allows_and_runs_jobs() {
        let allowed = affinity::allowed_cpus();
        for threads in [2usize, allowed.len().max(1), allowed.len() + 1] {
            let p = SpinPool::new(threads, true).unwrap();
            for _ in 0..200 {
                let c = AtomicU64::new(0);
                p.run(13, &|_| {
                    c.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(c.load(Ordering::Relaxed), 13);
            }
            if cfg!(target_os = "linux") && allowed.len() >= threads {
                // workers pin themselves as they start: wait for them a little
                let t0 = Instant::now();
                while p.pinned() < threads - 1 && t0.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert_eq!(
                    p.pinned(),
                    threads - 1,
                    "threads {threads}, mask {allowed:?}"
                );
            } else {
                // a mask smaller than the pool: nothing pinned, still correct
                assert_eq!(p.pinned(), 0, "threads {threads}, mask {allowed:?}");
            }
        }
    }
}
