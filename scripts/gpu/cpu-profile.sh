#!/usr/bin/env bash
# Where the CPU layers' time goes on the GPU machine (device tool, .dev carried, see
# scripts/gpu/prepare.sh): the CPU matrix-vector rates by shape, then LLMSTREAM_PROFILE=1 runs
# of the CPU backend and of the hybrid split (8B at 2G, 70B at 24G). Output: $OUT/profile.log.
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${OUT:-$PWD/figures-out}
mkdir -p "$out"
log=$out/profile.log
bin=${FIG_BIN:-$PWD/.dev/llmstream}
dir=${FIG_DIR:-/var/tmp/ls}
threads=${FIG_THREADS:-16}
mkdir -p "$dir"
export LLMSTREAM_CALIBRATION=$dir/calibration.toml LLMSTREAM_DIRECT=off
for m in "l8b llama3.1-8b" "l70b llama3.1-70b"; do
  set -- $m
  [ -f "$dir/$1.gguf" ] || "$bin" synth --preset "$2" --tokenizer-from .dev/tok.gguf -o "$dir/$1.gguf" >/dev/null
done
"$bin" bench-cpu -t "$threads" --types q4_k,q6_k --footprint 2G --ms 300 \
  --shapes 1024x4096,4096x4096,14336x4096,4096x14336,1024x8192,8192x8192,28672x8192,8192x28672 >>"$log" 2>&1
[ -f "$LLMSTREAM_CALIBRATION" ] || "$bin" calibrate -t "$threads" >>"$log" 2>&1
brief() {
  python3 -c '
import json, sys
d = json.loads(sys.stdin.read().strip().splitlines()[-1])
pt = d.get("per_token", {})
keep = {k: d.get(k) for k in ("decode_tok_per_s", "threads", "split_bound_ms_per_token", "rates_gbps", "cpu_layer_profile")}
keep["per_token"] = {k: v for k, v in pt.items() if k != "bytes_per_call"}
keep["bytes_per_call"] = pt.get("bytes_per_call")
keep["plan"] = {k: v for k, v in d.get("plan", {}).items() if k != "placement"}
print(json.dumps(keep, indent=1))'
}
p="Hello world, this is"
for args in "-m $dir/l8b.gguf --backend cpu -n 32" \
            "-m $dir/l8b.gguf --backend cuda --vram-budget 2G --split auto -n 64" \
            "-m $dir/l70b.gguf --backend cuda --vram-budget 24G --split auto -n 16" \
            "${FIG_EXTRA:-}"; do
  [ -n "$args" ] || continue
  echo "== run $args -t $threads" >>"$log"
  LLMSTREAM_PROFILE=1 "$bin" run $args -p "$p" --temp 0 -t "$threads" --json 2>>"$log" | brief >>"$log"
done
# the same hybrid runs with the rates probed at load (no calibration cache)
for args in "-m $dir/l8b.gguf --backend cuda --vram-budget 2G --split auto -n 64" \
            "-m $dir/l70b.gguf --backend cuda --vram-budget 24G --split auto -n 16"; do
  echo "== run (probed rates) $args -t $threads" >>"$log"
  LLMSTREAM_CALIBRATION=$dir/none.toml LLMSTREAM_PROFILE=1 "$bin" run $args -p "$p" --temp 0 \
    -t "$threads" --json 2>>"$log" | brief >>"$log"
done
cat "$log"
