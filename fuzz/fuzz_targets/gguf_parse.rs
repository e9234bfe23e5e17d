//! Any byte string given to the GGUF parser: it must return, never panic, never allocate beyond
//! what the input bounds, and whatever it accepts must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmstream::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse_bytes(data) else {
        return;
    };
    let len = data.len() as u64;
    assert_eq!(file.file_len, len);
    assert!(file.version == 2 || file.version == 3);
    assert!(file.alignment.is_power_of_two());
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for t in &file.tensors {
        assert!(t.offset >= file.data_offset);
        assert_eq!(t.offset % file.alignment, file.data_offset % file.alignment);
        let end = t.offset.checked_add(t.size).expect("tensor end overflows");
        assert!(end <= len, "tensor {} past the end", t.name);
        assert!(t.size > 0);
        spans.push((t.offset, end));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping tensors accepted");
    }
    let mut seen = vec![false; file.tensors.len()];
    for (i, layer) in file.layers.iter().enumerate() {
        assert_eq!(layer.index as usize, i);
        assert!(!layer.tensors.is_empty());
        for &t in &layer.tensors {
            assert!(!seen[t]);
            seen[t] = true;
            let off = layer.tensor_offset(&file, t).expect("member without view");
            assert!(off + file.tensors[t].size <= layer.byte_len());
        }
    }
    for &g in &file.globals {
        assert!(!seen[g]);
        seen[g] = true;
    }
    assert!(seen.iter().all(|&s| s), "a tensor is neither in a layer nor global");
});
