#!/usr/bin/env python3
"""Reference greedy continuations and first-token logits from llama.cpp (llama-cpp-python).

Writes infer/tests/fixtures/generation_<model>.json. Needs `pip install llama-cpp-python numpy`
(CPU build; on CPUs that advertise AMX without allowing it, build with
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON").

Usage: gen_generation_fixtures.py MODEL.gguf NAME [--n 32] [--n-batch 512]

With --n-batch 1 llama.cpp evaluates the prompt one token at a time (its decode path); the
default evaluates it as one batch, whose attention and some matrix products sum in another order.
Both are checked in (generation_NAME.json and generation_NAME_ub1.json).
"""
import argparse
import json
import pathlib
import sys

import numpy as np
from llama_cpp import Llama

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "1, 2, 3, 5, 8, 13, 21,",
    "Die Hauptstadt von Deutschland ist",
    "東京は日本の首都です。大阪は",
    "SELECT name, COUNT(*) FROM users WHERE",
    "Q: What is 17 times 23?\nA:",
    "The mitochondria is the powerhouse of the cell. It",
    "   Indented text\twith tabs\nand newlines\n\n",
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("name")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    llm = Llama(
        args.model,
        n_ctx=512,
        n_batch=args.n_batch,
        n_ubatch=args.n_batch,
        n_threads=args.threads,
        flash_attn=False,
        # f32 KV cache: llama.cpp's f16-KV attention kernels differ between builds (tinyBLAS vs
        # vec_dot dispatch), so the oracle is taken on the f32 path, where it is deterministic.
        type_k=0,
        type_v=0,
        logits_all=True,
        verbose=False,
    )
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true"
    eog = {llm.token_eos()}
    cases = []
    for prompt in PROMPTS:
        tokens = llm.tokenize(prompt.encode(), add_bos=add_bos, special=False)
        llm.reset()
        llm.eval(tokens)
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        first = logits.copy()
        out = []
        margins = []
        for _ in range(args.n):
            tok = int(np.argmax(logits))
            top2 = np.sort(logits)[-2:]
            margins.append(round(float(top2[1] - top2[0]), 5))
            out.append(tok)
            if tok in eog:
                break
            llm.eval([tok])
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-first)[:32]
        cases.append(
            {
                "prompt": prompt,
                "prompt_tokens": [int(t) for t in tokens],
                "greedy": out,
                "margins": margins,
                "text": llm.detokenize(out).decode("utf-8", errors="replace"),
                "top_logits": [[int(i), float(first[i])] for i in top],
            }
        )
        print(f"{args.name}: {prompt[:30]!r} -> {cases[-1]['text'][:60]!r}", file=sys.stderr)
    out_path = pathlib.Path(args.out) if args.out else pathlib.Path(__file__).resolve().parent.parent / "infer/tests/fixtures" / (f"generation_{args.name}.json" if args.n_batch > 1 else f"generation_{args.name}_ub1.json")
    out_path.write_text(
        json.dumps({"model": pathlib.Path(args.model).name, "n": args.n, "kv_type": "f32",
                    "n_batch": args.n_batch,
                    "flash_attn": False, "cases": cases}, ensure_ascii=False, indent=1) + "\n"
    )
    print(f"wrote {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
