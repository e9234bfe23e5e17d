#!/usr/bin/env python3
"""Figures of issues #5 and #8 from scripts/gpu/figures.sh's figures.jsonl, each with the ratio
the issue asks for, computed against baselines measured in the same call.

Usage: summarize.py figures.jsonl [--inspect path/to/llmstream]
"""
import argparse, json, os, subprocess, sys

ap = argparse.ArgumentParser()
ap.add_argument("jsonl")
ap.add_argument("--inspect", help="llmstream binary, to read the models' tensor sizes")
a = ap.parse_args()

rows = [json.loads(l) for l in open(a.jsonl) if l.strip()]
def get(step, label=None):
    for r in rows:
        if r["step"] == step and (label is None or r["label"] == label):
            return r["data"]
    return None
def all_of(step):
    return [(r["label"], r["data"]) for r in rows if r["step"] == step]

def weight_bytes_per_token(model):
    """Bytes of the tensors one decode step reads whole: every tensor but the token embedding
    (one row of it is read), plus the embedding when the output is tied to it."""
    if not (a.inspect and os.path.exists(model)):
        return None
    o = json.loads(subprocess.run([a.inspect, "inspect", model, "--json"], capture_output=True,
                                  text=True, check=True).stdout)
    sizes = {t["name"]: t["size"] for t in o["tensors"]}
    total = sum(v for k, v in sizes.items() if k != "token_embd.weight")
    if "output.weight" not in sizes:
        total += sizes.get("token_embd.weight", 0)
    return total

out = []
def p(s=""):
    out.append(s)

bench = get("bench", "h2d") or {}
d2d = (get("bench", "d2d") or {}).get("d2d_gbps_read_plus_write")
h2d = bench.get("pinned_h2d_peak_gbps")
disk = bench.get("odirect_to_staging_gbps")
p(f"baselines (same call): device copy {d2d and round(d2d, 1)} GB/s (read+write), pinned H2D "
  f"{h2d and round(h2d, 2)} GB/s, O_DIRECT {disk and round(disk, 2)} GB/s")
cal = (get("calibrate", "all") or {}).get("calibration")
if cal:
    sweep = ", ".join(f"{t['threads']}: {t['q4_k_bps'] / 1e9:.1f}" for t in cal.get("thread_sweep", []))
    p(f"calibrate: threads {cal['threads']} (Q4_K GB/s by threads {sweep}); Q4_K "
      f"{cal['cpu_bps'].get('Q4_K', 0) / 1e9:.1f} GB/s, under copies {cal.get('cpu_under_copies')}, "
      f"h2d {(cal.get('h2d_bps') or 0) / 1e9:.2f} GB/s")

def decode_line(label, d):
    tps = d["decode_tok_per_s"]
    pt = d.get("per_token", {})
    b = pt.get("bytes_per_call", {})
    s = (f"  {label:6s} {tps:8.2f} tok/s  gpu {pt.get('gpu_ms_per_call', 0):.1f} ms, wait h2d "
         f"{pt.get('wait_h2d_ms_per_call', 0):.1f} ms, wait storage "
         f"{pt.get('wait_storage_ms_per_call', 0):.1f} ms, cpu layers "
         f"{pt.get('cpu_layers_ms_per_call', 0):.1f} ms at {pt.get('cpu_layers_gbps', 0):.1f} GB/s "
         f"(waiting for the GPU {pt.get('cpu_layers_wait_gpu_ms_per_call', 0):.1f} ms), "
         f"bytes ram/storage/cpu {b.get('ram', 0) / 1e9:.2f}/{b.get('storage', 0) / 1e9:.2f}/"
         f"{b.get('cpu', 0) / 1e9:.2f} GB, process CPU {d.get('cpu_ms_per_token', 0):.1f} ms/token, "
         f"threads {d.get('threads')}")
    bound = d.get("split_bound_ms_per_token")
    if bound and tps > 0 and b.get("cpu", 0) > 0:
        s += f"\n         split bound {bound:.1f} ms: ratio {bound / (1000 / tps):.2f}"
    if h2d and tps > 0 and b.get("cpu", 0) == 0 and b.get("ram", 0) > 0 and b.get("storage", 0) == 0:
        link_ms = b["ram"] / (h2d * 1e9) * 1e3
        s += f"\n         link bound {link_ms:.1f} ms: ratio {link_ms / (1000 / tps):.2f}"
    if disk and tps > 0 and b.get("storage", 0) > 0:
        disk_ms = b["storage"] / (disk * 1e9) * 1e3
        s += f"\n         storage bound {disk_ms:.1f} ms: ratio {disk_ms / (1000 / tps):.2f}"
    plan = d.get("plan")
    if plan:
        s += f"\n         plan {json.dumps(plan)[:300]}"
    return s

fig_dir = os.environ.get("FIG_DIR", "/var/tmp/ls")
r8b = all_of("r8b")
if r8b:
    wb = weight_bytes_per_token(os.path.join(fig_dir, "l8b.gguf"))
    p("8B shape resident (issue 5, target >= 0.60 of the copy bandwidth):")
    for label, d in r8b:
        frac = wb * d["decode_tok_per_s"] / (d2d * 1e9) if (wb and d2d) else None
        p(decode_line(label, d) + (f"\n         {wb / 1e9:.2f} GB/token: {frac:.2f} of the copy bandwidth" if frac else ""))
for step, title in [("r70", "70B shape, --vram-budget 24G (issue 8: auto >= 5.0 tok/s and >= 0.85 of the split bound; issue 5: gpu >= 0.8 of the link bound)"),
                    ("ab", "A/B in the same call: LLMSTREAM_PDL=0 (8B resident), LLMSTREAM_HOP=dma (hybrid)"),
                    ("r70t", "70B shape, --vram-budget 24G, --split auto with other thread counts"),
                    ("r70s", "70B shape, 24G, --ram-budget 12G (issue 5: >= 10 storage layers, ratio to the storage bound)"),
                    ("r8b2g", "8B shape, --vram-budget 2G (issue 8)")]:
    rs = all_of(step)
    if rs:
        p(title + ":")
        for label, d in rs:
            p(decode_line(label, d))
cpu = dict(all_of("cpu"))
if cpu:
    ours = cpu.get("llmstream", {}).get("decode_tok_per_s")
    theirs = cpu.get("llama.cpp", {}).get("avg_ts")
    p(f"CPU decode, 8B shape (issue 8, target >= 0.95x): llmstream {ours and round(ours, 2)} tok/s, "
      f"llama.cpp {theirs and round(theirs, 2)} tok/s"
      + (f": {ours / theirs:.2f}x" if ours and theirs else ""))
for label, d in all_of("tests"):
    p(f"tests {label}: rc {d['rc']}, {d['result'] or 'no result line'}, "
      f"{d.get('skipped', 0)} 'skipped' lines")
print("\n".join(out))
