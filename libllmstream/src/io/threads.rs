//! The fallback engine: a pool of threads doing `pread`, for kernels or sandboxes without
//! io_uring. Threads sleep on a condition variable when idle.

use super::engine::{Completion, ReadOp};
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

struct Queue {
    ops: Mutex<(VecDeque<ReadOp>, bool)>,
    cv: Condvar,
}

pub(crate) struct ThreadEngine {
    queue: Arc<Queue>,
    done_rx: Receiver<Completion>,
    threads: Vec<JoinHandle<()>>,
    outstanding: usize,
}

impl ThreadEngine {
    pub fn new(n: usize) -> Result<Self> {
        let queue = Arc::new(Queue {
            ops: Mutex::new((VecDeque::new(), false)),
            cv: Condvar::new(),
        });
        let (tx, done_rx) = channel();
        let threads = (0..n.max(1))
            .map(|i| {
                let q = Arc::clone(&queue);
                let tx: Sender<Completion> = tx.clone();
                std::thread::Builder::new()
                    .name(format!("lls-pread-{i}"))
                    .spawn(move || worker(&q, &tx))
                    .map_err(|source| Error::Os {
                        op: "spawn pread thread",
                        source,
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            queue,
            done_rx,
            threads,
            outstanding: 0,
        })
    }

    pub fn push(&mut self, op: ReadOp) {
        if let Ok(mut g) = self.queue.ops.lock() {
            g.0.push_back(op);
            self.outstanding += 1;
            self.queue.cv.notify_one();
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    pub fn wait(&mut self, out: &mut Vec<Completion>) -> Result<()> {
        if self.outstanding == 0 {
            return Ok(());
        }
        let first = self
            .done_rx
            .recv()
            .map_err(|_| Error::WorkerGone("pread threads exited".into()))?;
        out.push(first);
        self.outstanding -= 1;
        while let Ok(c) = self.done_rx.try_recv() {
            out.push(c);
            self.outstanding -= 1;
        }
        Ok(())
    }
}

impl Drop for ThreadEngine {
    fn drop(&mut self) {
        if let Ok(mut g) = self.queue.ops.lock() {
            g.1 = true;
        }
        self.queue.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(q: &Queue, tx: &Sender<Completion>) {
    loop {
        let op = {
            let Ok(mut g) = q.ops.lock() else { return };
            loop {
                if let Some(op) = g.0.pop_front() {
                    break op;
                }
                if g.1 {
                    return;
                }
                g = match q.cv.wait(g) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
        };
        let result = pread_full(&op);
        if tx
            .send(Completion {
                tag: op.tag,
                result,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Read until `len` bytes or end of file, retrying EINTR.
fn pread_full(op: &ReadOp) -> std::io::Result<usize> {
    let mut done = 0usize;
    while done < op.len {
        let off = i64::try_from(op.offset + done as u64)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: `buf..buf+len` lies in a staging slot this op owns exclusively until its
        // completion is sent (see `ReadOp`'s Send impl); `done < len` keeps the write in bounds.
        let n = unsafe { libc::pread(op.fd, op.buf.add(done).cast(), op.len - done, off) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += usize::try_from(n).unwrap_or(0);
    }
    Ok(done)
}
