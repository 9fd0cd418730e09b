#!/usr/bin/env bash
# The real-model benchmark's whole sweep at full scale on one NVIDIA H100/H200 (≤ 8 minutes):
# experiments/sweeps/real_model.py:gpu — DPO, the ROPO loss, ROPO loss + filtering and ROPO-full
# at 40 % and 20 % exact symmetric noise × 3 seeds (24 runs of experiments/real_model.py:gpu),
# then the tables.
#
#   scripts/bench/real_model_gpu.sh [ROOT]      # default: $OUT/real_gpu, else runs/real_gpu
#   DRY_RUN=1 scripts/bench/real_model_gpu.sh   # print the commands, run nothing
#
# Needs the checkpoint (python scripts/fetch_smollm2.py, or ROPO_JAX_SMOLLM2=DIR).
# 1. the first run alone: it samples the shared candidates (1024 + 256 prompts × 8 samples,
#    cached under the preset's instructions.cache_dir) and fills the compilation cache;
# 2. the other 23 runs, PARALLEL (default 6) processes at a time sharing the GPU: a 135M-
#    parameter run needs a few GiB, so each process allocates on demand, capped at a share of
#    the GPU's memory, and reuses the first run's compiled programs (the runs share config.compilation_cache_dir);
# 3. scripts/results_table.py over ROOT: paired differences against DPO, mean ± stderr.
#
# Every part writes ROOT/NAME.log, its exit status to ROOT/status.txt; a run that fails is
# reported by the sweep and the others go on. Limits add up to 8 minutes
# (tests/bench_test.py checks the commands and this budget). A sweep cut off by its limit
# resumes where it stopped when the script is run again (finished runs are skipped).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=${1:-${OUT:+$OUT/real_gpu}}
ROOT=${ROOT:-runs/real_gpu}
PY=${PYTHON:-python}
PARALLEL=${PARALLEL:-6}
SWEEP=experiments/sweeps/real_model.py:gpu
mkdir -p "$ROOT"

run() {  # run NAME LIMIT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (≤ ${limit} s): $*"
  if [[ -n "${DRY_RUN:-}" ]]; then
    return 0
  fi
  timeout "$limit" "$@" >"$ROOT/$name.log" 2>&1
  local status=$?
  echo "$name $status" >>"$ROOT/status.txt"
  tail -n 3 "$ROOT/$name.log"
}

if [[ -z "${DRY_RUN:-}" ]]; then
  "$PY" -c "import jax; print('devices:', jax.devices())" | tee "$ROOT/devices.txt"
fi
# The sweep's first run, exactly as run_sweep.py would start it (same directory and flags).
FIRST=$("$PY" scripts/run_sweep.py --sweep="$SWEEP" --root="$ROOT" --print_only | head -n 1)
run first_run 180 bash -c "$FIRST"

XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=$(
  "$PY" -c "print(round(0.9 / $PARALLEL, 3))") \
  run sweep 270 "$PY" scripts/run_sweep.py --sweep="$SWEEP" --root="$ROOT" \
  --parallel="$PARALLEL"

run tables 30 "$PY" scripts/results_table.py --root="$ROOT" --seeds=mean --baseline=dpo

echo "== done: $ROOT (status.txt: each part's exit status; 124 = out of time)"
