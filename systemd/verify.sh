#!/usr/bin/env bash
# Check the systemd files of llmstreamd: `systemd-analyze verify` on the units, and dry runs of
# systemd-sysusers and systemd-tmpfiles on the conf files, in a scratch root.
# Exit 0 when every check passed, or after printing "skipped: <why>" when the tools cannot run
# here; any other outcome exits non-zero.
# Usage: systemd/verify.sh [--install]   (--install: apt-get install systemd when missing, as root)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [[ "${1:-}" == "--install" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
    fi
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "skipped: systemd-analyze is not installed (run with --install as root on Debian/Ubuntu)"
    exit 0
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
units="$scratch/units"
mkdir -p "$units"
cp "$here/llmstreamd.service" "$here/llmstreamd.socket" "$units/"
# verify checks that ExecStart names an executable. Point it at the built daemon when given
# (LLMSTREAMD_BIN), else at a stand-in, so the check covers the unit and not the install.
bin="${LLMSTREAMD_BIN:-$scratch/llmstreamd}"
if [[ ! -x "$bin" ]]; then
    printf '#!/bin/sh\nexit 0\n' >"$bin"
    chmod +x "$bin"
fi
sed -i "s|^ExecStart=/usr/bin/llmstreamd|ExecStart=$bin|" "$units/llmstreamd.service"

status=0
echo "== systemd-analyze verify ($(systemd-analyze --version | head -1))"
# --man=no: the Documentation= page is installed with the package, not here.
if ! out="$(cd "$units" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no \
        "$units/llmstreamd.socket" "$units/llmstreamd.service" 2>&1)"; then
    echo "$out"
    echo "FAIL: systemd-analyze verify"
    status=1
elif grep -E "llmstreamd\.(service|socket)" <<<"$out"; then
    # Any diagnostic naming our units counts as a failure, even when the exit status was 0.
    echo "FAIL: systemd-analyze verify reported problems in the units"
    status=1
else
    [[ -n "$out" ]] && echo "(messages about other units, ignored:)" && echo "$out"
    echo "ok"
fi

if command -v systemd-sysusers >/dev/null 2>&1; then
    echo "== systemd-sysusers --dry-run"
    root="$scratch/root"
    mkdir -p "$root/etc"
    : >"$root/etc/passwd"
    : >"$root/etc/group"
    if out="$(systemd-sysusers --root="$root" --dry-run "$here/llmstream.sysusers.conf" 2>&1)" &&
        grep -q "llmstream" <<<"$out"; then
        echo "$out"
        echo "ok"
    else
        echo "$out"
        echo "FAIL: systemd-sysusers"
        status=1
    fi
fi

if command -v systemd-tmpfiles >/dev/null 2>&1; then
    echo "== systemd-tmpfiles (syntax)"
    # --cat-config parses nothing; --create into a scratch root parses every line.
    root="$scratch/tmproot"
    mkdir -p "$root/etc" "$root/run"
    echo "llmstream:x:990:990::/:/usr/sbin/nologin" >"$root/etc/passwd"
    echo "llmstream:x:990:" >"$root/etc/group"
    if out="$(systemd-tmpfiles --root="$root" --create "$here/llmstream.tmpfiles.conf" 2>&1)" &&
        [[ -d "$root/run/llmstream" && -d "$root/etc/llmstream" ]]; then
        echo "ok"
    else
        echo "$out"
        echo "FAIL: systemd-tmpfiles"
        status=1
    fi
fi
exit "$status"
