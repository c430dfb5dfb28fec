#!/usr/bin/env bash
# Rehearse the kit under a replica of the GPU machine's Python, here on the CPU: CPython 3.12 with torch 2.11,
# torchvision 0.26 and the packages KINDS.md lists there that ibrar uses, but without pydantic or pyautoattack, and
# with a typing_extensions older than the carried pydantic needs (the machine's own may be). Every carried wheel
# is then installed as on the device, so a missing or clashing wheel shows here, not in a lease's first call.
# Usage (after bench/gpu/prepare.sh; needs PyPI and a CPython 3.12): bash bench/gpu/replica.sh [STAGE ...]
# (default: check, table4 1,6, fetch 6, table1, fig2 hbar,vib). The venv is kept in ${IBRAR_GPU_REPLICA:-/tmp/ibrar-gpu-replica-venv}.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${IBRAR_GPU_REPLICA:-/tmp/ibrar-gpu-replica-venv}
scratch=/tmp/ibrar-gpu-replica
# A CPython 3.12: IBRAR_GPU_REPLICA_PYTHON, else python3.12, else pyenv's 3.12 (its shim refuses an installed
# version that is not the selected one).
python312() {
  local py=${IBRAR_GPU_REPLICA_PYTHON:-python3.12} version
  if "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then echo "$py"; return; fi
  if [[ -z ${IBRAR_GPU_REPLICA_PYTHON:-} ]] && command -v pyenv > /dev/null && version=$(pyenv versions --bare | grep -m1 '^3\.12\.'); then
    PYENV_VERSION=$version pyenv which python3.12; return
  fi
  if [[ -n ${IBRAR_GPU_REPLICA_PYTHON:-} ]]; then
    echo "error: IBRAR_GPU_REPLICA_PYTHON=$IBRAR_GPU_REPLICA_PYTHON is not a CPython 3.12; give the path of one" >&2
  else
    echo "error: no CPython 3.12 (python3.12 on PATH or a pyenv 3.12); install one or set" \
      "IBRAR_GPU_REPLICA_PYTHON to its path" >&2
  fi
  return 1
}
if [[ ! -x $venv/bin/python ]]; then
  py=$(python312)
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q torch==2.11.0 torchvision==0.26.0 numpy pyyaml tqdm matplotlib \
    scikit-learn pillow safetensors scipy pytest hypothesis 'typing-extensions<4.13'
fi
if "$venv/bin/python" -c "import pydantic" 2>/dev/null || "$venv/bin/python" -c "import autoattack" 2>/dev/null; then
  echo "error: $venv has pydantic or pyautoattack, which the GPU machine lacks; remove the venv and rerun" >&2
  exit 2
fi
stages=("$@")
[[ ${#stages[@]} -gt 0 ]] || stages=("check" "table4 1,6" "fetch 6" "table1" "fig2 hbar,vib")
rm -rf "$scratch"
i=0
for stage in "${stages[@]}"; do
  i=$((i + 1))
  # shellcheck disable=SC2086  # a stage is its words
  IBRAR_GPU_PYTHON=$venv/bin/python IBRAR_GPU_SCRATCH=$scratch OUT=$scratch/out$i \
    bash bench/gpu/run.sh --rehearse $stage > "$scratch.log$i" 2>&1 || { echo "FAILED: $stage (log $scratch.log$i)"; exit 1; }
  # a table4 call that ran but whose rows failed ends with "CALL AGAIN" and exit code 0: read stage.json
  "$venv/bin/python" - "$scratch/out$i/stage.json" <<'PY' || { echo "FAILED: $stage (log $scratch.log$i)"; exit 1; }
import json, sys
stage = json.load(open(sys.argv[1]))
failed = [f"row {r['row']}: {r['status']}" for r in stage.get("rows", []) if r["status"].startswith("failed")]
if stage["status"].startswith("failed") or failed:
    sys.exit(f"{stage['status']}; " + "; ".join(failed))
PY
  echo "$stage: $(tail -2 "$scratch.log$i" | head -1)"
done
echo "every stage ran under $("$venv/bin/python" -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}")')"
