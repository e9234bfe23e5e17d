#!/usr/bin/env bash
# Every figure issues #5 and #8 ask for, in one call on the GPU machine (device tool), so that a
# session spends its device time measuring rather than starting machines. Run from the
# repository root there, with the folder .dev carried (it is ignored by git):
#
#   .dev/llmstream       release build of the CLI, debug info stripped (64 MiB carry limit)
#   .dev/tok.gguf        a small GGUF whose tokenizer the synthetic models take
#   .dev/tests/          the GPU test binaries (optional)
#   .dev/llamacpp/       llama.cpp's CPU llama-bench (optional)
# all made here by scripts/gpu/prepare.sh [--llamacpp] [--smol] (its header: SmolLM2 for the tests)
#
# then, for example:
#   run(command="scripts/gpu/figures.sh", carry=[".dev"], timeout_s=600)
#
# Steps (FIG_STEPS, space-separated, default all of them, in this order):
#   env        machine, CPU topology, GPU, driver
#   synth      the 8B- and 70B-shaped Q4_K_M models under $FIG_DIR (kept while the machine is;
#              FIG_SYNTH="l8b" for the 8B one only)
#   bench      pinned H2D peak and the O_DIRECT rate (llmstream bench) and the device-to-device
#              copy rate (PyTorch, bytes read + written, as BENCHMARKS.md counts them)
#   calibrate  llmstream calibrate --storage (thread sweep, CPU per type, under copies, link)
#   r8b        8B resident decode, twice (issue 5: fraction of the copy bandwidth)
#   r70        70B at --vram-budget 24G: --split auto, gpu, cpu (issues 5 and 8)
#   r70t       70B at 24G, --split auto with each of FIG_HYBRID_THREADS threads (default 16 12):
#              whether the calibrated count also suits the hybrid, where copies run beside it
#   ab         same-call A/B of switches: programmatic dependent launch (8B resident,
#              LLMSTREAM_PDL=0 against the default, alternated twice); the quant pool's spin
#              before sleeping in the hybrid (70B at 24G and 8B at 2G, --split auto, the
#              engine's 5 ms against LLMSTREAM_POOL_SPIN_US=200); with FIG_HOP_AB=1 also the CPU
#              layers' hop (LLMSTREAM_HOP=dma against the default)
#   r70s       70B at 24G with --ram-budget 12G: >= 10 layers from storage (issue 5)
#   r8b2g      8B at --vram-budget 2G: --split auto, gpu, cpu (issue 8)
#   cpu        CPU decode of the 8B shape, llmstream and llama.cpp, FIG_THREADS threads (issue 8)
#   tests      the GPU test binaries in .dev/tests (scripts/gpu/prepare.sh), with SmolLM2 from
#              $FIG_DIR/models when scripts/gpu/join-smol.sh put it there (the synthetic models'
#              tests take the tokenizer from $FIG_TOKENIZER without it)
# Output under $OUT (else ./figures-out): figures.log, figures.jsonl (one object per
# measurement, tagged with its step) and summary.txt (scripts/gpu/summarize.py).
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${OUT:-$PWD/figures-out}
mkdir -p "$out"
log=$out/figures.log
jsonl=$out/figures.jsonl
: >"$jsonl"
bin=${FIG_BIN:-$PWD/.dev/llmstream}
dir=${FIG_DIR:-/var/tmp/ls}
tok=${FIG_TOKENIZER:-$PWD/.dev/tok.gguf}
threads=${FIG_THREADS:-14}
steps=${FIG_STEPS:-env synth bench calibrate r8b r70 r70t r70s r8b2g cpu tests}
prompt="Hello world, this is"
export LLMSTREAM_CALIBRATION=$dir/calibration.toml
mkdir -p "$dir"
start=$(date +%s)

say() { printf '[%4ss] %s\n' "$(($(date +%s) - start))" "$*" | tee -a "$log"; }
# record STEP LABEL CMD...: runs CMD, keeps its last stdout line (a JSON object) in figures.jsonl
record() {
  local step=$1 label=$2
  shift 2
  say "$step/$label: $*"
  local o
  o=$("$@" 2>>"$log" | tail -n 1)
  local rc=$?
  if [ $rc -ne 0 ] || ! python3 -c 'import json,sys; json.loads(sys.argv[1])' "$o" 2>/dev/null; then
    say "$step/$label: failed (rc $rc): ${o:0:300}"
    return 1
  fi
  python3 -c 'import json,sys; print(json.dumps({"step": sys.argv[1], "label": sys.argv[2], "data": json.loads(sys.argv[3])}))' \
    "$step" "$label" "$o" >>"$jsonl"
}
has() { case " $steps " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
run_model() { "$bin" run -m "$1" -p "$prompt" --temp 0 --backend cuda --json "${@:2}"; }

[ -x "$bin" ] || { say "no $bin: see the header of this script"; exit 2; }
l8b=$dir/l8b.gguf
l70b=$dir/l70b.gguf

if has env; then
  say "env"
  { uname -r; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA|L3)'
    grep -o -w -E 'avx512_?(f|bw|vl|vnni|vbmi|bf16)|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
    free -g | head -2; df -h "$dir" | tail -1; } >>"$log" 2>&1
fi

if has synth; then
  [ -f "$tok" ] || { say "no tokenizer source $tok"; exit 2; }
  for m in "l8b llama3.1-8b" "l70b llama3.1-70b"; do
    set -- $m
    case " ${FIG_SYNTH:-l8b l70b} " in *" $1 "*) ;; *) continue ;; esac
    [ -f "$dir/$1.gguf" ] && continue
    say "synth $2"
    /usr/bin/time -f "synth $2: %e s" "$bin" synth --preset "$2" --tokenizer-from "$tok" \
      -o "$dir/$1.gguf" >>"$log" 2>&1 || say "synth $2 failed"
  done
fi

if has bench; then
  record bench h2d "$bin" bench "$l70b" --backend cuda --bytes 4G --json
  python3 - >>"$jsonl" 2>>"$log" <<'PY'
import json, torch
n = 1 << 30
a = torch.empty(n, dtype=torch.uint8, device="cuda"); b = torch.empty_like(a)
for _ in range(3): b.copy_(a)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(20): b.copy_(a)
e.record(); e.synchronize()
ms = s.elapsed_time(e) / 20
print(json.dumps({"step": "bench", "label": "d2d", "data": {"d2d_gbps_read_plus_write": 2 * n / ms / 1e6}}))
PY
fi

if has calibrate; then
  record calibrate all "$bin" calibrate --storage "$l70b" --json
fi

# Loads of the resident and pinned tiers read the page cache (synth just wrote the files);
# the storage run reads with O_DIRECT as it must.
if has r8b; then
  for i in 1 2; do LLMSTREAM_DIRECT=off record r8b "$i" run_model "$l8b" -n 128; done
fi
if has r70; then
  for s in auto gpu cpu; do
    LLMSTREAM_DIRECT=off record r70 "$s" run_model "$l70b" -n 16 --vram-budget 24G --split "$s"
  done
fi
if has r70t; then
  for t in ${FIG_HYBRID_THREADS:-16 12}; do
    LLMSTREAM_DIRECT=off record r70t "t$t" run_model "$l70b" -n 16 --vram-budget 24G --split auto -t "$t"
  done
fi
if has ab; then
  for i in 1 2; do
    LLMSTREAM_DIRECT=off record ab "pdl-on-$i" run_model "$l8b" -n 128
    LLMSTREAM_PDL=0 LLMSTREAM_DIRECT=off record ab "pdl-off-$i" run_model "$l8b" -n 128
  done
  for sp in default 200; do
    v=; [ $sp = default ] || v=$sp
    LLMSTREAM_POOL_SPIN_US=$v LLMSTREAM_DIRECT=off record ab "spin-$sp-70b" run_model "$l70b" -n 16 --vram-budget 24G --split auto
    LLMSTREAM_POOL_SPIN_US=$v LLMSTREAM_DIRECT=off record ab "spin-$sp-8b2g" run_model "$l8b" -n 64 --vram-budget 2G --split auto
  done
  if [ -n "${FIG_HOP_AB:-}" ]; then
    for h in kernel dma; do
      LLMSTREAM_HOP=$h LLMSTREAM_DIRECT=off record ab "hop-$h-70b" run_model "$l70b" -n 16 --vram-budget 24G --split auto
      LLMSTREAM_HOP=$h LLMSTREAM_DIRECT=off record ab "hop-$h-8b2g" run_model "$l8b" -n 64 --vram-budget 2G --split auto
    done
  fi
fi
if has r70s; then
  record r70s gpu run_model "$l70b" -n 8 --vram-budget 24G --ram-budget 12G --split gpu
fi
if has r8b2g; then
  for s in auto gpu cpu; do
    LLMSTREAM_DIRECT=off record r8b2g "$s" run_model "$l8b" -n 64 --vram-budget 2G --split "$s"
  done
fi
if has cpu; then
  LLMSTREAM_DIRECT=off record cpu llmstream \
    "$bin" run -m "$l8b" -p "$prompt" --temp 0 --backend cpu -t "$threads" -n 32 --json
  flags=$(grep -m1 '^flags' /proc/cpuinfo)
  variant=avx512
  case "$flags" in *avx512vbmi*avx512_bf16* | *avx512_bf16*avx512vbmi*) variant=avx512vbmi ;; esac
  lb=.dev/llamacpp/$variant/llama-bench
  if [ -x "$lb" ]; then
    say "cpu/llama.cpp ($variant): $lb -t $threads"
    LD_LIBRARY_PATH=$PWD/.dev/llamacpp record cpu llama.cpp \
      sh -c "'$lb' -m '$l8b' -t $threads -ngl 0 -p 0 -n 32 -r 3 -o jsonl | tail -n 1"
  else
    say "cpu/llama.cpp: no $lb (scripts/build-llamacpp-cpu.sh)"
  fi
fi

if has tests; then
  for t in .dev/tests/*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    say "tests/$name"
    LLMSTREAM_SHARED_DIR=$dir LLMSTREAM_TOKENIZER_GGUF=$tok timeout 300 "$t" --test-threads=1 \
      --nocapture --skip emulated \
      >"$dir/test-$name.log" 2>&1
    rc=$?
    cat "$dir/test-$name.log" >>"$log"
    # a test without a GPU or a model passes by saying `skipped: why`: count those
    python3 -c 'import json,sys; print(json.dumps({"step": "tests", "label": sys.argv[1], "data": {"rc": int(sys.argv[2]), "result": sys.argv[3], "skipped": int(sys.argv[4])}}))' \
      "$name" "$rc" "$(grep -a 'test result' "$dir/test-$name.log" | tail -n 1)" \
      "$(grep -a -c 'skipped: ' "$dir/test-$name.log")" >>"$jsonl"
  done
fi

python3 scripts/gpu/summarize.py "$jsonl" --inspect "$bin" | tee "$out/summary.txt"
say "done"
