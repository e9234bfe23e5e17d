#!/usr/bin/env bash
# The project's test command (README and .ci/run call this; change it here only).
# Extra arguments go to cargo test, e.g. `scripts/test.sh -p llmstream`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo test --workspace --release "$@"
