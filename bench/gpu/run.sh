#!/usr/bin/env bash
# One device call = one stage of the GPU kit (bench/gpu/README.md):
#
#   bash bench/gpu/run.sh check          CUDA tests + the fast-path benchmark on full-width VGG16, batch 100
#   bash bench/gpu/run.sh table4         the six VGG16 rows of Table 4 at paper scale at once, one process each;
#                                        everything small they made comes back packed in table4.tar.gz
#   bash bench/gpu/run.sh table4-1       one paper-scale Table 4 row (1, 2, 6, ... or e.g. resnet18-6; 6-seed1:
#                                        seed 1); trains until the call's time is nearly spent, then says whether
#                                        to call again
#   bash bench/gpu/run.sh table1         Table 1's PGD-AT pair on CIFAR-10 the same way (table1.tar.gz); one run:
#                                        table1-pgd_at-ibrar; others: table1 trades,trades-ibrar
#   bash bench/gpu/run.sh fig2           Figure 2's five networks the same way, with the steps curves (fig2.tar.gz)
#   bash bench/gpu/run.sh fetch 6 [K]    a trained row's final.pt in sha256-checked shards (K: the first shard;
#                                        a Table 1 run: fetch table1-pgd_at-ibrar)
#   bash bench/gpu/run.sh --rehearse STAGE   the same on the CPU with tiny sizes (or IBRAR_GPU_KIT_REHEARSAL=1)
#
# Set-up inside every call: the wheels carried in .gpu-kit/wheels are pip-installed offline into $scratch/site,
# CIFAR-10 is unpacked from .gpu-kit/cifar10-jpeg.tar.gz (once per machine), ibrar runs from src/ (no install).
# Results (JSON, markdown, logs; never checkpoints) go to $OUT, at most two folders down.
set -euo pipefail
if [[ ${1:-} == --rehearse ]]; then export IBRAR_GPU_KIT_REHEARSAL=1; shift; fi
stage=${1:?usage: bash bench/gpu/run.sh [--rehearse] check|table4[-ROW]|table1[-RUN]|fig2[-RUN]|fetch ROW [FIRST_SHARD]}
repo=$(cd "$(dirname "$0")/../.." && pwd)
export IBRAR_GPU_T0=${IBRAR_GPU_T0:-$(date +%s.%N)}
rehearsal=${IBRAR_GPU_KIT_REHEARSAL:-0}
[[ $rehearsal == 1 ]] && default_scratch=/tmp/ibrar-gpu-rehearsal || default_scratch=/tmp/ibrar-gpu
scratch=${IBRAR_GPU_SCRATCH:-$default_scratch}
kit=${IBRAR_GPU_KIT:-$repo/.gpu-kit}
python=${IBRAR_GPU_PYTHON:-python3}
if [[ -z ${OUT:-} ]]; then
  [[ $rehearsal == 1 ]] || { echo "error: \$OUT is unset (the device tool sets it; rehearse with --rehearse)" >&2; exit 2; }
  export OUT=$scratch/out
fi
mkdir -p "$OUT" "$scratch"
cd "$repo"
log=$OUT/stage.log

{
  echo "== ibrar GPU kit: stage $stage ($( [[ $rehearsal == 1 ]] && echo rehearsal on the CPU || echo device )) $(date -u +%FT%TZ)"
  site=$scratch/site
  # 0. what a device call would send (here only: the GPU machine gets the tree without .git)
  [[ $rehearsal == 1 ]] && "$python" bench/gpu/kit.py size --kit "$kit"
  # 1. the packages the machine lacks, from carried wheels (offline; a rehearsal skips those that import here);
  #    fetch needs none of them and no data: its calls must be short (the machine stays warm 30 s after each)
  if [[ $stage != fetch ]]; then
    install_args=()
    [[ $rehearsal == 1 ]] && install_args+=(--rehearsal)
    "$python" bench/gpu/kit.py install "$kit/wheels" "$site" ${install_args[@]+"${install_args[@]}"}
  fi
  export PYTHONPATH=$site:$repo/src:$repo/bench${PYTHONPATH:+:$PYTHONPATH}
  # 2. CIFAR-10 (or, in a rehearsal, whatever tiny image folder the kit carries)
  [[ $stage == fetch ]] || "$python" bench/gpu/kit.py unpack "$kit/cifar10-jpeg.tar.gz" "$scratch/data/cifar10-jpeg"
  export IBRAR_DATA_ROOT=$scratch/data/cifar10-jpeg
  export IBRAR_GPU_SCRATCH=$scratch IBRAR_GPU_KIT=$kit PYTHONUNBUFFERED=1
  [[ -f $kit/source.json ]] && export IBRAR_GPU_SOURCE=$kit/source.json
  echo "set-up done after $("$python" -c "import time; print(round(time.time() - $IBRAR_GPU_T0, 1))") s"
  # 3. the stage; SIGTERM before the call's 10-minute limit lets training checkpoint and the results be written.
  #    Its deadline counts from the call's start (IBRAR_GPU_T0), set-up included: 20 s before the call's end
  #    (IBRAR_GPU_CALL_S: the device call's timeout_s, 600 unless a lease has less left), or IBRAR_GPU_STAGE_TIMEOUT_S
  rc=0
  stage_timeout=$("$python" -c "import sys; sys.path.insert(0, 'bench/gpu'); import stages; print(stages.stage_timeout_s())")
  timeout -s TERM -k 15 "$stage_timeout" "$python" bench/gpu/stages.py "$@" || rc=$?
  "$python" bench/gpu/stages.py finalize "$*" --rc "$rc" || true
  exit "$rc"
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
