#!/usr/bin/env python3
"""Write the seed corpus of the `gguf_parse` fuzz target into fuzz/corpus/gguf_parse/.

Seeds: a small synthetic GGUF written with the `gguf` package (two layers, globals, every
metadata value type, a nested array, a custom alignment) and the first 64 KiB of the shared
SmolLM2 model when it is present.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "fuzz" / "corpus" / "gguf_parse"


def main():
    try:
        import gguf
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "gguf"])
        import gguf
    import numpy as np

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "synthetic.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_uint8("t.u8", 7)
    w.add_int8("t.i8", -7)
    w.add_uint16("t.u16", 700)
    w.add_int16("t.i16", -700)
    w.add_uint32("t.u32", 70000)
    w.add_int32("t.i32", -70000)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_uint64("t.u64", 1 << 40)
    w.add_int64("t.i64", -(1 << 40))
    w.add_float64("t.f64", 2.25)
    w.add_array("t.strs", ["a", "bb", "ccc"])
    w.add_array("t.nested", [[1, 2], [3]])
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((4, 32), dtype=np.float32))
    for layer in range(2):
        w.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(32, dtype=np.float32))
        w.add_tensor(f"blk.{layer}.ffn_up.weight", rng.standard_normal((2, 32)).astype(np.float16))
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({path.stat().st_size} bytes)")

    shared = os.environ.get("LLMSTREAM_SHARED_DIR")
    base = Path(shared) if shared else REPO.parent / "shared"
    model = base / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if model.exists():
        head = OUT / "smollm2_head64k.gguf"
        with open(model, "rb") as f:
            head.write_bytes(f.read(64 << 10))
        print(f"wrote {head}")
    else:
        print(f"skipped the SmolLM2 seed: {model} is absent")


if __name__ == "__main__":
    main()
