"""The ROPO ablations of ``experiments/sweeps/ablations.py`` (30 % symmetric noise unless the
noise model varies): α, ρ, which components matter (loss alone → + filtering → + rejection
sampling, against DPO), and DPO vs ROPO-full under every noise model. Bars and points are means
over seeds, error bars sample std, dots single seeds. Reads run directories only.

    python scripts/figures/ablations.py --root=runs/ablations --out=figures/ablations.png
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import figure_io
import matplotlib.pyplot as plt

from ropo_jax.evaluation import run_results

COMPONENTS = (
    ("DPO", "dpo"),
    ("ROPO loss", "no_filter"),
    ("+ filtering", "no_rs"),
    ("+ rej. sampling\n(ROPO-full)", "alpha14"),
)
NOISE_MODELS = ("bradley_terry", "length_biased", "source_biased")


def _stats(groups, variant, get):
    xs = run_results.values(groups.get(variant, []), get)
    mean, std = run_results.mean_std(xs)
    return mean, std, xs


def _sweep_panel(ax, groups, variants, xs, xlabel):
    for label, get in (
        ("gold win rate", run_results.win_rate),
        ("noise AUROC", run_results.noise_auroc),
        ("noise F1 of the dropped ρ", lambda r: r["noise_identification"].get("f1")),
    ):
        stats = [_stats(groups, v, get) for v in variants]
        line = ax.errorbar(
            xs,
            [m for m, _, _ in stats],
            yerr=[s for _, s, _ in stats],
            marker="o",
            ms=3,
            capsize=2,
            label=label,
        )
        for x, (_, _, seeds) in zip(xs, stats, strict=True):
            ax.scatter([x] * len(seeds), seeds, s=5, alpha=0.35, color=line[0].get_color())
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def _bars(ax, groups, labels_variants, get, offset=0.0, width=0.8, label=None):
    for i, (_, variant) in enumerate(labels_variants):
        mean, std, seeds = _stats(groups, variant, get)
        ax.bar(
            i + offset,
            mean,
            width,
            yerr=std,
            capsize=2,
            color=f"C{0 if offset <= 0 else 1}",
            alpha=0.75,
            label=label if i == 0 else None,
        )
        ax.scatter([i + offset] * len(seeds), seeds, s=5, color="k", alpha=0.5, zorder=3)
    ax.set_xticks(range(len(labels_variants)), [lbl for lbl, _ in labels_variants], fontsize=7)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", default="figures/ablations.png")
    args = parser.parse_args()
    runs = run_results.load_runs(args.root)
    if not runs:
        raise SystemExit(f"no run directory with results.json under {args.root}")
    groups = run_results.group_by(runs, run_results.run_prefix)
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8), dpi=150)

    alphas = (2, 6, 14, 30)
    _sweep_panel(axes[0], groups, [f"alpha{a}" for a in alphas], alphas, "α (ROPO-full, ρ = 0.2)")
    axes[0].set_xscale("log")
    axes[0].set_xticks(alphas, [str(a) for a in alphas])
    axes[0].minorticks_off()  # log-axis minor labels would overprint the α ticks
    axes[0].legend(fontsize=7, frameon=False)
    axes[0].set_title("α", fontsize=9)

    rhos = (0.1, 0.2, 0.3, 0.4)
    rho_variants = ["rho0.1", "alpha14", "rho0.3", "rho0.4"]  # ρ = 0.2 is the default run
    _sweep_panel(axes[1], groups, rho_variants, rhos, "ρ, the dropped fraction (α = 14)")
    axes[1].set_title("ρ", fontsize=9)

    _bars(axes[2], groups, COMPONENTS, run_results.win_rate)
    axes[2].set_ylabel("gold win rate vs SFT")
    axes[2].set_title("components (symmetric 0.3)", fontsize=9)
    low = min(run_results.values(runs, run_results.win_rate))
    axes[2].set_ylim(max(0.0, low - 0.05), None)

    noise_pairs = [(kind.replace("_", "\n"), f"{kind}_dpo") for kind in NOISE_MODELS]
    _bars(axes[3], groups, noise_pairs, run_results.win_rate, -0.2, 0.4, "DPO")
    noise_pairs = [(kind.replace("_", "\n"), f"{kind}_ropo_full") for kind in NOISE_MODELS]
    _bars(axes[3], groups, noise_pairs, run_results.win_rate, 0.2, 0.4, "ROPO-full")
    axes[3].set_ylim(max(0.0, low - 0.05), None)
    axes[3].set_title("noise models (docs/method.md §4.2)", fontsize=9)
    axes[3].legend(fontsize=7, frameon=False)
    figure_io.save(fig, args.out)


if __name__ == "__main__":
    main()
