#!/usr/bin/env bash
# Install the C library: shared object with its SONAME links, header, pkg-config file.
#
#   scripts/install-c.sh [--prefix /usr/local] [--libdir lib] [--destdir DIR] [--profile release]
#
# Needs `cargo build --release -p llmstream` first (reads ${CARGO_TARGET_DIR:-target}/<profile>/).
# Installs, under DESTDIR/PREFIX:
#   LIBDIR/libllmstream.so.X.Y.Z, LIBDIR/libllmstream.so.X -> (the SONAME), LIBDIR/libllmstream.so ->
#   include/llmstream.h
#   LIBDIR/pkgconfig/llmstream.pc   (from libllmstream/llmstream.pc.in)
# Then: cc app.c $(pkg-config --cflags --libs llmstream)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

prefix=/usr/local
libdir=lib
destdir=
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --libdir) libdir=$2; shift 2 ;;
    --destdir) destdir=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    *) echo "usage: $0 [--prefix DIR] [--libdir lib] [--destdir DIR] [--profile release]" >&2
       exit 2 ;;
  esac
done

so=${CARGO_TARGET_DIR:-$repo/target}/$profile/libllmstream.so
if [ ! -f "$so" ]; then
  echo "$so not found: run cargo build --profile $profile -p llmstream first" >&2
  exit 1
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
url=$(sed -n 's/^repository = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
soname=$(readelf -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
if [ -z "$version" ] || [ -z "$soname" ]; then
  echo "cannot read the version from Cargo.toml or the SONAME from $so" >&2
  exit 1
fi

root=$destdir$prefix
install -d "$root/$libdir/pkgconfig" "$root/include"
install -m 0755 "$so" "$root/$libdir/libllmstream.so.$version"
ln -sf "libllmstream.so.$version" "$root/$libdir/$soname"
ln -sf "$soname" "$root/$libdir/libllmstream.so"
install -m 0644 "$repo/include/llmstream.h" "$root/include/llmstream.h"
sed -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$libdir|" -e "s|@VERSION@|$version|" \
  -e "s|@URL@|$url|" "$repo/libllmstream/llmstream.pc.in" >"$root/$libdir/pkgconfig/llmstream.pc"
echo "installed libllmstream $version ($soname) under $root"
