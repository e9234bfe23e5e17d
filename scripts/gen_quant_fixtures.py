#!/usr/bin/env python3
"""Generate the quantization fixtures of `infer/tests/fixtures/quant/`.

Needs the `gguf` package (reference dequantization) and, for the dot-product references,
`llama-cpp-python` (whose wheel ships libggml-base.so / libggml-cpu.so built for the host CPU):

    pip install gguf llama-cpp-python numpy

Run from the repository root:

    python scripts/gen_quant_fixtures.py [--out infer/tests/fixtures/quant]

What it writes (all little-endian):
  quant.bin   one blob; every array below is a byte range of it
  index.json  the list of cases, each naming its byte ranges as [offset, length]

Case kinds:
  dequant   raw blocks of one type and `gguf.quants.dequantize` of them (f32). Sources:
            "synthetic" (random bytes, scale fields replaced by sane finite f16 values),
            "quantize" (gguf.quants.quantize of random floats, where gguf supports the type),
            "<model>:<tensor>" (first rows of a real tensor of a real model).
            Q8_1 and Q8_K (activation-only types gguf cannot dequantize) are dequantized here
            with numpy from their definition (d * q).
  quantize  an f32 activation vector and the bytes ggml's CPU backend makes of it
            (`from_float` of the type's CPU traits: quantize_row_q8_0, _q8_1, _q8_K,
            fp32->fp16, fp32->bf16), as called by llama.cpp before a vec_dot.
  vec_dot   a weight row, an activation vector, the activation quantized to the weight's
            vec_dot_type by ggml, and ggml's vec_dot result (f32 bits), i.e. exactly what
            llama.cpp's CPU backend computes for one output element of a matmul.

The ggml libraries are reached with ctypes through `ggml_get_type_traits_cpu`; the cpu
features they were built for are recorded in index.json ("ggml_cpu").
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

REPO = Path(__file__).resolve().parent.parent
QWEN = Path.home() / ".cache/llmstream/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"

# ggml type ids (ggml.h)
ID = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q8_1": 9,
      "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "Q8_K": 15, "BF16": 30}
NAME = {v: k for k, v in ID.items()}
BLOCK = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20),
         "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34), "Q8_1": (32, 36),
         "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210), "Q8_K": (256, 292)}
WEIGHT_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K",
                "Q6_K"]
# offsets of the f16 scale fields inside one block, per type
F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
              "Q8_1": [0, 2], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


class Blob:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes | np.ndarray) -> list[int]:
        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        # keep every array 4-byte aligned inside the blob
        pad = (-self.size) % 4
        if pad:
            self.parts.append(b"\0" * pad)
            self.size += pad
        off = self.size
        self.parts.append(raw)
        self.size += len(raw)
        return [off, len(raw)]


# ----------------------------------------------------------------------------- ggml via ctypes

class Traits(ctypes.Structure):
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t,
                           ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                           ctypes.c_int)


class Ggml:
    def __init__(self) -> None:
        import llama_cpp  # noqa: F401  (only to find its lib/ folder)

        libdir = Path(llama_cpp.__file__).parent / "lib"
        base = sorted(glob.glob(str(libdir / "libggml-base.so*")))[0]
        cpu = sorted(glob.glob(str(libdir / "libggml-cpu.so*")))[0]
        self.base = ctypes.CDLL(base, mode=ctypes.RTLD_GLOBAL)
        self.cpu = ctypes.CDLL(cpu, mode=ctypes.RTLD_GLOBAL)
        self.cpu.ggml_cpu_init()
        self.cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(Traits)
        self.features = {f: int(getattr(self.cpu, "ggml_cpu_has_" + f)())
                         for f in ["avx", "avx2", "fma", "f16c", "avx_vnni", "avx512",
                                   "avx512_vnni", "avx512_bf16"]}
        try:
            self.version = llama_cpp.__version__
        except AttributeError:
            self.version = "unknown"

    def traits(self, ty: str) -> Traits:
        return self.cpu.ggml_get_type_traits_cpu(ID[ty]).contents

    def vec_dot_type(self, ty: str) -> str:
        return NAME[self.traits(ty).vec_dot_type]

    def from_float(self, ty: str, x: np.ndarray) -> bytes:
        x = np.ascontiguousarray(x, dtype=np.float32)
        bs, ts = BLOCK[ty]
        assert x.size % bs == 0
        out = ctypes.create_string_buffer(x.size // bs * ts)
        FROM_FLOAT(self.traits(ty).from_float)(x.ctypes.data, out, x.size)
        return out.raw

    def vec_dot(self, ty: str, n: int, w: bytes, xq: bytes) -> float:
        s = ctypes.c_float(0.0)
        wb = ctypes.create_string_buffer(w, len(w))
        xb = ctypes.create_string_buffer(xq, len(xq))
        VEC_DOT(self.traits(ty).vec_dot)(n, ctypes.byref(s), 0, wb, 0, xb, 0, 1)
        return s.value


# ----------------------------------------------------------------------------- data makers

def f16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).view(np.uint8)


def synthetic_blocks(ty: str, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes for `n_blocks` blocks of `ty`, with finite sane f16 scale fields."""
    bs, ts = BLOCK[ty]
    if ty == "F32":
        return rng.normal(0, 1, n_blocks).astype(np.float32).view(np.uint8)
    if ty == "F16":
        return rng.normal(0, 1, n_blocks).astype(np.float16).view(np.uint8)
    if ty == "BF16":
        return quants.quantize(rng.normal(0, 1, n_blocks).astype(np.float32), T.BF16)
    raw = rng.integers(0, 256, size=(n_blocks, ts), dtype=np.uint8)
    for k, off in enumerate(F16_FIELDS.get(ty, [])):
        if ty in ("Q4_1", "Q5_1", "Q4_K", "Q5_K") and k == 1:
            v = rng.uniform(-0.05, 0.05, n_blocks)  # min / dmin: signed
        elif ty in ("Q4_K", "Q5_K"):
            v = rng.uniform(0.0005, 0.01, n_blocks)  # super-block scale
        elif ty == "Q6_K":
            v = rng.uniform(0.0005, 0.01, n_blocks) * rng.choice([-1, 1], n_blocks)
        else:
            v = rng.uniform(0.001, 0.05, n_blocks) * rng.choice([-1, 1], n_blocks)
        raw[:, off:off + 2] = f16_bytes(v).reshape(n_blocks, 2)
    if ty == "Q8_1":
        # s = d * sum(qs), as ggml stores it
        d = raw[:, 0:2].copy().view(np.float16).astype(np.float32)[:, 0]
        qs = raw[:, 4:36].view(np.int8).astype(np.int32).sum(axis=1)
        raw[:, 2:4] = f16_bytes(d * qs).reshape(n_blocks, 2)
    if ty == "Q8_K":
        raw = np.zeros((n_blocks, ts), dtype=np.uint8)
        d = rng.uniform(0.001, 0.05, n_blocks).astype(np.float32)
        qs = rng.integers(-127, 128, size=(n_blocks, 256), dtype=np.int8)
        bsums = qs.astype(np.int16).reshape(n_blocks, 16, 16).sum(axis=2).astype(np.int16)
        raw[:, 0:4] = d.view(np.uint8).reshape(n_blocks, 4)
        raw[:, 4:260] = qs.view(np.uint8)
        raw[:, 260:292] = bsums.view(np.uint8).reshape(n_blocks, 32)
    return raw.reshape(-1)


def reference_dequant(ty: str, raw: np.ndarray) -> np.ndarray:
    if ty == "Q8_1":
        b = raw.reshape(-1, 36)
        d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
        q = b[:, 4:36].view(np.int8).astype(np.float32)
        return (d * q).reshape(-1)
    if ty == "Q8_K":
        b = raw.reshape(-1, 292)
        d = b[:, 0:4].copy().view(np.float32)
        q = b[:, 4:260].view(np.int8).astype(np.float32)
        return (d * q).reshape(-1)
    return np.asarray(quants.dequantize(raw, getattr(T, ty)), dtype=np.float32).reshape(-1)


def activations(n: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Activation vectors: realistic, with outliers, and crafted rounding ties."""
    out = []
    out.append(("normal", rng.normal(0, 1, n).astype(np.float32)))
    x = rng.normal(0, 0.02, n).astype(np.float32)
    idx = rng.choice(n, size=max(1, n // 64), replace=False)
    x[idx] = rng.normal(0, 8, idx.size).astype(np.float32)  # outliers, as after attention
    out.append(("outliers", x))
    # ties: every 32-block has one element of magnitude exactly 127 (so d = 1, id = 1 and, for
    # Q8_K, iscale = +-1) and the rest on half-integers, plus some zero blocks
    t = (rng.integers(-250, 251, n) / 2.0).astype(np.float32)
    t = np.clip(t, -126.5, 126.5)
    for b in range(0, n, 32):
        t[b + int(rng.integers(0, 32))] = 127.0 if (b // 32) % 3 else -127.0
    for b in range(0, n, 256):
        t[b] = -127.0 if (b // 256) % 2 else 127.0  # first max of each 256-block
    if n >= 512:
        t[256:288] = 0.0  # one all-zero 32-block
    out.append(("ties", t))
    # tiny and mixed magnitudes (subnormal-ish f16 scales)
    m = (rng.normal(0, 1, n) * np.exp(rng.uniform(-20, 4, n))).astype(np.float32)
    if n >= 512:
        m[0:256] = 0.0  # one all-zero super-block
    out.append(("mixed", m))
    return out


def first_rows(path: Path, tensor: str, n_rows: int) -> tuple[str, int, np.ndarray]:
    r = gguf.GGUFReader(str(path))
    for t in r.tensors:
        if t.name == tensor:
            ty = t.tensor_type.name
            cols = int(t.shape[0])
            data = np.asarray(t.data)
            rows = data[:n_rows] if data.ndim == 2 else data[: cols * n_rows // BLOCK[ty][0]]
            raw = np.ascontiguousarray(rows).view(np.uint8).reshape(-1)
            return ty, cols, raw
    raise KeyError(f"{tensor} not in {path}")


def shared_dir() -> Path:
    env = os.environ.get("LLMSTREAM_SHARED_DIR")
    return Path(env) if env else REPO.parent / "shared"


# ----------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "infer/tests/fixtures/quant"))
    ap.add_argument("--seed", type=int, default=20250101)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    ggml = Ggml()
    blob = Blob()
    cases: list[dict] = []

    def add_dequant(ty: str, raw: np.ndarray, source: str) -> list[int]:
        n = raw.size // BLOCK[ty][1] * BLOCK[ty][0]
        out = reference_dequant(ty, raw)
        assert out.size == n and np.all(np.isfinite(out)), (ty, source)
        rng_data = blob.add(raw)
        cases.append({"kind": "dequant", "type": ty, "source": source, "n": n,
                      "data": rng_data, "out": blob.add(out.astype(np.float32))})
        return rng_data

    # 1. synthetic blocks for every type (and quantize() where gguf has it)
    n_syn = 2048
    weights: dict[str, list[int]] = {}
    for ty in WEIGHT_TYPES + ["Q8_1", "Q8_K"]:
        bs, _ = BLOCK[ty]
        raw = synthetic_blocks(ty, n_syn // bs, rng)
        weights[ty] = add_dequant(ty, raw, "synthetic")
        try:
            q = quants.quantize(rng.normal(0, 0.05, n_syn).astype(np.float32), getattr(T, ty))
        except NotImplementedError:
            continue
        add_dequant(ty, np.asarray(q).view(np.uint8).reshape(-1), "quantize")

    # 2. first rows of real tensors
    real: list[tuple[str, str, int, list[int]]] = []
    smol = shared_dir() / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    models = [("smollm2", smol, [("blk.0.attn_q.weight", 2), ("token_embd.weight", 2),
                                 ("blk.0.attn_norm.weight", 1), ("blk.0.ffn_down.weight", 1)]),
              ("qwen2.5-coder-1.5b", QWEN, [("token_embd.weight", 2), ("output.weight", 2),
                                            ("blk.0.attn_q.weight", 1),
                                            ("blk.0.ffn_down.weight", 1)])]
    skipped = []
    for label, path, tensors in models:
        if not path.exists():
            print(f"skipped: {path} not found", file=sys.stderr)
            skipped.append(str(path))
            continue
        for name, n_rows in tensors:
            ty, cols, raw = first_rows(path, name, n_rows)
            rng_data = add_dequant(ty, raw, f"{label}:{name}")
            real.append((f"{label}:{name}", ty, cols, rng_data))

    # 3. activation quantization and vec_dot references
    def act_set(n: int) -> list[tuple[str, list[int], np.ndarray]]:
        return [(name, blob.add(x), x) for name, x in activations(n, rng)]

    xq_cache: dict[tuple[int, str], list[int]] = {}

    def quantized(xr: list[int], x: np.ndarray, vty: str) -> tuple[list[int], bytes]:
        q = ggml.from_float(vty, x)
        key = (xr[0], vty)
        if key not in xq_cache:
            xq_cache[key] = blob.add(q)
            cases.append({"kind": "quantize", "type": vty, "n": int(x.size), "x": xr,
                          "out": xq_cache[key]})
        return xq_cache[key], q

    def add_dots(ty: str, n: int, wr: list[int], wbytes: bytes, xs, source: str) -> None:
        vty = ggml.vec_dot_type(ty)
        for xname, xr, x in xs:
            xqr, xq = quantized(xr, x, vty)
            s = ggml.vec_dot(ty, n, wbytes, xq)
            cases.append({"kind": "vec_dot", "type": ty, "vec_dot_type": vty, "n": n,
                          "source": source, "act": xname, "w": wr, "x": xr, "xq": xqr,
                          "result_bits": int(np.float32(s).view(np.uint32)),
                          "result": float(s)})

    xs_syn = act_set(n_syn)
    data = b"".join(blob.parts)  # snapshot to read weights back
    for ty in WEIGHT_TYPES:
        wr = weights[ty]
        add_dots(ty, n_syn, wr, data[wr[0]:wr[0] + wr[1]], xs_syn, "synthetic")
    by_len: dict[int, list] = {}
    for source, ty, cols, wr in real:
        if ty == "F32":
            continue
        if cols not in by_len:
            by_len[cols] = act_set(cols)
        data = b"".join(blob.parts)
        row_bytes = cols // BLOCK[ty][0] * BLOCK[ty][1]
        add_dots(ty, cols, [wr[0], row_bytes], data[wr[0]:wr[0] + row_bytes], by_len[cols],
                 source)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quant.bin").write_bytes(b"".join(blob.parts))
    index = {"generator": "scripts/gen_quant_fixtures.py", "seed": args.seed,
             "gguf_version": getattr(gguf, "__version__", "unknown"),
             "llama_cpp_python": ggml.version, "ggml_cpu": ggml.features,
             "skipped_models": skipped, "cases": cases}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"{len(cases)} cases, {blob.size} bytes of data -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
