#!/usr/bin/env bash
# Second of the calls scripts/gpu/prepare.sh describes: joins SmolLM2's halves on the GPU machine
# into $FIG_DIR/models/ (LLMSTREAM_SHARED_DIR for the GPU tests) and checks its sha256.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dir=${FIG_DIR:-/var/tmp/ls}
mkdir -p "$dir/models"
m=$dir/models/SmolLM2-135M-Instruct.Q4_1.gguf
cat "$dir/smol.a" .smol/b >"$m.part"
echo "$(cat .smol/b.sha256)  $m.part" | sha256sum -c --quiet
mv "$m.part" "$m"
rm -f "$dir/smol.a"
echo "SmolLM2 at $m"
