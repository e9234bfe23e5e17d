#!/usr/bin/env bash
# Real-run timeline of a decode (no Nsight Systems on the GPU machine): a CUPTI injection
# library (timeline/cupti_trace.cpp, built here with nvcc against the CUDA install's CUPTI)
# records every kernel's start and end while `llmstream run` decodes, and
# timeline/summarize.py prints what each kernel adds to a token's chain of dependent launches,
# which Nsight Compute's one-kernel-at-a-time times (kernel-times.sh) cannot show.
# Usage (GPU machine, after figures.sh's synth): scripts/gpu/timeline.sh MODEL LABEL [run
# flags...]; TL_API=1 adds the host's driver calls; TL_BIN picks another CLI. Writes
# $OUT/tl-LABEL.csv.gz and $OUT/tl-LABEL.txt.
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${OUT:-$PWD/figures-out}
mkdir -p "$out"
model=$1 label=$2
shift 2
bin=${TL_BIN:-.dev/llmstream}
work=${TL_DIR:-/var/tmp/ls}
mkdir -p "$work"
inc=$(dirname "$(find /usr/local -name cupti_activity.h 2>/dev/null | head -1)")
so_file=$(find /usr/local \( -name 'libcupti.so' -o -name 'libcupti.so.*' \) 2>/dev/null | grep -v stub | head -1)
[ -f "$inc/cupti_activity.h" ] && [ -n "$so_file" ] || { echo "no CUPTI" | tee "$out/tl-$label.txt"; exit 0; }
lib=$(dirname "$so_file")
krec=$(grep -oh 'CUpti_ActivityKernel[0-9]*' "$inc"/cupti_activity*.h | sort -V | tail -1)
mrec=$(grep -oh 'CUpti_ActivityMemcpy[0-9]*' "$inc"/cupti_activity*.h | sort -V | tail -1)
so=$work/cupti_trace.so
nvcc -shared -Xcompiler -fPIC -O2 -DKREC="$krec" -DMREC="$mrec" -I"$inc" \
  scripts/gpu/timeline/cupti_trace.cpp -L"$lib" -l:"$(basename "$so_file")" -o "$so"
LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-} CUDA_INJECTION64_PATH=$so TL_OUT=$work/tl-$label.csv \
  "$bin" run -m "$model" -p "Hello world, this is" --temp 0 --backend cuda -n "${TL_TOKENS:-24}" "$@" \
  >"$out/tl-$label.run" 2>&1
gzip -c "$work/tl-$label.csv" >"$out/tl-$label.csv.gz"
python3 scripts/gpu/timeline/summarize.py "$work/tl-$label.csv" | tee "$out/tl-$label.txt"
