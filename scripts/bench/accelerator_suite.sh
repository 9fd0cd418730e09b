#!/usr/bin/env bash
# Every GPU number docs/PERFORMANCE.md still lacks, in one call on one NVIDIA GPU (≈ 9 minutes):
#
#   scripts/bench/accelerator_suite.sh [OUT_DIR]      # default: $OUT, else bench_out/
#   DRY_RUN=1 scripts/bench/accelerator_suite.sh      # print the commands, run nothing
#
# 1. the DPO step of tinyllama_1b (bf16, 8 pairs × 1024 tokens, remat full) lowered for CUDA:
#    which attention kernel, LM-head rows, FLOPs;
# 2. that step against TRL's DPOTrainer on the same GPU (tokens/s, ratio, MFU), cuDNN flash
#    attention on the ropo_jax side (TRL must be importable; without it, ropo_jax alone);
# 3. the same step with XLA attention (what cuDNN buys) and with the reference forward inside
#    the step (cached vs online reference), and with rank-16 LoRA adapters (docs/lora.md);
# 4. scoring and KV-cache sampling against transformers on the GPU;
# 5. the largest preset that trains unsharded on this GPU (llama2_7b, tried; OOM is a result).
#
# Each part writes OUT_DIR/NAME.jsonl (the script's JSON lines) and OUT_DIR/NAME.log, and its
# exit status to OUT_DIR/status.txt; a part that fails or runs out of its time limit does not
# stop the others. Limits are per part (seconds) and add up to 9 minutes at most
# (tests/bench_test.py checks the commands' scripts, flags and this budget).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-${OUT:-bench_out}}
PY=${PYTHON:-python}
mkdir -p "$OUT_DIR"

STEP=(--preset=tinyllama_1b --pairs=8 --prompt_len=512 --response_len=512 --dtype=bfloat16
      --remat=full)

run() {  # run NAME LIMIT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (≤ ${limit} s): $*"
  if [[ -n "${DRY_RUN:-}" ]]; then
    return 0
  fi
  timeout "$limit" "$@" >"$OUT_DIR/$name.jsonl" 2>"$OUT_DIR/$name.log"
  local status=$?
  echo "$name $status" >>"$OUT_DIR/status.txt"
  tail -n 2 "$OUT_DIR/$name.jsonl"
}

if [[ -z "${DRY_RUN:-}" ]]; then
  "$PY" -c "import jax; print('devices:', jax.devices())" | tee "$OUT_DIR/devices.txt"
fi

run lowering_cuda 60 "$PY" scripts/bench/lowering.py --platform=cuda --preset=tinyllama_1b \
  --pairs=8 --prompt_len=512 --response_len=512 --remat=full

if [[ -n "${DRY_RUN:-}" ]] || "$PY" -c "import trl" 2>/dev/null; then
  run vs_trl 150 "$PY" scripts/bench/compare.py --configs=tinyllama_1b:8:512:512 \
    --dtype=bfloat16 --remat=full --steps=15 --warmup=3 --ropo_attention_impl=cudnn \
    --json_out="$OUT_DIR/vs_trl.json"
else
  echo "trl is not importable: timing ropo_jax alone" | tee -a "$OUT_DIR/status.txt"
  run train_step_cudnn 150 "$PY" scripts/bench/train_step.py "${STEP[@]}" --steps=15 \
    --warmup=3 --attention_impl=cudnn
fi
run train_step_xla 60 "$PY" scripts/bench/train_step.py "${STEP[@]}" --steps=10 --warmup=2 \
  --attention_impl=xla
run train_step_online_ref 60 "$PY" scripts/bench/train_step.py "${STEP[@]}" --steps=10 \
  --warmup=2 --attention_impl=cudnn --online_ref
# LoRA (docs/lora.md): the same step with rank-16 adapters on every projection over a frozen
# base, beside the full-weight steps above (its memory plans are scripts/memory_plan.py's).
run train_step_lora 45 "$PY" scripts/bench/train_step.py "${STEP[@]}" --steps=10 --warmup=2 \
  --attention_impl=cudnn --lora_rank=16
run scoring 45 "$PY" scripts/bench/scoring.py --preset=tinyllama_1b --examples=128 \
  --batch_size=16 --prompt_len=512 --response_len=512 --dtype=bfloat16
run sampling 30 "$PY" scripts/bench/sampling.py --preset=tinyllama_1b --dtype=bfloat16
run largest_llama2_7b 75 "$PY" scripts/bench/train_step.py --preset=llama2_7b --pairs=2 \
  --prompt_len=256 --response_len=256 --dtype=bfloat16 --remat=full --steps=3 --warmup=1 \
  --attention_impl=cudnn

echo "== done: $OUT_DIR (status.txt: each part's exit status; 124 = out of time)"
