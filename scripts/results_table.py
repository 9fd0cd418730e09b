"""Prints a markdown table of the runs under a root directory (their ``results.json``) and writes
it to ROOT/results.md. Reads run directories only. ``--seeds=mean`` folds runs that differ only
in their ``_seedN`` suffix into one row of mean ± sample std (n seeds).

    python scripts/results_table.py --root=runs/quickstart
    python scripts/results_table.py --root=runs/noise_rates --seeds=mean --baseline=dpo
"""

import argparse
import os

from ropo_jax import run_results

COLUMNS = (
    ("gold win rate vs SFT", run_results.win_rate),
    ("gold reward", run_results.gold_reward),
    ("clean held-out acc.", run_results.clean_accuracy),
    ("noise AUROC", run_results.noise_auroc),
    ("noise F1 (top-ρ)", lambda r: r["noise_identification"].get("f1")),
)


def _cell(value):
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _noise(run):
    return f"{run['noise']['kind']} {run['noise']['rate']:g}"


def _in_method_order(name: str, method: str):
    """Sort key: methods in the figures' order (the baseline first), then by name."""
    return run_results.method_rank(method), name


def per_run_table(runs: list[dict]) -> str:
    header = ["run", "method", "noise", "seed", *(c for c, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(runs, key=lambda r: _in_method_order(r["run"], r["method"])):
        cells = [r["run"], r["method"], _noise(r), r["seed"], *(f(r) for _, f in COLUMNS)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def seed_mean_table(runs: list[dict], baseline: str = "") -> str:
    paired = [f"Δ win rate vs {baseline} (paired)", f"Δ gold reward vs {baseline} (paired)"]
    header = ["variant", "method", "noise", "seeds", *(c for c, _ in COLUMNS)]
    header += paired if baseline else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = run_results.group_by(runs, run_results.run_prefix).items()
    for variant, group in sorted(
        groups, key=lambda item: _in_method_order(item[0], item[1][0]["method"])
    ):
        cells = [variant, group[0]["method"], _noise(group[0]), str(len(group))]
        for _, get in COLUMNS:
            xs = run_results.values(group, get)
            mean, std = run_results.mean_std(xs)
            cells.append(f"{mean:.3f} ± {std:.3f}" if xs else "–")
        for get in (run_results.win_rate, run_results.gold_reward) if baseline else ():
            deltas = run_results.paired_deltas(group, runs, get, baseline_method=baseline)
            mean, std = run_results.mean_std(deltas)
            # How many seeds the variant beats the baseline in: a sign count that does not lean
            # on the spread being normal.
            better = sum(d > 0 for d in deltas)
            cell = f"{mean:+.3f} ± {std:.3f} ({better}/{len(deltas)} > 0)"
            cells.append(cell if deltas and group[0]["method"] != baseline else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--seeds", choices=("each", "mean"), default="each")
    parser.add_argument(
        "--baseline",
        default="",
        help="with --seeds=mean: add each variant's difference to this method's run of the same "
        "noise and seed (mean ± std of the paired differences, and in how many seeds it is > 0)",
    )
    args = parser.parse_args()
    runs = run_results.load_runs(args.root)
    if not runs:
        raise SystemExit(f"no run directory with results.json under {args.root}")
    by_seed = args.seeds == "mean"
    text = seed_mean_table(runs, args.baseline) if by_seed else per_run_table(runs)
    print(text)
    with open(os.path.join(args.root, "results.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
