#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` for the CPU only, from the llama.cpp sources vendored in the
# llama-cpp-python sdist (the llama.cpp the package registries carry), for the CPU comparison on
# the GPU machine, which has no network: build it here, carry the folder (scripts/gpu/figures.sh).
#
# Two builds, chosen on the machine by its CPU flags (scripts/gpu/figures.sh):
#   avx512      AVX-512 F/CD/VL/DQ/BW + VNNI (Skylake-SP / Cascade Lake and later)
#   avx512vbmi  the same + VBMI and BF16 (Ice Lake / Sapphire Rapids and later)
# GGML_NATIVE=OFF with the instruction sets named, never AMX: this development machine
# advertises AMX and faults on it, and llmstream's own kernels use none.
#
# Usage: scripts/build-llamacpp-cpu.sh [OUT_DIR]   (default: .dev/llamacpp; .dev is ignored)
# Environment: LLAMA_CPP_PYTHON_VERSION (default 0.3.36), JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ver=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
out=${1:-.dev/llamacpp}
jobs=${JOBS:-$(nproc)}
work=${TMPDIR:-/tmp}/llmstream-llamacpp-$ver
mkdir -p "$work" "$out"

sdist=$work/llama_cpp_python-$ver.tar.gz
if [ ! -f "$sdist" ]; then
  # the sdist's address and sha256 from PyPI's JSON simple index (pip itself would build the
  # package's build dependencies from source to download an sdist)
  read -r url sha < <(curl -sSf -H 'Accept: application/vnd.pypi.simple.v1+json' \
    https://pypi.org/simple/llama-cpp-python/ | python3 -c "
import json, sys
name = 'llama_cpp_python-$ver.tar.gz'
for f in json.load(sys.stdin)['files']:
    if f['filename'] == name:
        print(f['url'], f['hashes']['sha256']); break
else:
    sys.exit(f'{name} is not on PyPI')
")
  curl -sSfL -o "$sdist.part" "$url"
  echo "$sha  $sdist.part" | sha256sum -c --quiet
  mv "$sdist.part" "$sdist"
fi
src=$work/llama_cpp_python-$ver/vendor/llama.cpp
[ -d "$src" ] || tar xzf "$sdist" -C "$work"

cmake=cmake
if ! command -v cmake >/dev/null 2>&1; then
  [ -x "$work/venv/bin/cmake" ] || {
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet cmake
  }
  cmake=$work/venv/bin/cmake
fi

common=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
  -DGGML_NATIVE=OFF -DGGML_OPENMP=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
  -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF
  -DGGML_AMX_BF16=OFF)
for variant in avx512 avx512vbmi; do
  extra=(-DGGML_AVX512_VBMI=OFF -DGGML_AVX512_BF16=OFF)
  [ "$variant" = avx512vbmi ] && extra=(-DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON)
  b=$work/build-$variant
  echo "building llama-bench ($variant; logs in $work)"
  "$cmake" -S "$src" -B "$b" "${common[@]}" "${extra[@]}" >"$work/cmake-$variant.log" 2>&1
  "$cmake" --build "$b" --target llama-bench -j "$jobs" >"$work/build-$variant.log" 2>&1
  mkdir -p "$out/$variant"
  objcopy --strip-debug "$b/bin/llama-bench" "$out/$variant/llama-bench"
done
# OpenMP's runtime beside the binaries (LD_LIBRARY_PATH=OUT_DIR there)
cp -L "$(gcc -print-file-name=libgomp.so.1)" "$out/"
echo "llama.cpp $(cd "$src" && git describe --tags 2>/dev/null || echo "from llama-cpp-python $ver"): $out/{avx512,avx512vbmi}/llama-bench"
du -sh "$out"
