//! Writing a [`Plan`]: the header, then the tensors' data generated window by window.
//!
//! The data is cut into the generator's chunks (about 1 MiB each, see
//! [`super::blocks::chunk_blocks`]), grouped into windows of at most [`WINDOW_BYTES`]. Each
//! window's chunks are generated in parallel on rayon's pool into one of [`BUFFERS`] buffers,
//! then handed to a writer thread, so generation overlaps the writes and memory stays at
//! `BUFFERS × WINDOW_BYTES` whatever the model's size.

use super::blocks::{chunk_blocks, fill_chunk};
use super::{Plan, SynthError};
use llmstream::gguf::TensorDataWriter;
use rayon::prelude::*;
use std::io::Write;
use std::sync::mpsc;

/// Most bytes generated and written at once.
pub const WINDOW_BYTES: usize = 64 << 20;
/// Window buffers in flight (one being generated, the others queued or being written).
pub const BUFFERS: usize = 3;

/// One generator chunk of one tensor.
#[derive(Debug, Clone, Copy)]
struct Piece {
    tensor: usize,
    chunk: u64,
    len: usize,
}

/// A filled buffer and the pieces it holds, in order.
struct Window {
    buf: Vec<u8>,
    pieces: Vec<Piece>,
}

/// The pieces of every tensor in file order, grouped into windows.
fn windows(plan: &Plan) -> Result<Vec<Vec<Piece>>, SynthError> {
    let mut out = Vec::new();
    let mut cur: Vec<Piece> = Vec::new();
    let mut cur_len = 0usize;
    for (tensor, t) in plan.tensors().iter().enumerate() {
        let chunk_bytes = chunk_blocks(t.ty) * t.ty.type_size();
        let mut chunk = 0u64;
        let mut at = 0u64;
        while at < t.size {
            let len = usize::try_from(chunk_bytes.min(t.size - at))
                .map_err(|_| SynthError::Shape(format!("tensor {} is too large", t.name)))?;
            if cur_len + len > WINDOW_BYTES && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
            cur.push(Piece { tensor, chunk, len });
            cur_len += len;
            at += chunk_bytes;
            chunk += 1;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Generate the pieces of one window into `buf`.
fn fill(plan: &Plan, pieces: &[Piece], buf: &mut Vec<u8>) -> Result<(), SynthError> {
    let total: usize = pieces.iter().map(|p| p.len).sum();
    buf.resize(total, 0);
    let mut slices = Vec::with_capacity(pieces.len());
    let mut rest = buf.as_mut_slice();
    for p in pieces {
        let (a, b) = rest.split_at_mut(p.len);
        slices.push((*p, a));
        rest = b;
    }
    slices.into_par_iter().try_for_each(|(p, s)| {
        let t = plan
            .tensors()
            .get(p.tensor)
            .ok_or_else(|| SynthError::WriterGone("piece of an unknown tensor".into()))?;
        fill_chunk(t.ty, t.dist, t.seed, p.chunk, s)
    })
}

/// Write the model of `plan` to `out` (positioned at the start of a file), calling
/// `progress` with the bytes written so far after each window; returns `out`.
pub fn write<W: Write + Send>(
    plan: &Plan,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<W, SynthError> {
    let data = plan.writer.clone().write_header(out)?;
    progress(data.position());
    let windows = windows(plan)?;
    let (to_writer, from_main) = mpsc::sync_channel::<Window>(BUFFERS - 1);
    let (to_main, returned) = mpsc::channel::<Vec<u8>>();

    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<W, SynthError> {
            let mut data: TensorDataWriter<W> = data;
            for w in from_main {
                let mut at = 0;
                for p in &w.pieces {
                    let bytes = w.buf.get(at..at + p.len).ok_or_else(|| {
                        SynthError::WriterGone("window shorter than its pieces".into())
                    })?;
                    data.write_chunk(p.tensor, bytes)?;
                    at += p.len;
                }
                progress(data.position());
                // The generator may have finished and gone: nothing to hand back then.
                let _ = to_main.send(w.buf);
            }
            Ok(data.finish()?)
        });

        let mut generated: Result<(), SynthError> = Ok(());
        let mut allocated = 0;
        for pieces in windows {
            let mut buf = if allocated < BUFFERS {
                allocated += 1;
                Vec::with_capacity(WINDOW_BYTES)
            } else {
                match returned.recv() {
                    Ok(b) => b,
                    // The writer stopped: its result says why.
                    Err(_) => break,
                }
            };
            if let Err(e) = fill(plan, &pieces, &mut buf) {
                generated = Err(e);
                break;
            }
            if to_writer.send(Window { buf, pieces }).is_err() {
                break;
            }
        }
        drop(to_writer);
        let written = writer
            .join()
            .map_err(|_| SynthError::WriterGone("the writer thread panicked".into()))?;
        // A generation error first: the writer then only reports the tensor left short.
        generated?;
        written
    })
}
