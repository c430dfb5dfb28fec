#!/usr/bin/env bash
# Run HERE (where pip reaches the package index), before a session that has a GPU: fills the ignored kit
# folder .gpu-kit/ with what the GPU machine lacks, then checks that what travels stays under 64 MiB.
#
#   .gpu-kit/wheels/*.whl          bench/gpu/wheels.txt for CPython 3.12, manylinux x86-64 (pyautoattack slimmed)
#   .gpu-kit/cifar10-jpeg.tar.gz   CIFAR-10 as JPEG image folders (19 MB), from ../shared/data (or
#                                  IBRAR_CIFAR10_TARBALL; without either, the kit's own copy is kept)
#   .gpu-kit/source.json           the commit the kit was prepared at
#
# bash bench/gpu/prepare.sh --source-only   rewrites source.json alone (after a commit between two device calls)
set -euo pipefail
source_only=false
[[ ${1:-} == --source-only ]] && source_only=true
repo=$(cd "$(dirname "$0")/../.." && pwd)
kit=${IBRAR_GPU_KIT:-$repo/.gpu-kit}
python=${PYTHON:-python3}
cd "$repo"
# ../shared beside the checkout (or beside the main checkout, from a git worktree)
main_checkout=$(dirname "$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || echo "$repo/.git")")
tarball=${IBRAR_CIFAR10_TARBALL:-}
for candidate in "$repo/../shared/data/cifar10-jpeg.tar.gz" "$main_checkout/../shared/data/cifar10-jpeg.tar.gz"; do
  [[ -z $tarball && -f $candidate ]] && tarball=$candidate
done

write_source() {
  local commit dirty
  commit=$(git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)  # "unknown" before a first commit too
  dirty=$([[ -n $(git status --porcelain 2>/dev/null) ]] && echo true || echo false)
  printf '{"commit": "%s", "uncommitted_changes": %s, "prepared_utc": "%s"}\n' \
    "$commit" "$dirty" "$(date -u +%FT%TZ)" >"$kit/source.json"
}
if $source_only; then mkdir -p "$kit"; write_source; cat "$kit/source.json"; exit 0; fi

# CIFAR-10, decided before the wheels are touched (a refusal leaves the kit as it was): ../shared's copy (or
# IBRAR_CIFAR10_TARBALL's), put into the kit when it differs from the kit's; without one, the kit's own copy
kit_tarball=$kit/cifar10-jpeg.tar.gz
if [[ -n $tarball && ! -f $tarball ]]; then
  echo "error: IBRAR_CIFAR10_TARBALL=$tarball is not a file; point it at cifar10-jpeg.tar.gz" >&2; exit 2
elif [[ -z $tarball && -f $kit_tarball ]]; then
  echo "no ../shared/data/cifar10-jpeg.tar.gz beside $repo: keeping the kit's own $kit_tarball"
elif [[ -z $tarball ]]; then
  echo "error: no CIFAR-10 tarball: neither ../shared/data/cifar10-jpeg.tar.gz (beside $repo or $main_checkout)" \
    "nor $kit_tarball; set IBRAR_CIFAR10_TARBALL=/path/to/cifar10-jpeg.tar.gz and run again" >&2
  exit 2
fi

mkdir -p "$kit/wheels"
rm -f "$kit"/wheels/*.whl  # one version of each: two of one package stop the whole install there
mapfile -t wanted < <(grep -v -e '^#' -e '^[[:space:]]*$' bench/gpu/wheels.txt)
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$kit/wheels" "${wanted[@]}"
# pyautoattack ships a 42 MB test model in pyautoattack/examples/, which nothing imports
for wheel in "$kit"/wheels/pyautoattack-*.whl; do
  [[ -f $wheel ]] && "$python" bench/gpu/kit.py slim "$wheel" pyautoattack/examples/
done

if [[ -n $tarball ]] && ! cmp -s "$tarball" "$kit_tarball"; then
  install -m 0644 "$tarball" "$kit_tarball"
fi

write_source

ls -l "$kit/wheels"
"$python" bench/gpu/kit.py size --kit "$kit"
