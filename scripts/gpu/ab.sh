#!/usr/bin/env bash
# Alternated A/B decode runs of the 8B shape, several CLIs in one device call (the machines are
# shared and noisy: compare only within a call). Usage (GPU machine, binaries carried in .dev):
#   scripts/gpu/ab.sh "LABEL BINARY [ENV=VALUE ...]" ...   (REPS rounds, default 2; N tokens,
#   default 128; a run is stopped after AB_TIMEOUT seconds, default 120, so that a hung
#   experiment cannot spend the call). Synthesizes /var/tmp/ls/l8b.gguf with .dev/llmstream if
#   it is missing; prints and appends to $OUT/ab.txt one line per run: label, decode tok/s, the start of the text.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${OUT:-$PWD/figures-out}
mkdir -p "$out" /var/tmp/ls
model=/var/tmp/ls/l8b.gguf
[ -f "$model" ] || .dev/llmstream synth --preset llama3.1-8b --tokenizer-from .dev/tok.gguf -o "$model" >/dev/null 2>&1
run() {
  local label=$1 bin=$2
  shift 2
  local v
  v=$(env "$@" LLMSTREAM_DIRECT=off timeout "${AB_TIMEOUT:-120}" "$bin" run -m "$model" -p "Hello world, this is" --temp 0 \
    --backend cuda --json -n "${N:-128}" 2>"$out/err-$label.txt" | tail -1 |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(round(d['decode_tok_per_s'],2), d.get('text','')[:60].replace(chr(10),' '))" 2>&1)
  echo "$label $v" | tee -a "$out/ab.txt"
}
for _ in $(seq "${REPS:-2}"); do
  for spec in "$@"; do
    # shellcheck disable=SC2086 # the spec is "label binary env..." on purpose
    run $spec
  done
done
