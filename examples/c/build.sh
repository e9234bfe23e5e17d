#!/usr/bin/env bash
# Build the C examples (stream_checksum, errors) against the libllmstream.so that cargo built.
#
#   examples/c/build.sh [--profile release|debug] [--lib FILE] [--sanitize] [--out DIR]
#
# Needs `cargo build [--release] -p llmstream` first; finds the library in
# ${CARGO_TARGET_DIR:-target}/<profile>/, or takes it from --lib. Links the way an installed library is used: DIR/lib
# holds libllmstream.so and libllmstream.so.0 (the SONAME) as links to cargo's file, and the
# programs carry DIR/lib as their rpath. --sanitize builds with ASan and UBSan (the Rust library
# itself is not instrumented). Also checks that the header compiles as C++ (cpp_compat).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
profile=release
lib=
sanitize=0
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --lib) lib=$2; shift 2 ;;
    --sanitize) sanitize=1; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--profile release|debug] [--lib FILE] [--sanitize] [--out DIR]" >&2; exit 2 ;;
  esac
done
target=${CARGO_TARGET_DIR:-$repo/target}
lib=${lib:-$target/$profile/libllmstream.so}
if [ ! -f "$lib" ]; then
  echo "$lib not found: run cargo build --profile $profile -p llmstream first" >&2
  exit 1
fi
if [ -z "$out" ]; then
  out=$target/c-examples/$profile
  if [ $sanitize = 1 ]; then
    out=$out-asan
  fi
fi
mkdir -p "$out/lib"
out=$(cd "$out" && pwd)
lib=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
if [ -z "$soname" ]; then
  echo "$lib has no SONAME" >&2
  exit 1
fi
ln -sf "$lib" "$out/lib/libllmstream.so"
ln -sf "$lib" "$out/lib/$soname"

cflags=(-std=c11 -Wall -Wextra -Wpedantic -Werror -O2 -g -I "$repo/include")
if [ $sanitize = 1 ]; then
  cflags+=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
fi
for prog in stream_checksum errors; do
  gcc "${cflags[@]}" -o "$out/$prog" "$repo/examples/c/$prog.c" \
    -L "$out/lib" -Wl,-rpath,"$out/lib" -lllmstream -pthread
done
# The header as C++ (extern "C" block, enum underlying types).
echo '#include "llmstream.h"
int main() { lls_status s = LLS_STATUS_OK; return static_cast<int>(s) + (lls_abi_version() == 0); }' |
  g++ -std=c++17 -Wall -Wextra -Wpedantic -Werror -I "$repo/include" -x c++ -fsyntax-only -
echo "built $out/stream_checksum and $out/errors (needs $soname)"
