#!/usr/bin/env bash
# Set-up + the project's main job on its embedded default, on a laptop CPU (~5 minutes):
# the controlled noisy-preference benchmark in the memorisation regime
# (experiments/synthetic.py:quick) — DPO, cDPO, rDPO, IPO, the ROPO loss and the full ROPO
# framework at 40 % symmetric label noise — then the results table and the figures (training
# dynamics, the reward–KL frontier).   RUN_DIR=runs/quickstart by default; re-running resumes.
# The figures go to figures/ (git-ignored); docs/figures/ holds the committed ones, drawn from
# the 6-seed sweeps of docs/RESULTS.md, which the quickstart leaves alone.
source "$(dirname "$0")/_setup_env.sh" requirements.txt
RUN_DIR="${RUN_DIR:-runs/quickstart}"
start=$(date +%s)
python scripts/run_sweep.py --sweep=experiments/sweeps/quickstart.py:quick --root="$RUN_DIR"
echo
python scripts/results_table.py --root="$RUN_DIR"
python scripts/loss_table.py --out_dir="$RUN_DIR/losses" > /dev/null
python scripts/figures/gradient_weights.py --run_dir="$RUN_DIR/losses" --out=figures/gradient_weights.png
python scripts/figures/score_distributions.py --runs="$RUN_DIR/dpo,$RUN_DIR/ropo,$RUN_DIR/ropo_full" \
  --out=figures/score_distributions.png
python scripts/figures/dynamics.py --root="$RUN_DIR" --rate=0.4 --out=figures/dynamics.png
python scripts/figures/reward_kl.py --root="$RUN_DIR" --rate=0.4 --out=figures/reward_kl.png
echo "[quickstart] done in $(( $(date +%s) - start )) s; run directories under $RUN_DIR, table in $RUN_DIR/results.md, figures in figures/"
