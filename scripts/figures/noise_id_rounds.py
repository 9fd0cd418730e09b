"""Noise identification per round: AUROC of each round's per-example score for "this pair's
label was flipped" (docs/method.md §5.2), one panel per noise rate, one line per method (mean ± std
over seeds). Round r's score is the loss under the policy trained through round r. Also prints the
plotted values as a Markdown table. Reads run directories only.

    python scripts/figures/noise_id_rounds.py --root=runs/noise_rates \
        --out=figures/noise_id_rounds.png
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import figure_io
import matplotlib.pyplot as plt

from ropo_jax.evaluation import run_results


def _round_metric(run, index, metric):
    rounds = run.get("rounds") or []
    if index >= len(rounds):
        return None
    return rounds[index]["noise_identification"].get(metric)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--metric", default="auroc", choices=("auroc", "f1", "precision", "recall"))
    parser.add_argument("--out", default="figures/noise_id_rounds.png")
    parser.add_argument(
        "--variants", default="", help="comma-separated run variants (default: plain methods)"
    )
    parser.add_argument(
        "--rates", default="", help="comma-separated noise rates to plot (default: all)"
    )
    args = parser.parse_args()
    args.rates = [float(x) for x in args.rates.split(",") if x]
    runs = [
        r
        for r in figure_io.of_variants(run_results.load_runs(args.root), args.variants)
        if r["noise"]["rate"] > 0
        and r.get("rounds")
        and (not args.rates or r["noise"]["rate"] in args.rates)
    ]
    if not runs:
        raise SystemExit(f"no noisy run with per-round results under {args.root}")
    by_rate = run_results.group_by(runs, lambda r: r["noise"]["rate"])
    rates = sorted(by_rate)
    fig, axes = plt.subplots(
        1, len(rates), figsize=(3.6 * len(rates), 3.3), dpi=150, sharey=True, squeeze=False
    )
    table = [
        f"| noise rate | method | {args.metric} per round (mean ± std over seeds) |",
        "|---|---|---|",
    ]
    for ax, rate in zip(axes[0], rates, strict=True):
        for method, group in sorted(
            run_results.group_by(by_rate[rate], lambda r: r["method"]).items(),
            key=lambda item: (run_results.method_rank(item[0]), item[0]),
        ):
            num_rounds = max(len(r["rounds"]) for r in group)
            stats = [
                run_results.mean_std(
                    run_results.values(group, lambda r, i=i: _round_metric(r, i, args.metric))
                )
                for i in range(num_rounds)
            ]
            per_round = " → ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in stats)
            table.append(f"| {rate:g} | {method} | {per_round} |")
            ax.errorbar(
                range(1, num_rounds + 1),
                [m for m, _ in stats],
                yerr=[s for _, s in stats],
                marker="o",
                ms=3,
                capsize=2,
                color=f"C{run_results.method_rank(method) % 10}",  # as in noise_sweep.py
                label=method,
            )
        ax.set_title(f"symmetric noise {rate:g}", fontsize=9)
        ax.set_xlabel("round")
        ax.set_xticks(range(1, max(len(r["rounds"]) for r in by_rate[rate]) + 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"noise identification {args.metric}")
    axes[0][0].legend(fontsize=7, frameon=False)
    print("\n".join(table))
    figure_io.save(fig, args.out)


if __name__ == "__main__":
    main()
