"""Per-example training loss of clean vs flipped pairs after training — the paper's evidence
that ROPO's loss separates noisy from clean samples. One panel per run directory (reads each
run's ``final_scores.npz``; does not import JAX).

    python scripts/figures/score_distributions.py --runs=runs/quickstart/dpo,runs/quickstart/ropo \
        --out=figures/score_distributions.png
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import figure_io
import matplotlib.pyplot as plt
import numpy as np


def _auroc(scores, positive):
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="comma-separated run directories")
    parser.add_argument("--out", default="figures/score_distributions.png")
    args = parser.parse_args()
    runs = args.runs.split(",")
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.4), dpi=150, squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        scores = np.load(os.path.join(run, "final_scores.npz"))
        with open(os.path.join(run, "results.json")) as f:
            results = json.load(f)
        flipped = scores["is_flipped"].astype(bool)
        # The margin h is comparable across losses (each loss is monotone in it).
        margin = scores["margin"]
        bins = np.linspace(np.percentile(margin, 1), np.percentile(margin, 99), 40)
        ax.hist(margin[~flipped], bins=bins, alpha=0.6, density=True, label="clean pairs")
        ax.hist(margin[flipped], bins=bins, alpha=0.6, density=True, label="flipped pairs")
        title = f"{results['method']} ({results['noise']['kind']} {results['noise']['rate']:g})"
        if flipped.any() and (~flipped).any():
            title += f"\nAUROC(−h → flipped) = {_auroc(-margin, flipped):.3f}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("margin h on the (noisy) training label")
        ax.legend(fontsize=7, frameon=False)
    axes[0][0].set_ylabel("density")
    figure_io.save(fig, args.out)


if __name__ == "__main__":
    main()
