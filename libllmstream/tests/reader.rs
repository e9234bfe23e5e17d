//! The reader against a std::fs reference, for each I/O path, on random ranges and sizes.
#![allow(clippy::unwrap_used)]

use llmstream::{
    BackendChoice, BufferKind, Config, Context, DirectChoice, EngineChoice, Error, ReaderConfig,
};
use proptest::prelude::*;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// A file of pseudo-random bytes whose length is not a multiple of any block size.
fn data_file() -> &'static (tempfile::TempDir, PathBuf, Vec<u8>) {
    static F: OnceLock<(tempfile::TempDir, PathBuf, Vec<u8>)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir_in(tmp_root()).unwrap();
        let path = dir.path().join("data.bin");
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let bytes: Vec<u8> = (0..(3 << 20) + 12_345)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[3] // bits 24..32
            })
            .collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        (dir, path, bytes)
    })
}

/// Where test files go: the target directory's file system (where O_DIRECT works), or
/// `LLMSTREAM_TEST_TMPDIR` when the test binary runs on another machine.
fn tmp_root() -> PathBuf {
    let p = std::env::var_os("LLMSTREAM_TEST_TMPDIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[derive(Debug, Clone, Copy)]
enum Path3 {
    UringDirect,
    ThreadsDirect,
    Buffered,
}

fn ctx(p: Path3) -> Context {
    let (engine, direct) = match p {
        Path3::UringDirect => (EngineChoice::Uring, DirectChoice::On),
        Path3::ThreadsDirect => (EngineChoice::Threads, DirectChoice::On),
        Path3::Buffered => (EngineChoice::Auto, DirectChoice::Off),
    };
    Context::new(Config {
        backend: BackendChoice::Host,
        device: 0,
        reader: ReaderConfig {
            engine,
            direct,
            queue_depth: 8,
            request_size: 16 << 10,
            staging_buffers: 4,
            staging_buffer_size: 64 << 10,
            threads: 3,
        },
    })
    .unwrap()
}

fn uring_ok() -> bool {
    let ok = llmstream::io::probe::uring_support().is_ok();
    if !ok {
        eprintln!("skipped io_uring case: io_uring unavailable here");
    }
    ok
}

fn contexts() -> &'static [(Path3, Option<Context>); 3] {
    static C: OnceLock<[(Path3, Option<Context>); 3]> = OnceLock::new();
    C.get_or_init(|| {
        [
            (
                Path3::UringDirect,
                uring_ok().then(|| ctx(Path3::UringDirect)),
            ),
            (Path3::ThreadsDirect, Some(ctx(Path3::ThreadsDirect))),
            (Path3::Buffered, Some(ctx(Path3::Buffered))),
        ]
    })
}

fn check_range(c: &Context, offset: u64, len: u64, dst_off: usize) {
    let (_, path, bytes) = data_file();
    let src = c.open(path).unwrap();
    let n = usize::try_from(len).unwrap();
    let buf = c.alloc(BufferKind::Device, n + dst_off).unwrap();
    c.read(&src, offset, len, &buf, dst_off).unwrap();
    let mut out = vec![0u8; n];
    buf.copy_to_host(dst_off, &mut out).unwrap();
    let o = usize::try_from(offset).unwrap();
    assert!(
        out == bytes[o..o + n],
        "mismatch at offset {offset} len {len}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_ranges_match_std_fs(start in 0u64..(3 << 20) + 12_345, len in 0u64..(600 << 10), dst_off in 0usize..5000) {
        let total = data_file().2.len() as u64;
        let start = start.min(total);
        let len = len.min(total - start);
        for (p, c) in contexts() {
            if let Some(c) = c {
                let _ = p;
                check_range(c, start, len, dst_off);
            }
        }
    }
}

#[test]
fn edges_match_std_fs() {
    let total = data_file().2.len() as u64;
    for (_, c) in contexts() {
        let Some(c) = c else { continue };
        check_range(c, 0, total, 0);
        check_range(c, total - 1, 1, 0);
        check_range(c, total - 4097, 4097, 3);
        check_range(c, 511, 513, 0);
        check_range(c, 0, 0, 0);
        check_range(c, 4096, 64 << 10, 0);
    }
}

#[test]
fn paths_are_what_was_forced() {
    let (_, path, _) = data_file();
    for (p, c) in contexts() {
        let Some(c) = c else { continue };
        let src = c.open(path).unwrap();
        let _ = c.read_to_vec(&src, 0, 10_000).unwrap();
        let s = c.stats();
        match p {
            Path3::UringDirect => {
                assert!(s.engine.starts_with("io_uring"), "{s:?}");
                assert!(src.is_direct());
                assert!(s.bytes_direct > 0 && s.bytes_buffered == 0, "{s:?}");
            }
            Path3::ThreadsDirect => {
                assert_eq!(s.engine, "threads");
                assert!(s.bytes_direct > 0 && s.bytes_buffered == 0, "{s:?}");
            }
            Path3::Buffered => {
                assert!(!src.is_direct());
                assert!(s.bytes_buffered > 0 && s.bytes_direct == 0, "{s:?}");
            }
        }
    }
}

#[test]
fn many_async_reads_in_flight() {
    let (_, path, bytes) = data_file();
    for (_, c) in contexts() {
        let Some(c) = c else { continue };
        let src = c.open(path).unwrap();
        let chunk = 100_003usize;
        let n = bytes.len() / chunk;
        let buf = c.alloc(BufferKind::Host, n * chunk).unwrap();
        let handles: Vec<_> = (0..n)
            .map(|i| {
                c.read_async(&src, (i * chunk) as u64, chunk as u64, &buf, i * chunk)
                    .unwrap()
            })
            .collect();
        // Borrowing the bytes while reads are in flight is refused.
        assert!(
            matches!(buf.with_host_slice(|_| ()), Err(Error::Busy(_)))
                || handles.iter().all(|h| h.is_done())
        );
        for h in handles {
            h.wait().unwrap();
        }
        buf.with_host_slice(|s| assert!(s == &bytes[..n * chunk]))
            .unwrap();
    }
}

#[test]
fn errors_are_typed() {
    let (_, path, _) = data_file();
    let c = &contexts()[2].1.as_ref().unwrap();
    let src = c.open(path).unwrap();
    let total = src.len();
    let buf = c.alloc(BufferKind::Host, 100).unwrap();
    assert!(matches!(
        c.read(&src, total - 10, 11, &buf, 0),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        c.read(&src, u64::MAX, 2, &buf, 0),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        c.read(&src, 0, 101, &buf, 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.read(&src, 0, 50, &buf, 51),
        Err(Error::InvalidArgument(_))
    ));
    let missing = c.open(std::path::Path::new("/nonexistent/model.gguf"));
    assert!(matches!(missing, Err(Error::Open { .. })));
    let dir = c.open(std::path::Path::new("/"));
    assert!(matches!(dir, Err(Error::Open { .. })));
}

#[test]
fn file_shrinking_under_the_reader_is_an_error_not_garbage() {
    let dir = tempfile::tempdir_in(tmp_root()).unwrap();
    let p = dir.path().join("shrink.bin");
    std::fs::write(&p, vec![7u8; 1 << 20]).unwrap();
    let c = &contexts()[1].1.as_ref().unwrap();
    let src = c.open(&p).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let buf = c.alloc(BufferKind::Host, 1 << 20).unwrap();
    let r = c.read(&src, 0, 1 << 20, &buf, 0);
    assert!(matches!(r, Err(Error::OutOfRange { .. })), "{r:?}");
}

#[test]
fn pinned_copy_path_on_host() {
    let c = &contexts()[2].1.as_ref().unwrap();
    let a = c.alloc(BufferKind::Pinned, 1 << 20).unwrap();
    let b = c.alloc(BufferKind::Device, 1 << 20).unwrap();
    let (_, path, bytes) = data_file();
    let src = c.open(path).unwrap();
    c.read(&src, 0, 1 << 20, &a, 0).unwrap();
    c.copy_async(&a, 10, &b, 20, 1000).unwrap().wait().unwrap();
    let mut out = vec![0u8; 1000];
    b.copy_to_host(20, &mut out).unwrap();
    assert_eq!(out, bytes[10..1010]);
    assert!(c.copy_async(&a, 0, &b, 1, 1 << 20).is_err());
    assert!(c.copy_async(&a, 0, &a, 10, 100).is_err());
}

#[test]
fn shared_context_many_threads() {
    let (_, path, bytes) = data_file();
    let c = contexts()[1].1.clone().unwrap();
    let src = c.open(path).unwrap();
    let bytes = Arc::new(bytes.clone());
    let ts: Vec<_> = (0..4)
        .map(|t| {
            let (c, src, bytes) = (c.clone(), Arc::clone(&src), Arc::clone(&bytes));
            std::thread::spawn(move || {
                for i in 0..8u64 {
                    let off = (t * 8 + i) * 70_001;
                    let v = c.read_to_vec(&src, off, 50_000).unwrap();
                    let o = usize::try_from(off).unwrap();
                    assert!(v == bytes[o..o + 50_000]);
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
}

/// On a machine with a GPU: random ranges through VRAM (device buffers, pinned staging, copy
/// stream) equal the file. Elsewhere it says it was skipped.
#[test]
fn cuda_reads_match_std_fs() {
    let cfg = Config {
        backend: BackendChoice::Cuda,
        device: 0,
        reader: ReaderConfig {
            staging_buffers: 4,
            staging_buffer_size: 256 << 10,
            request_size: 64 << 10,
            ..ReaderConfig::default()
        },
    };
    let c = match Context::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            return;
        }
    };
    assert_eq!(c.backend(), llmstream::BackendKind::Cuda);
    let total = data_file().2.len() as u64;
    let mut x = 12345u64;
    for _ in 0..64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let start = (x >> 20) % total;
        let len = ((x >> 7) % (900 << 10)).min(total - start);
        check_range(&c, start, len, (x % 777) as usize);
    }
    check_range(&c, 0, total, 0);
    // RAM tier → VRAM.
    let (_, path, bytes) = data_file();
    let src = c.open(path).unwrap();
    let pinned = c.alloc(BufferKind::Pinned, 1 << 20).unwrap();
    c.read(&src, 0, 1 << 20, &pinned, 0).unwrap();
    let dev = c.alloc(BufferKind::Device, 1 << 20).unwrap();
    c.copy_async(&pinned, 0, &dev, 0, 1 << 20)
        .unwrap()
        .wait()
        .unwrap();
    let mut out = vec![0u8; 1 << 20];
    dev.copy_to_host(0, &mut out).unwrap();
    assert!(out == bytes[..1 << 20]);
    let s = c.stats();
    assert!(s.bytes_to_device >= total, "{s:?}");
    assert!(s.fallbacks.is_empty(), "{s:?}");
}
