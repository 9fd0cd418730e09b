"""Win rate (its difference to DPO paired by seed, clean held-out accuracy, gold reward) against
the label-noise rate, one line per method, mean ± sample std over seeds with every seed a dot —
the paper's claim that DPO degrades with noise and ROPO's advantage grows with it. Reads run
directories only.

    python scripts/figures/noise_sweep.py --root=runs/noise_rates --out=figures/noise_sweep.png
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import figure_io
import matplotlib.pyplot as plt

from ropo_jax.evaluation import run_results

PANELS = (
    ("gold win rate vs SFT", run_results.win_rate),
    ("Δ gold win rate vs DPO (paired by seed)", None),
    ("gold reward (mean)", run_results.gold_reward),
    ("clean held-out preference accuracy", run_results.clean_accuracy),
)


def _method_key(method):
    return (run_results.method_rank(method), method)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="a noise-rate sweep's run root")
    parser.add_argument("--out", default="figures/noise_sweep.png")
    parser.add_argument(
        "--variants", default="", help="comma-separated run variants (default: plain methods)"
    )
    args = parser.parse_args()
    runs = figure_io.of_variants(run_results.load_runs(args.root), args.variants)
    if not runs:
        raise SystemExit(f"no run directory with results.json under {args.root}")
    by_method = run_results.group_by(runs, lambda r: r["method"])
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.4 * len(PANELS), 3.6), dpi=150)
    for ax, (label, get) in zip(axes, PANELS, strict=True):
        for i, method in enumerate(sorted(by_method, key=_method_key)):
            by_rate = run_results.group_by(by_method[method], lambda r: r["noise"]["rate"])
            rates = sorted(by_rate)

            def seed_values(rate, get=get, by_rate=by_rate):
                if get is None:  # the paired panel: differences to DPO of the same seed
                    return run_results.paired_deltas(by_rate[rate], runs, run_results.win_rate)
                return run_results.values(by_rate[rate], get)

            stats = [run_results.mean_std(seed_values(x)) for x in rates]
            # Methods are offset a little on x so that overlapping seed dots stay visible.
            shift = (i - len(by_method) / 2) * 0.003
            xs = [x + shift for x in rates]
            line = ax.errorbar(
                xs,
                [m for m, _ in stats],
                yerr=[s for _, s in stats],
                marker="o",
                ms=3,
                capsize=2,
                lw=1.2,
                color=f"C{run_results.method_rank(method) % 10}",  # the same in every figure
                label=method,
            )
            for x, rate in zip(xs, rates, strict=True):
                ys = seed_values(rate)
                ax.scatter([x] * len(ys), ys, s=5, alpha=0.35, color=line[0].get_color())
        ax.set_xlabel("symmetric label-noise rate")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, frameon=False)
    seeds = {r["seed"] for r in runs}
    sweep_name = os.path.basename(os.path.normpath(args.root))
    fig.suptitle(f"{sweep_name}: mean ± std over {len(seeds)} seeds (dots: seeds)", fontsize=8)
    figure_io.save(fig, args.out)


if __name__ == "__main__":
    main()
