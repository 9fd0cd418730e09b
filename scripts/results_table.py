"""Prints a markdown table of the runs under a root directory (their ``results.json``) and writes
it to ROOT/results.md. Reads run directories only. ``--seeds=mean`` folds runs that differ only
in their ``_seedN`` suffix into one row of mean ± sample std (n seeds).

    python scripts/results_table.py --root=runs/quickstart
    python scripts/results_table.py --root=runs/noise_rates --seeds=mean --baseline=dpo
"""

import argparse
import os

from ropo_jax.evaluation import run_results

COLUMNS = (
    ("gold win rate vs SFT", run_results.win_rate),
    ("gold reward", run_results.gold_reward),
    ("clean held-out acc.", run_results.clean_accuracy),
    ("noise AUROC", run_results.noise_auroc),
    ("noise F1 (top-ρ)", lambda r: r["noise_identification"].get("f1")),
    ("flipped fit (end)", run_results.flipped_fit),
    ("KL (end)", run_results.final_kl),
    ("gold reward @ noisy-val pick", run_results.selected_gold_reward),
    ("RS gold agreement", run_results.rs_gold_agreement),
    ("RS length gap", run_results.rs_length_gap),
    ("ρ estimate", run_results.estimated_filter_ratio),
    ("realised flip rate", run_results.realised_noise_rate),
)
# Columns without any value in the runs (e.g. dynamics of older runs) are left out.
PAIRED = (
    ("win rate", run_results.win_rate),
    ("gold reward", run_results.gold_reward),
    ("gold @ pick", run_results.selected_gold_reward),
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


def _present(columns, runs):
    return tuple((name, get) for name, get in columns if run_results.values(runs, get))


def per_run_table(runs: list[dict]) -> str:
    columns = _present(COLUMNS, runs)
    header = ["run", "method", "noise", "seed", *(c for c, _ in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(runs, key=lambda r: _in_method_order(r["run"], r["method"])):
        cells = [r["run"], r["method"], _noise(r), r["seed"], *(f(r) for _, f in columns)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def seed_mean_table(runs: list[dict], baseline: str = "") -> str:
    columns, paired_columns = _present(COLUMNS, runs), _present(PAIRED, runs)
    paired = [f"Δ {name} vs {baseline} (paired, 95% CI)" for name, _ in paired_columns]
    header = ["variant", "method", "noise", "seeds", *(c for c, _ in columns)]
    header += paired if baseline else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = run_results.group_by(runs, run_results.run_prefix).items()
    for variant, group in sorted(
        groups, key=lambda item: _in_method_order(item[0], item[1][0]["method"])
    ):
        cells = [variant, group[0]["method"], _noise(group[0]), str(len(group))]
        for _, get in columns:
            xs = run_results.values(group, get)
            mean, std = run_results.mean_std(xs)
            cells.append(f"{mean:.3f} ± {std:.3f}" if xs else "–")
        for _, get in paired_columns if baseline else ():
            deltas = run_results.paired_deltas(group, runs, get, baseline_method=baseline)
            mean, half = run_results.mean_ci(deltas)
            # How many seeds the variant beats the baseline in: a sign count that does not lean
            # on the spread being normal.
            better = sum(d > 0 for d in deltas)
            cell = f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}] ({better}/{len(deltas)})"
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
