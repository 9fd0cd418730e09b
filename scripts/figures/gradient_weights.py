"""The paper's motivating figure: gradient weight −∂ℓ/∂(βh) against βh.

DPO gives its largest weights to pairs the model most confidently contradicts (βh ≪ 0) — exactly
the pairs whose labels are most likely flipped — while ROPO (α > 2) caps the weight at 1 and
lowers it for those pairs. Reads ``loss_table.json`` from a run directory written by
``scripts/loss_table.py``; does not import JAX.

    python scripts/figures/gradient_weights.py --run_dir=runs/losses \
        --out=figures/gradient_weights.png
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import figure_io
import matplotlib.pyplot as plt

STYLE = {
    "DPO": dict(color="black", lw=2.2),
    "cDPO (ε=0.1)": dict(color="tab:gray", lw=1.6, ls="--"),
    "rDPO (ε=0.2)": dict(color="tab:brown", lw=1.6, ls="-."),
    "ROPO (α=6)": dict(color="tab:cyan", lw=2.0),
    "ROPO (α=14)": dict(color="tab:blue", lw=2.2),
    "ROPO (α=30)": dict(color="navy", lw=2.0),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="runs/losses")
    parser.add_argument("--out", default="figures/gradient_weights.png")
    args = parser.parse_args()
    path = os.path.join(args.run_dir, "loss_table.json")
    if not os.path.exists(path):
        raise SystemExit(
            f"{path} not found: run `python scripts/loss_table.py --out_dir={args.run_dir}`"
        )
    with open(path) as f:
        table = json.load(f)
    grid = table["beta_margin_grid"]

    fig, ax = plt.subplots(figsize=(8.2, 4.4), dpi=150)
    for label, style in STYLE.items():
        ax.plot(grid, table["curves"][label]["grid_weight"], label=label, **style)
    ax.axvline(0.0, color="0.8", lw=0.8, zorder=0)
    ax.axhline(1.0, color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel("βh  (implicit reward margin of the labelled pair)")
    ax.set_ylabel("gradient weight  −∂ℓ/∂(βh)")
    ax.set_title("ROPO caps the weight at 1 and down-weights contradicted pairs", fontsize=10)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_ylim(-0.15, 1.42)
    ax.annotate(
        "likely flipped labels\n(model disagrees strongly)",
        xy=(-7.5, 0.27),
        xytext=(-9.6, 0.55),
        fontsize=8,
        arrowprops=dict(arrowstyle="->", color="0.3"),
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.25)
    figure_io.save(fig, args.out)


if __name__ == "__main__":
    main()
