#!/usr/bin/env bash
# Tests of patch-nvidia-open.sh on copies of the fixture trees in a temporary directory:
# check, dry-run, apply, idempotence, revert, unknown version, loaded-module refusal, DKMS
# layout. Needs bash, GNU patch, diff; no root. Exits non-zero on the first failure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT=$HERE/../patch-nvidia-open.sh
FIX=$HERE/fixtures
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1" >&2; fails=$((fails + 1)); }

# run NAME EXPECTED_RC ARGS... : runs the script, keeps output in $OUT
run() {
    local name=$1 want=$2 rc=0
    shift 2
    OUT=$("$SCRIPT" "$@" 2>&1) || rc=$?
    if [ "$rc" = "$want" ]; then pass "$name (rc $rc)"; else
        fail "$name: rc $rc, wanted $want"; echo "$OUT" | sed 's/^/    /' >&2
    fi
}
expect_out() { # name pattern
    if grep -q -- "$2" <<< "$OUT"; then pass "$1"; else
        fail "$1: output lacks '$2'"; echo "$OUT" | sed 's/^/    /' >&2
    fi
}
tree_sum() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

fresh() { # fixture -> copy path
    rm -rf "$WORK/src" "$WORK/root"
    cp -r "$FIX/$1" "$WORK/src"
    mkdir -p "$WORK/root"
}

# --- git layout, full cycle -------------------------------------------------------------
fresh nvidia-0.0.0-fixture
S=$WORK/src R=$WORK/root
orig=$(tree_sum "$S")
run "check on a stock tree reports pending" 1 --check --src "$S" --root "$R"
expect_out "check names both patches" "geforce-p2p: not applied"
run "dry-run succeeds" 0 --dry-run --src "$S" --root "$R"
expect_out "dry-run shows patch output" "checking file kernel-open/nvidia/os-mlock.c"
[ "$(tree_sum "$S")" = "$orig" ] && pass "dry-run changed nothing" || fail "dry-run changed the tree"
[ ! -e "$R/var/lib/llmstream/dkms-patch.state" ] && pass "dry-run wrote no state" || fail "dry-run wrote state"

run "apply" 0 --apply --src "$S" --root "$R"
grep -q 'llmstream dkms-patch "os-mlock-pfnmap"' "$S/kernel-open/nvidia/os-mlock.c" \
    && pass "os-mlock.c patched" || fail "os-mlock.c not patched"
grep -q 'bar1_covers_vram)' "$S/src/nvidia/llmstream-model/p2p-geforce-gate.c" \
    && pass "p2p gate patched" || fail "p2p gate not patched"
cmp -s "$S/kernel-open/nvidia/os-mlock.c.llmstream-orig" "$FIX/nvidia-0.0.0-fixture/kernel-open/nvidia/os-mlock.c" \
    && pass "backup equals the original" || fail "backup differs from the original"
state=$R/var/lib/llmstream/dkms-patch.state
grep -qx 'version=0.0.0-fixture' "$state" && grep -qx 'patches=os-mlock-pfnmap,geforce-p2p' "$state" \
    && pass "state file records version and patches" || fail "state file wrong: $(cat "$state" 2>&1)"
find "$S" -name '*.rej' -o -name '*.orig' | grep -q . && fail "stray .rej/.orig files" || pass "no .rej/.orig files"

applied=$(tree_sum "$S")
state_before=$(cat "$state")
run "apply twice" 0 --apply --src "$S" --root "$R"
expect_out "second apply is a no-op" "nothing changed"
[ "$(tree_sum "$S")" = "$applied" ] && pass "second apply changed no file" || fail "second apply changed files"
[ "$(cat "$state")" = "$state_before" ] && pass "second apply kept the state file" || fail "state rewritten"
run "check after apply" 0 --check --src "$S" --root "$R"

# Loaded module of the same version: apply and revert refuse, check still works.
mkdir -p "$R/sys/module/nvidia"
echo 0.0.0-fixture > "$R/sys/module/nvidia/version"
run "revert refused while the module is loaded" 1 --revert --src "$S" --root "$R"
expect_out "refusal names the loaded module" "is loaded; refusing"
[ "$(tree_sum "$S")" = "$applied" ] && pass "refused revert changed nothing" || fail "refused revert changed files"
run "check allowed while loaded" 0 --check --src "$S" --root "$R"
echo 1.2.3 > "$R/sys/module/nvidia/version"
run "revert allowed with another version loaded" 0 --revert --src "$S" --root "$R"
[ "$(tree_sum "$S")" = "$orig" ] && pass "revert restored the original tree" || fail "revert left differences"
[ ! -e "$state" ] && pass "revert removed the state file" || fail "state file left"
run "check after revert" 1 --check --src "$S" --root "$R"

# Apply refused while loaded, tree untouched.
echo 0.0.0-fixture > "$R/sys/module/nvidia/version"
run "apply refused while the module is loaded" 1 --apply --src "$S" --root "$R"
[ "$(tree_sum "$S")" = "$orig" ] && pass "refused apply changed nothing" || fail "refused apply changed files"
rm -rf "$R/sys"

# A tree where one patch conflicts: nothing at all is applied.
sed -i 's/product policy: no P2P on GeForce/locally edited/' "$S/src/nvidia/llmstream-model/p2p-geforce-gate.c"
conflicted=$(tree_sum "$S")
run "apply refused when a patch conflicts" 1 --apply --src "$S" --root "$R"
[ "$(tree_sum "$S")" = "$conflicted" ] && pass "conflict: no file changed" || fail "conflict: files changed"

# Revert without backups reverses the patch.
fresh nvidia-0.0.0-fixture
run "apply (for backup-less revert)" 0 --apply --src "$S" --root "$R"
find "$S" -name '*.llmstream-orig' -delete
run "revert without backups" 0 --revert --src "$S" --root "$R"
[ "$(tree_sum "$S")" = "$orig" ] && pass "reverse patch restored the tree" || fail "reverse patch left differences"

# --- unknown version ------------------------------------------------------------------
fresh nvidia-9.9.9-unknown
before=$(tree_sum "$S")
run "unknown version refused" 1 --apply --src "$S" --root "$R"
expect_out "refusal lists supported versions" "9.9.9 is not supported"
expect_out "refusal names 550.163.01" "550.163.01"
[ "$(tree_sum "$S")" = "$before" ] && pass "unknown version: nothing changed" || fail "unknown version changed files"

# --- DKMS layout: kernel-open content at the top, RM prebuilt ---------------------------
fresh dkms-0.0.0-fixture
run "dkms layout apply" 0 --apply --src "$S" --root "$R"
expect_out "dkms layout detected" "dkms layout"
grep -q 'llmstream dkms-patch' "$S/nvidia/os-mlock.c" && pass "dkms os-mlock.c patched" || fail "dkms os-mlock.c not patched"
grep -qx 'patches=os-mlock-pfnmap' "$R/var/lib/llmstream/dkms-patch.state" \
    && pass "dkms state lists only the applicable patch" || fail "dkms state wrong"
run "dkms check" 0 --check --src "$S" --root "$R"
expect_out "geforce-p2p reported not applicable" "geforce-p2p: not applicable"
run "dkms revert" 0 --revert --src "$S" --root "$R"
cmp -s "$S/nvidia/os-mlock.c" "$FIX/dkms-0.0.0-fixture/nvidia/os-mlock.c" && pass "dkms revert restored" || fail "dkms revert"

# --- real driver versions: their own patches on excerpts of the real files ---------------
for v in 550.163.01 555.58.02; do
    fresh "dkms-$v-excerpt"
    base=$(tree_sum "$S")
    run "$v: check reports pending" 1 --check --src "$S" --root "$R"
    expect_out "$v: version read from Kbuild" "driver $v; patches: os-mlock-pfnmap"
    run "$v: dry-run" 0 --dry-run --src "$S" --root "$R"
    [ "$(tree_sum "$S")" = "$base" ] && pass "$v: dry-run changed nothing" || fail "$v: dry-run changed files"
    run "$v: apply" 0 --apply --src "$S" --root "$R"
    grep -q '\*pfn = vma->vm_pgoff + page;' "$S/nvidia/os-mlock.c" \
        && pass "$v: PFN derived from vm_pgoff" || fail "$v: os-mlock.c not patched"
    grep -qx "version=$v" "$R/var/lib/llmstream/dkms-patch.state" \
        && pass "$v: state records the version" || fail "$v: state wrong"
    patched=$(tree_sum "$S")
    run "$v: apply twice" 0 --apply --src "$S" --root "$R"
    [ "$(tree_sum "$S")" = "$patched" ] && pass "$v: idempotent" || fail "$v: second apply changed files"
    run "$v: check after apply" 0 --check --src "$S" --root "$R"
    run "$v: revert" 0 --revert --src "$S" --root "$R"
    [ "$(tree_sum "$S")" = "$base" ] && pass "$v: revert restored the tree" || fail "$v: revert left differences"
done
# Each version's patch fits its own release only: 555.58.02's file under 550.163.01's name
# (and the reverse) is a conflict, and nothing changes.
for pair in "550.163.01 555.58.02" "555.58.02 550.163.01"; do
    read -r have claim <<< "$pair"
    fresh "dkms-$have-excerpt"
    sed -i "s/$have/$claim/" "$S/Kbuild"
    before=$(tree_sum "$S")
    run "$have tree labelled $claim: apply refused" 1 --apply --src "$S" --root "$R"
    expect_out "$have tree labelled $claim: conflict named" "does not apply"
    [ "$(tree_sum "$S")" = "$before" ] && pass "$have tree labelled $claim: nothing changed" || fail "mislabelled tree changed"
done

# --- usage ------------------------------------------------------------------------------
run "no mode is a usage error" 2 --src "$S"
run "missing source dir" 1 --check --src "$WORK/nope"

if [ $fails -gt 0 ]; then
    echo "$fails failure(s)" >&2
    exit 1
fi
echo "all dkms-patch tests passed"
