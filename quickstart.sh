#!/usr/bin/env bash
# One command for a new user: set up .venv (ibrar, its test extras and CI's test-only references), find or unpack
# CIFAR-10, train the quickstart config on the CPU (one torch thread, so the result is the README's). Arguments
# go to `ibrar train` (key=value overrides).
set -euo pipefail
cd "$(dirname "$0")"
if [[ ! -x .venv/bin/ibrar ]]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --upgrade pip >/dev/null
  .venv/bin/python -m pip install -e '.[test]'
fi
# The test-only references CI installs (torchattacks, RobustBench, the Hub's card reader), so that the README's
# test command runs every test CI runs.
if ! .venv/bin/python -c 'import torchattacks, robustbench, huggingface_hub' 2>/dev/null; then
  bash .ci/install-test-references .venv/bin/python
fi
data_root=${IBRAR_DATA_ROOT:-$HOME/.cache/ibrar-data}
# the layouts ibrar reads CIFAR-10 from (ibrar.data.readers): its pickles or an image folder, at the root or below it
if [[ ! -d $data_root/cifar10-jpeg && ! -d $data_root/cifar-10-batches-py && ! -d $data_root/cifar10 \
      && ! -d $data_root/train ]]; then
  unpack=../shared/data/unpack-cifar10.sh
  if [[ -x $unpack ]]; then
    "$unpack" "$data_root/cifar10-jpeg"
  else
    echo "CIFAR-10 not found under $data_root; put it there (or set IBRAR_DATA_ROOT) and run again" >&2
    exit 2
  fi
fi
# device=cpu: the README's row is the CPU's (one thread); ./quickstart.sh device=cuda trains on a GPU instead
exec .venv/bin/ibrar train configs/quickstart.yaml --data-root "$data_root" --overwrite device=cpu "$@"
