#!/usr/bin/env python3
"""Generate the GGUF reference fixture for libllmstream/tests/gguf.rs.

Reads a GGUF model with the `gguf` Python package (the reader maintained with llama.cpp) and
writes, for every tensor, its name, type name, shape (ggml order, innermost first), absolute
data offset and byte size, plus a few metadata values and the expected layer spans.

Usage:
    scripts/gen_gguf_fixture.py [MODEL] [OUT]
Defaults: $LLMSTREAM_SHARED_DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf (or ../shared/models/
beside the repository) and libllmstream/tests/fixtures/smollm2_tensors.json.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def ensure_gguf():
    try:
        import gguf  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "gguf"])


def default_model() -> Path:
    shared = os.environ.get("LLMSTREAM_SHARED_DIR")
    base = Path(shared) if shared else REPO.parent / "shared"
    return base / "models" / MODEL_NAME


def field_value(reader, key):
    field = reader.fields[key]
    return field.contents()


def layer_spans(tensors):
    """Per layer: min start, max end, and whether no foreign tensor lies in the span."""
    pat = re.compile(r"^blk\.(0|[1-9][0-9]*)\.(.+)$")
    layers = {}
    for t in tensors:
        m = pat.match(t["name"])
        if m:
            layers.setdefault(int(m.group(1)), []).append(t)
    out = []
    for idx in sorted(layers):
        ts = layers[idx]
        start = min(t["offset"] for t in ts)
        end = max(t["offset"] + t["n_bytes"] for t in ts)
        names = {t["name"] for t in ts}
        foreign = [
            t
            for t in tensors
            if t["name"] not in names and t["offset"] < end and t["offset"] + t["n_bytes"] > start
        ]
        out.append(
            {
                "index": idx,
                "n_tensors": len(ts),
                "start": start,
                "end": end,
                "contiguous": not foreign,
            }
        )
    return out


def main():
    ensure_gguf()
    import gguf

    model = Path(sys.argv[1]) if len(sys.argv) > 1 else default_model()
    out = (
        Path(sys.argv[2])
        if len(sys.argv) > 2
        else REPO / "libllmstream" / "tests" / "fixtures" / "smollm2_tensors.json"
    )
    reader = gguf.GGUFReader(str(model))
    tensors = [
        {
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "offset": int(t.data_offset),
            "n_bytes": int(t.n_bytes),
        }
        for t in reader.tensors
    ]
    arch = field_value(reader, "general.architecture")
    fixture = {
        "source": model.name,
        "file_size": model.stat().st_size,
        "version": int(field_value(reader, "GGUF.version")),
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "metadata": {
            "general.architecture": arch,
            f"{arch}.block_count": int(field_value(reader, f"{arch}.block_count")),
            f"{arch}.embedding_length": int(field_value(reader, f"{arch}.embedding_length")),
            f"{arch}.rope.freq_base": float(field_value(reader, f"{arch}.rope.freq_base")),
            "tokenizer.ggml.tokens.len": len(reader.fields["tokenizer.ggml.tokens"].data),
            "tokenizer.ggml.tokens.first": field_value(reader, "tokenizer.ggml.tokens")[0],
            "kv_count": len(reader.fields) - 3,
        },
        "layers": layer_spans(tensors),
        "tensors": tensors,
    }
    # One layer or tensor per line keeps the fixture small and its diffs readable.
    head = json.dumps({k: v for k, v in fixture.items() if k not in ("layers", "tensors")}, indent=1)

    def rows(items):
        return ",\n".join("  " + json.dumps(i, separators=(",", ":")) for i in items)

    text = (
        head[:-2]
        + ',\n "layers": [\n'
        + rows(fixture["layers"])
        + '\n ],\n "tensors": [\n'
        + rows(tensors)
        + "\n ]\n}\n"
    )
    json.loads(text)  # the hand-joined text must stay valid JSON
    out.write_text(text)
    print(f"wrote {out}: {len(tensors)} tensors, {len(fixture['layers'])} layers")


if __name__ == "__main__":
    main()
