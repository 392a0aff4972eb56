#!/usr/bin/env bash
# Build (and optionally push) the fewframes images and print the names the pipeline uses.
#
#   containers/build.sh [--push] [--refresh-base] [--dry-run] [cpu|cuda|mlflow|all ...]
#
# Image names come from fewframes.cluster (image("cpu"), image("cuda"), mlflow_server_image()): tagged
# <version>-g<git commit> unless FEWFRAMES_IMAGE_TAG says otherwise, in the FEWFRAMES_IMAGE_REPOSITORY, for
# the build and the compiled pipeline alike. --push also writes containers/images.lock.json, each image by
# its registry digest; `fewframes compile/submit --image-lock containers/images.lock.json` pins them.
# Bases are built from the tag@sha256 pinned in each Dockerfile; --refresh-base resolves the tag's current
# digest instead (docker buildx imagetools) and prints the ARG line to commit.
# --dry-run prints the docker commands instead of running them (no Docker engine needed).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
push=0
refresh_base=0
dry_run=0
variants=()

usage() {
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

for argument in "$@"; do
    case "${argument}" in
        --push) push=1 ;;
        --refresh-base) refresh_base=1 ;;
        --dry-run) dry_run=1 ;;
        -h | --help) usage; exit 0 ;;
        cpu | cuda | mlflow) variants+=("${argument}") ;;
        all) variants+=(cpu cuda mlflow) ;;
        *) echo "build.sh: unknown argument '${argument}' (expected cpu, cuda, mlflow, all, --push, --refresh-base, --dry-run)" >&2; exit 2 ;;
    esac
done
if [[ ${#variants[@]} -eq 0 ]]; then
    variants=(cpu cuda mlflow)
fi

# The one source of truth for image names; run from the repo so an uninstalled checkout works too.
image_name() {
    local variant="$1"
    PYTHONPATH="${repo_root}${PYTHONPATH:+:${PYTHONPATH}}" "${python}" -c '
import sys
from fewframes import cluster
variant = sys.argv[1]
print(cluster.mlflow_server_image() if variant == "mlflow" else cluster.image(variant))
' "${variant}"
}

# The BASE_IMAGE default written in a Dockerfile's ARG line.
default_base() {
    sed -n 's/^ARG BASE_IMAGE=//p' "$1" | head -n 1
}

run() {
    if [[ ${dry_run} -eq 1 ]]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

revision="$(git -C "${repo_root}" rev-parse --short HEAD 2>/dev/null || echo unknown)"
built=()
declare -A pinned=()
for variant in "${variants[@]}"; do
    dockerfile="${repo_root}/containers/${variant}.Dockerfile"
    name="$(image_name "${variant}")"
    base="$(default_base "${dockerfile}")"
    if [[ ${refresh_base} -eq 1 ]]; then
        base="${base%@*}"
        if [[ ${dry_run} -eq 0 ]]; then
            digest="$(docker buildx imagetools inspect "${base}" --format '{{json .Manifest.Digest}}' | tr -d '"')"
            base="${base}@${digest}"
            echo "==> ${variant}: newest base; to pin it, set in ${dockerfile#"${repo_root}"/}: ARG BASE_IMAGE=${base}" >&2
        fi
    fi
    echo "==> ${variant}: ${name} (base ${base})" >&2
    run docker build \
        --platform linux/amd64 \
        --file "${dockerfile}" \
        --build-arg "BASE_IMAGE=${base}" \
        --label "org.opencontainers.image.revision=${revision}" \
        --label "org.opencontainers.image.base.name=${base}" \
        --tag "${name}" \
        "${repo_root}"
    if [[ ${push} -eq 1 ]]; then
        run docker push "${name}"
        if [[ ${dry_run} -eq 0 ]]; then
            digest="$(docker buildx imagetools inspect "${name}" --format '{{json .Manifest.Digest}}' | tr -d '"')"
            pinned["${variant}"]="${name}@${digest}"
        fi
    fi
    built+=("${variant}=${name}")
done

if [[ ${#pinned[@]} -gt 0 ]]; then
    lock="${repo_root}/containers/images.lock.json"
    {
        printf '{'
        separator=""
        for variant in "${!pinned[@]}"; do
            printf '%s\n  "%s": "%s"' "${separator}" "${variant}" "${pinned[${variant}]}"
            separator=","
        done
        printf '\n}\n'
    } > "${lock}.tmp"
    mv "${lock}.tmp" "${lock}"
    echo "==> pinned by digest in ${lock#"${repo_root}"/} (fewframes compile/submit --image-lock)" >&2
fi

# Last lines on stdout: the images, one per line, as the pipeline names them.
printf '%s\n' "${built[@]}"
