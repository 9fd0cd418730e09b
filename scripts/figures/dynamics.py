"""Training dynamics per method at one noise rate: the fraction of flipped and of clean training
pairs the policy fits, clean held-out accuracy and the gold reward of samples, against epochs of
preference training (mean over seeds, a band of ± one std) — the claim "DPO fits the flipped
labels, ROPO does not" as a curve. Reads run directories (results.json "dynamics") only.

    python scripts/figures/dynamics.py --root=runs/regime --rate=0.4 --out=docs/figures/dynamics.png
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import figure_io
import matplotlib.pyplot as plt
import numpy as np

from ropo_jax.evaluation import run_results

PANELS = (
    ("flipped pairs fit (h > 0 on the noisy label)", "flipped_fit_rate"),
    ("clean pairs fit", "clean_fit_rate"),
    ("clean held-out preference accuracy", "heldout_accuracy"),
    ("gold reward of samples", "gold_reward_mean"),
)


def curves(runs, key):
    """epochs, [seeds × epochs] values of ``key`` (runs of one method; equal epoch grids)."""
    grids = [[r["epoch"] for r in run["dynamics"]] for run in runs]
    epochs = min(grids, key=len)
    table = [[row[key] for row in run["dynamics"][: len(epochs)]] for run in runs]
    return np.array(epochs), np.array(table, dtype=float)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument(
        "--variants", default="", help="comma-separated run variants (default: plain methods)"
    )
    parser.add_argument("--rate", type=float, required=True, help="the noise rate to plot")
    parser.add_argument("--out", default="figures/dynamics.png")
    args = parser.parse_args()
    runs = figure_io.runs_with_dynamics(args.root, args.rate, args.variants)
    by_method = run_results.group_by(runs, figure_io.variant)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4), dpi=150)
    for ax, (title, key) in zip(axes, PANELS, strict=True):
        for method in sorted(by_method, key=lambda m: (run_results.method_rank(m), m)):
            epochs, values = curves(by_method[method], key)
            mean, std = values.mean(axis=0), values.std(axis=0)
            color = f"C{run_results.method_rank(method) % 10}"
            ax.plot(epochs, mean, color=color, lw=1.3, label=f"{method} ({len(values)})")
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.12)
        ax.set_xlabel("epochs of preference training")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, frameon=False)
    print("| method | seeds | " + " | ".join(f"{key} (first → last)" for _, key in PANELS) + " |")
    for method in sorted(by_method, key=lambda m: (run_results.method_rank(m), m)):
        cells = []
        for _, key in PANELS:
            _, values = curves(by_method[method], key)
            cells.append(f"{values[:, 0].mean():.3f} → {values[:, -1].mean():.3f}")
        print(f"| {method} | {len(by_method[method])} | " + " | ".join(cells) + " |")
    name = os.path.basename(os.path.normpath(args.root))
    fig.suptitle(f"{name}: symmetric noise {args.rate:g}, mean ± std over seeds", fontsize=8)
    figure_io.save(fig, args.out)


if __name__ == "__main__":
    main()
