#!/usr/bin/env bash
# Apply or revert llmstream's patches to an NVIDIA open GPU kernel module source tree
# (the open-gpu-kernel-modules git tree, or a DKMS tree such as /usr/src/nvidia-<version>).
#
#   patch-nvidia-open.sh --src DIR --check     what is applied, what would apply (changes nothing)
#   patch-nvidia-open.sh --src DIR --dry-run   run `patch --dry-run` for every pending patch
#   patch-nvidia-open.sh --src DIR --apply     apply, keeping FILE.llmstream-orig backups
#   patch-nvidia-open.sh --src DIR --revert    restore the backups (or reverse the patches)
#   options: --root DIR  read /sys/module and write /var/lib/llmstream below DIR (tests)
#
# Safety: only regular files inside --src and the state file are written, never a device;
# every patch is dry-run before any file changes; applying twice is a no-op; --apply and
# --revert refuse while the nvidia module of the same version is loaded. After --apply,
# rebuild with DKMS (see docs/setup.md).
# Exit: 0 done (for --check: every patch applied), 1 refused or failed (for --check: something
# pending), 2 usage.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PATCH_DIR=$HERE/patches
SUFFIX=.llmstream-orig

# Supported driver versions: version | patches in order (file NN-<name>.patch in
# patches/<version>/) | how it was verified. Anything else is refused.
SUPPORTED=(
    "550.163.01|os-mlock-pfnmap|dry-run against Debian nvidia-open-kernel-source 550.163.01-2"
    "555.58.02|os-mlock-pfnmap|check, dry-run, apply, revert against Debian nvidia-open-kernel-source 555.58.02-2"
    "0.0.0-fixture|os-mlock-pfnmap geforce-p2p|test fixtures in dkms-patch/tests/fixtures"
)

usage() {
    sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
}
die() { echo "patch-nvidia-open: $*" >&2; exit 1; }
say() { echo "patch-nvidia-open: $*"; }

MODE= SRC= ROOT=/
while [ $# -gt 0 ]; do
    case $1 in
        --check | --dry-run | --apply | --revert)
            [ -z "$MODE" ] || usage
            MODE=${1#--}
            ;;
        --src) [ $# -ge 2 ] || usage; SRC=$2; shift ;;
        --root) [ $# -ge 2 ] || usage; ROOT=$2; shift ;;
        -h | --help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
    shift
done
[ -n "$MODE" ] && [ -n "$SRC" ] || usage
[ -d "$SRC" ] || die "--src $SRC is not a directory"
SRC=$(cd "$SRC" && pwd -P)
case $SRC in /dev | /dev/* | /sys | /sys/* | /proc | /proc/*) die "refusing source tree $SRC" ;; esac
STATE=${ROOT%/}/var/lib/llmstream/dkms-patch.state

# --- which version, which layout ------------------------------------------------------------
detect_version() {
    local v=
    if [ -f "$SRC/version.mk" ]; then
        v=$(sed -n 's/^NVIDIA_VERSION[[:space:]]*=[[:space:]]*\([^[:space:]]*\).*/\1/p' "$SRC/version.mk" | head -n1)
    fi
    if [ -z "$v" ] && [ -f "$SRC/dkms.conf" ]; then
        v=$(sed -n 's/^PACKAGE_VERSION="\{0,1\}\([^"]*\)"\{0,1\}.*/\1/p' "$SRC/dkms.conf" | head -n1)
        case $v in *__*) v= ;; esac # an unexpanded template placeholder
    fi
    if [ -z "$v" ]; then
        local kb
        for kb in "$SRC/kernel-open/Kbuild" "$SRC/Kbuild"; do
            [ -f "$kb" ] || continue
            v=$(sed -n 's/.*NV_VERSION_STRING=\\"\([^\\]*\)\\".*/\1/p' "$kb" | head -n1)
            [ -n "$v" ] && break
        done
    fi
    printf '%s' "$v"
}

VERSION=$(detect_version)
[ -n "$VERSION" ] || die "cannot find the driver version in $SRC (version.mk, dkms.conf, Kbuild)"
ENTRY=
for e in "${SUPPORTED[@]}"; do
    [ "${e%%|*}" = "$VERSION" ] && ENTRY=$e
done
if [ -z "$ENTRY" ]; then
    {
        echo "patch-nvidia-open: driver version $VERSION is not supported. Supported versions:"
        for e in "${SUPPORTED[@]}"; do echo "  ${e%%|*}  (${e##*|})"; done
        echo "Patches are checked per version; porting them means writing and verifying new ones."
    } >&2
    exit 1
fi
rest=${ENTRY#*|}
read -r -a NAMES <<< "${rest%%|*}"

# The git tree has kernel-open/ and src/; a DKMS tree is the content of kernel-open/ alone.
if [ -d "$SRC/kernel-open" ]; then
    LAYOUT=git
else
    LAYOUT=dkms
fi

patch_file() { # name -> path
    local f
    for f in "$PATCH_DIR/$VERSION"/[0-9][0-9]-"$1".patch; do
        [ -f "$f" ] && { printf '%s' "$f"; return 0; }
    done
    die "missing patch file for $1 in $PATCH_DIR/$VERSION"
}

# Files a patch touches, relative to the tree root of the git layout (a/ stripped).
patch_targets() {
    sed -n 's/^+++ b\/\([^[:space:]]*\).*/\1/p' "$1"
}

# Strip level and, for the DKMS layout, whether the patch applies at all.
strip_level() { # patch-file -> prints level, or nothing when not applicable
    local t
    if [ $LAYOUT = git ]; then echo 1; return; fi
    for t in $(patch_targets "$1"); do
        case $t in kernel-open/*) ;; *) return 0 ;; esac
    done
    echo 2
}

run_patch() { # level file args...
    local level=$1 file=$2
    shift 2
    patch -d "$SRC" -p"$level" -F0 -N -r - --no-backup-if-mismatch -i "$file" "$@"
}

is_applied() { run_patch "$1" "$2" -R --dry-run -s > /dev/null 2>&1; }
applies() { run_patch "$1" "$2" --dry-run -s > /dev/null 2>&1; }

target_path() { # level rel -> path inside SRC
    if [ "$1" = 2 ]; then printf '%s' "$SRC/${2#kernel-open/}"; else printf '%s' "$SRC/$2"; fi
}

# Every file a patch writes must be a regular file inside SRC (never a device or a link out).
check_targets() { # level file
    local t p real
    for t in $(patch_targets "$2"); do
        p=$(target_path "$1" "$t")
        [ -f "$p" ] && [ ! -L "$p" ] || die "$p is not a regular file; refusing"
        [ ! -b "$p" ] && [ ! -c "$p" ] || die "$p is a device; refusing"
        real=$(cd "$(dirname "$p")" && pwd -P)/$(basename "$p")
        case $real in "$SRC"/*) ;; *) die "$p resolves outside $SRC; refusing" ;; esac
    done
}

module_loaded() {
    local f=${ROOT%/}/sys/module/nvidia/version
    [ -f "$f" ] && [ "$(cat "$f")" = "$VERSION" ]
}

refuse_if_loaded() {
    if module_loaded; then
        die "the nvidia module $VERSION is loaded; refusing to change its source tree. Stop the display manager and CUDA users, unload (modprobe -r nvidia_uvm nvidia_drm nvidia_modeset nvidia) or boot to a text target, then retry."
    fi
}

say "source $SRC ($LAYOUT layout), driver $VERSION; patches: ${NAMES[*]}"

# --- status of every patch ------------------------------------------------------------------
declare -A LEVEL STATUS
for n in "${NAMES[@]}"; do
    f=$(patch_file "$n")
    l=$(strip_level "$f")
    LEVEL[$n]=$l
    if [ -z "$l" ]; then
        STATUS[$n]="not-applicable"
    elif is_applied "$l" "$f"; then
        STATUS[$n]=applied
    elif applies "$l" "$f"; then
        STATUS[$n]=pending
    else
        STATUS[$n]=conflict
    fi
done

case $MODE in
check)
    all=0
    for n in "${NAMES[@]}"; do
        case ${STATUS[$n]} in
            applied) say "  $n: applied" ;;
            pending) say "  $n: not applied (applies cleanly)"; all=1 ;;
            conflict) say "  $n: does NOT apply to this tree (local changes or a different release)"; all=1 ;;
            not-applicable) say "  $n: not applicable to a DKMS tree (changes src/nvidia, shipped prebuilt)" ;;
        esac
    done
    if module_loaded; then say "nvidia module $VERSION is loaded"; fi
    if [ -f "$STATE" ]; then say "state file $STATE: $(tr '\n' ' ' < "$STATE")"; fi
    exit $all
    ;;
dry-run)
    rc=0
    for n in "${NAMES[@]}"; do
        f=$(patch_file "$n")
        case ${STATUS[$n]} in
            applied) say "$n: already applied, nothing to do" ;;
            not-applicable) say "$n: skipped (not applicable to a DKMS tree)" ;;
            *)
                say "$n: patch -p${LEVEL[$n]} --dry-run"
                run_patch "${LEVEL[$n]}" "$f" --dry-run || rc=1
                ;;
        esac
    done
    exit $rc
    ;;
apply)
    refuse_if_loaded
    for n in "${NAMES[@]}"; do
        [ "${STATUS[$n]}" = conflict ] && die "$n does not apply to $SRC; nothing was changed"
    done
    todo=()
    for n in "${NAMES[@]}"; do
        [ "${STATUS[$n]}" = pending ] || continue
        f=$(patch_file "$n")
        check_targets "${LEVEL[$n]}" "$f"
        for t in $(patch_targets "$f"); do
            p=$(target_path "${LEVEL[$n]}" "$t")
            [ -e "$p$SUFFIX" ] && die "stale backup $p$SUFFIX exists; run --revert or remove it"
        done
        todo+=("$n")
    done
    for n in "${todo[@]}"; do
        f=$(patch_file "$n")
        say "$n: applying"
        for t in $(patch_targets "$f"); do
            p=$(target_path "${LEVEL[$n]}" "$t")
            cp -p -- "$p" "$p$SUFFIX"
        done
        run_patch "${LEVEL[$n]}" "$f" -s
        STATUS[$n]=applied
    done
    [ ${#todo[@]} -gt 0 ] || say "every patch is already applied; nothing changed"
    applied=()
    for n in "${NAMES[@]}"; do [ "${STATUS[$n]}" = applied ] && applied+=("$n"); done
    if [ ${#todo[@]} -gt 0 ] || [ ! -f "$STATE" ]; then
        mkdir -p "$(dirname "$STATE")"
        [ ! -e "$STATE" ] || [ -f "$STATE" ] || die "$STATE is not a regular file"
        tmp=$STATE.tmp.$$
        {
            echo "version=$VERSION"
            echo "patches=$(IFS=,; echo "${applied[*]}")"
            echo "src=$SRC"
            echo "applied_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        } > "$tmp"
        mv -f -- "$tmp" "$STATE"
        say "recorded in $STATE"
    fi
    say "now rebuild the module: dkms build/install (docs/setup.md), then reboot"
    ;;
revert)
    refuse_if_loaded
    for ((i = ${#NAMES[@]} - 1; i >= 0; i--)); do
        n=${NAMES[$i]}
        [ "${STATUS[$n]}" = applied ] || continue
        f=$(patch_file "$n")
        check_targets "${LEVEL[$n]}" "$f"
        have_all=1
        for t in $(patch_targets "$f"); do
            [ -f "$(target_path "${LEVEL[$n]}" "$t")$SUFFIX" ] || have_all=0
        done
        if [ $have_all = 1 ]; then
            say "$n: restoring backups"
            for t in $(patch_targets "$f"); do
                p=$(target_path "${LEVEL[$n]}" "$t")
                mv -f -- "$p$SUFFIX" "$p"
            done
        else
            say "$n: no backup, reversing the patch"
            run_patch "${LEVEL[$n]}" "$f" -R -s
        fi
    done
    if [ -f "$STATE" ]; then rm -f -- "$STATE"; say "removed $STATE"; fi
    say "reverted; rebuild the module with dkms to use the stock source"
    ;;
esac
