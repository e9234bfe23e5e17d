//! `llmstream inspect MODEL [--json]`: the GGUF model map (header, metadata, tensors, layers)
//! as tables or as one JSON object.

use anyhow::Result;
use llmstream::gguf::{GgmlType, GgufFile, Value};
use serde_json::{json, Map, Value as Json};
use std::io::{self, Write};
use std::path::PathBuf;

/// Arguments of `llmstream inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Arrays longer than this are summarised as `{"type", "len"}` in JSON.
const JSON_ARRAY_MAX: usize = 16;
/// Arrays longer than this are summarised as `[N strings]` in tables.
const TEXT_ARRAY_MAX: usize = 8;
/// Strings longer than this (in chars) are cut in tables.
const TEXT_STRING_MAX: usize = 64;

/// Run the command: parse the header of `args.model` and print its map on stdout.
pub fn run(args: &InspectArgs) -> Result<()> {
    let file = GgufFile::open(&args.model)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &to_json(&file))
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_text(&mut out, &args.model, &file)
    };
    match written.and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The whole map as one JSON object.
pub fn to_json(file: &GgufFile) -> Json {
    let metadata: Map<String, Json> = file
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), value_json(v)))
        .collect();
    let tensors: Vec<Json> = file
        .tensors
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "type": t.ggml_type.name(),
                "shape": t.dims,
                "offset": t.offset,
                "size": t.size,
            })
        })
        .collect();
    let names = |idx: &[usize]| -> Vec<&str> {
        idx.iter()
            .filter_map(|&i| file.tensors.get(i).map(|t| t.name.as_str()))
            .collect()
    };
    let layers: Vec<Json> = file
        .layers
        .iter()
        .map(|l| {
            json!({
                "index": l.index,
                "offset": l.span.start,
                "size": l.byte_len(),
                "contiguous": l.contiguous,
                "tensors": names(&l.tensors),
            })
        })
        .collect();
    json!({
        "version": file.version,
        "alignment": file.alignment,
        "data_offset": file.data_offset,
        "file_size": file.file_len,
        "metadata": metadata,
        "tensors": tensors,
        "layers": layers,
        "globals": names(&file.globals),
    })
}

/// A metadata value in JSON; arrays longer than [`JSON_ARRAY_MAX`] become
/// `{"type": ELEMENT_TYPE, "len": N}`. Non-finite floats become `null`.
fn value_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(items) if items.len() > JSON_ARRAY_MAX => {
            json!({ "type": elem_type(items), "len": items.len() })
        }
        Value::Array(items) => Json::Array(items.iter().map(value_json).collect()),
    }
}

/// The element type name of an array (`string`, `int32` ...), `empty` when it has none.
fn elem_type(items: &[Value]) -> &'static str {
    items.first().map_or("empty", Value::type_name)
}

/// A metadata value on one line of a table.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => cut(s),
        Value::Array(items) if items.is_empty() => "[]".to_owned(),
        Value::Array(items) if items.len() > TEXT_ARRAY_MAX => {
            format!("[{} {}s]", items.len(), elem_type(items))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(value_text).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
    }
}

/// A string quoted with escapes, cut to [`TEXT_STRING_MAX`] characters.
fn cut(s: &str) -> String {
    let n = s.chars().count();
    if n <= TEXT_STRING_MAX {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(TEXT_STRING_MAX).collect();
    format!("{head:?}… ({n} chars)")
}

/// Bytes with a binary unit.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)] // Display only.
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS.get(unit).copied().unwrap_or("B"))
    }
}

fn shape(dims: &[u64]) -> String {
    let parts: Vec<String> = dims.iter().map(u64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// `Q4_1×7 F32×2`: types in order of first appearance with their counts.
fn type_mix<'a>(tensors: impl Iterator<Item = &'a GgmlType>) -> String {
    let mut mix: Vec<(GgmlType, usize)> = Vec::new();
    for &t in tensors {
        match mix.iter_mut().find(|(m, _)| *m == t) {
            Some((_, n)) => *n += 1,
            None => mix.push((t, 1)),
        }
    }
    let parts: Vec<String> = mix.iter().map(|(t, n)| format!("{t}×{n}")).collect();
    parts.join(" ")
}

fn write_text(out: &mut impl Write, path: &std::path::Path, f: &GgufFile) -> io::Result<()> {
    writeln!(out, "file:         {}", path.display())?;
    writeln!(
        out,
        "file size:    {} bytes ({})",
        f.file_len,
        human_bytes(f.file_len)
    )?;
    writeln!(out, "GGUF version: {}", f.version)?;
    writeln!(out, "alignment:    {}", f.alignment)?;
    writeln!(out, "data offset:  {}", f.data_offset)?;
    let data: u64 = f.tensors.iter().map(|t| t.size).sum();
    writeln!(
        out,
        "tensors:      {} ({}; {})",
        f.tensors.len(),
        type_mix(f.tensors.iter().map(|t| &t.ggml_type)),
        human_bytes(data)
    )?;
    let contiguous = f.layers.iter().filter(|l| l.contiguous).count();
    writeln!(
        out,
        "layers:       {} ({contiguous} contiguous), globals: {}",
        f.layers.len(),
        f.globals.len()
    )?;

    writeln!(out, "\nmetadata ({} keys):", f.metadata.len())?;
    let key_w = f.metadata.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &f.metadata {
        writeln!(
            out,
            "  {k:<key_w$}  {:<7}  {}",
            v.type_name(),
            value_text(v)
        )?;
    }

    writeln!(out, "\ntensors:")?;
    let name_w = f
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "  {:>5}  {:<name_w$}  {:<7}  {:<18}  {:>12}  {:>10}",
        "#", "name", "type", "shape", "offset", "size"
    )?;
    for (i, t) in f.tensors.iter().enumerate() {
        writeln!(
            out,
            "  {i:>5}  {:<name_w$}  {:<7}  {:<18}  {:>12}  {:>10}",
            t.name,
            t.ggml_type.name(),
            shape(&t.dims),
            t.offset,
            t.size
        )?;
    }

    writeln!(out, "\nlayers:")?;
    writeln!(
        out,
        "  {:>5}  {:>7}  {:>10}  {:<25}  {:<10}  types",
        "index", "tensors", "bytes", "span", "contiguous"
    )?;
    for l in &f.layers {
        let types = l
            .tensors
            .iter()
            .filter_map(|&i| f.tensors.get(i).map(|t| &t.ggml_type));
        writeln!(
            out,
            "  {:>5}  {:>7}  {:>10}  {:<25}  {:<10}  {}",
            l.index,
            l.tensors.len(),
            l.byte_len(),
            format!("{}..{}", l.span.start, l.span.end),
            if l.contiguous { "yes" } else { "no" },
            type_mix(types)
        )?;
    }

    writeln!(out, "\nglobals:")?;
    for &g in &f.globals {
        if let Some(t) = f.tensors.get(g) {
            writeln!(
                out,
                "  {:<name_w$}  {:<7}  {:<18}  {:>12}  {:>10}",
                t.name,
                t.ggml_type.name(),
                shape(&t.dims),
                t.offset,
                t.size
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_summarised() {
        let tokens = Value::Array((0..49152).map(|_| Value::String("a".into())).collect());
        assert_eq!(value_text(&tokens), "[49152 strings]");
        assert_eq!(value_json(&tokens), json!({"type": "string", "len": 49152}));
        let short = Value::Array(vec![Value::I32(1), Value::I32(-2)]);
        assert_eq!(value_text(&short), "[1, -2]");
        assert_eq!(value_json(&short), json!([1, -2]));
        let long = "x".repeat(100);
        assert_eq!(
            value_text(&Value::String(long)),
            format!("\"{}\"… (100 chars)", "x".repeat(64))
        );
        assert_eq!(value_text(&Value::String("a\nb".into())), "\"a\\nb\"");
        assert_eq!(value_json(&Value::F32(f32::NAN)), Json::Null);
    }

    #[test]
    fn units_and_mixes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(98_362_432), "93.8 MiB");
        assert_eq!(
            type_mix([GgmlType::F32, GgmlType::Q4_1, GgmlType::Q4_1].iter()),
            "F32×1 Q4_1×2"
        );
    }
}
