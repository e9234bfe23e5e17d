#!/usr/bin/env bash
# Check that include/llmstream.h is what the pinned cbindgen generates from the Rust sources.
#
#   scripts/check-header.sh            regenerate into a temporary file, fail on any difference
#   scripts/check-header.sh --fix      rewrite include/llmstream.h
#   scripts/check-header.sh --install  first install the pinned cbindgen unless it is there
#
# The generation command is exactly:
#   cbindgen --config libllmstream/cbindgen.toml --crate llmstream --output include/llmstream.h libllmstream
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CBINDGEN_VERSION=0.29.4
fix=0
install=0
for arg in "$@"; do
  case "$arg" in
    --fix) fix=1 ;;
    --install) install=1 ;;
    *) echo "usage: $0 [--fix] [--install]" >&2; exit 2 ;;
  esac
done

have=$(cbindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$CBINDGEN_VERSION" ] && [ $install = 1 ]; then
  echo "installing cbindgen $CBINDGEN_VERSION (found: ${have:-none})"
  nice -n 10 cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --quiet
  have=$(cbindgen --version 2>/dev/null | awk '{print $2}' || true)
fi
if [ "$have" != "$CBINDGEN_VERSION" ]; then
  echo "cbindgen $CBINDGEN_VERSION is needed (found: ${have:-none}):" >&2
  echo "  cargo install cbindgen --version $CBINDGEN_VERSION --locked" >&2
  exit 1
fi

out=include/llmstream.h
tmp=$(mktemp)
log=$(mktemp)
trap 'rm -f "$tmp" "$log"' EXIT
# cbindgen warns about items it skips (see cbindgen.toml); show its output only on failure.
if ! cbindgen --config libllmstream/cbindgen.toml --crate llmstream --output "$tmp" libllmstream \
  2>"$log"; then
  cat "$log" >&2
  exit 1
fi
if [ $fix = 1 ]; then
  cp "$tmp" "$out"
  echo "wrote $out"
elif diff -u "$out" "$tmp"; then
  echo "$out is up to date (cbindgen $CBINDGEN_VERSION)"
else
  echo "$out differs from what cbindgen generates: run scripts/check-header.sh --fix and commit" >&2
  exit 1
fi
