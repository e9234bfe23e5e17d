#!/usr/bin/env python3
"""CPU prompt and decode rates of `llmstream run` and llama.cpp (llama-cpp-python), alternating,
same model, prompt, thread count and greedy sampling. Usage:
bench_cpu_vs_llamacpp.py MODEL [--threads 2] [--rounds 2] [--n 64] [--bin target/release/llmstream]"""
import argparse, json, subprocess, time
import numpy as np
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=2); ap.add_argument("--n", type=int, default=64)
ap.add_argument("--bin", default="target/release/llmstream")
a = ap.parse_args()
prompt = ("Write a detailed explanation of how a hash map works, including collision handling, "
          "load factors and resizing, with an example in Python.") * 2
llm = Llama(a.model, n_ctx=1024, n_batch=512, n_threads=a.threads, n_threads_batch=a.threads,
            flash_attn=False, logits_all=True, verbose=False)
add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true"
toks = llm.tokenize(prompt.encode(), add_bos=add_bos, special=False)
ratios = {"prompt": [], "decode": []}
for r in range(a.rounds):
    llm.reset(); t = time.time(); llm.eval(toks); tp = time.time() - t
    t = time.time()
    for _ in range(a.n):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([tok])
    td = time.time() - t
    out = subprocess.run([a.bin, "run", "-m", a.model, "--backend", "cpu", "-p", prompt, "-n", str(a.n + 1), "--temp", "0",
                          "-t", str(a.threads), "--json"], capture_output=True, text=True, check=True)
    o = json.loads(out.stdout.strip().splitlines()[-1])
    lp, ld = len(toks) / tp, a.n / td
    ratios["prompt"].append(o['prompt_tok_per_s'] / lp); ratios["decode"].append(o['decode_tok_per_s'] / ld)
    print(f"round {r+1}: prompt {len(toks)} tok: llama.cpp {lp:.1f} tok/s, llmstream {o['prompt_tok_per_s']:.1f} "
          f"({o['prompt_tok_per_s']/lp:.2f}x) | decode: llama.cpp {ld:.1f} tok/s, llmstream "
          f"{o['decode_tok_per_s']:.1f} ({o['decode_tok_per_s']/ld:.2f}x)")
med = lambda v: sorted(v)[len(v) // 2]
print(f"median over {a.rounds} rounds, {a.threads} threads: prompt {med(ratios['prompt']):.2f}x, "
      f"decode {med(ratios['decode']):.2f}x llama.cpp")
