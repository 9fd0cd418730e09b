#!/usr/bin/env bash
# Set-up + the project's main job on its embedded default. Runs on a laptop CPU.
#   ./scripts/quickstart.sh            (RUN_DIR=runs/quickstart by default)
# Today's main job: every preference loss's value and gradient weight on a grid of margins,
# and the paper's gradient-weight figure (figures/gradient_weights.png).
source "$(dirname "$0")/_setup_env.sh" requirements.txt
RUN_DIR="${RUN_DIR:-runs/quickstart}"
start=$(date +%s)
python scripts/loss_table.py --out_dir="$RUN_DIR/losses"
python scripts/figures/gradient_weights.py --run_dir="$RUN_DIR/losses" --out=figures/gradient_weights.png
echo "[quickstart] done in $(( $(date +%s) - start )) s; run directory: $RUN_DIR"
