#!/usr/bin/env bash
# Builds here what scripts/gpu/figures.sh and the GPU tests need on the GPU machine, which has
# no Rust toolchain and no network, into ignored folders the device tool can carry (64 MiB a
# call, the working tree included):
#   .dev/llmstream        the CLI, release, debug info stripped
#   .dev/tok.gguf         a tiny synthetic model carrying SmolLM2's tokenizer (synth's source)
#   .dev/tests/           the GPU test binaries (gpu_engine, gpu_ops, gpu_quant), stripped
#   .dev/llamacpp/        llama.cpp's CPU llama-bench, with --llamacpp (scripts/build-llamacpp-cpu.sh)
#   .smol/a, .smol/b      SmolLM2 in two halves (98 MB: one call cannot carry it), with --smol
#
# On the GPU machine (one warm machine; chain the calls, it goes back 30 s after one):
#   1. carry [".smol/a"]:  mkdir -p /var/tmp/ls && cp .smol/a /var/tmp/ls/smol.a
#   2. carry [".smol/b", ".smol/b.sha256"]:  scripts/gpu/join-smol.sh   (checks the sha256)
#   3. carry [".dev"]:     scripts/gpu/figures.sh            (FIG_STEPS=tests for the tests only)
# Usage: scripts/gpu/prepare.sh [--llamacpp] [--smol]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
llamacpp=0 smol=0
for a in "$@"; do
  case $a in
    --llamacpp) llamacpp=1 ;;
    --smol) smol=1 ;;
    *) echo "usage: $0 [--llamacpp] [--smol]" >&2; exit 2 ;;
  esac
done
target=${CARGO_TARGET_DIR:-$PWD/target}
shared=${LLMSTREAM_SHARED_DIR:-$PWD/../shared}
smollm2=$shared/models/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p .dev/tests

cargo build --release -p llmstream-cli
objcopy --strip-debug "$target/release/llmstream" .dev/llmstream
# the smallest model that carries the tokenizer (3.5 MB; the tiny-llama preset is 20 MB)
.dev/llmstream synth --preset tiny-llama --layers 1 --embd 32 --ff 32 --heads 1 --kv-heads 1 \
  --quant q8_0 --tied --tokenizer-from "$smollm2" -o .dev/tok.gguf --force

# the test executables cargo reports for the three GPU test targets
cargo test --release -p llmstream-infer --test gpu_engine --test gpu_ops --test gpu_quant \
  --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
  objcopy --strip-debug "$exe" ".dev/tests/$name"
done

[ $llamacpp = 1 ] && scripts/build-llamacpp-cpu.sh .dev/llamacpp
if [ $smol = 1 ]; then
  mkdir -p .smol
  half=$(( ($(stat -c %s "$smollm2") + 1) / 2 ))
  head -c "$half" "$smollm2" >.smol/a
  tail -c +$((half + 1)) "$smollm2" >.smol/b
  sha256sum "$smollm2" | cut -d' ' -f1 >.smol/b.sha256
fi
du -sh .dev/* .smol/* 2>/dev/null
echo "carried by the figures call: $(du -sh .dev | cut -f1)"
echo "the working tree travels too: $(git ls-files -z | du -ch --files0-from=- 2>/dev/null | tail -n 1)"
