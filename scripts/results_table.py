"""Prints a markdown table of the runs under a root directory (their ``results.json``: run
directories, or the committed run records of ``results/``) and writes it to ROOT/results.md.
``--seeds=mean`` folds runs that differ only in their ``_seedN`` suffix into one row of mean ±
sample std (``--spread=stderr``: ± standard error) over n seeds; ``--match=REGEX`` keeps the runs
whose name it matches (``re.search``); ``--columns=NAME,NAME`` keeps those columns (the headers
below, and the paired ones by their short names: ``win rate``, ``gold reward``, ``gold @ pick``).

    python scripts/results_table.py --root=runs/quickstart
    python scripts/results_table.py --root=results/regime --seeds=mean --baseline=dpo

**Generated blocks.** A Markdown file (docs/RESULTS.md) marks each table made from records with
the arguments that make it:

    <!-- results_table --root=results/regime --match=noise0.4 --seeds=mean --baseline=dpo -->
    | ... the table ... |
    <!-- /results_table -->

``--check=FILE`` re-renders every marked block from the records and exits 1 with a diff when one
differs (a test runs it on docs/RESULTS.md); ``--write=FILE`` rewrites the blocks in place.
"""

import argparse
import difflib
import glob
import os
import re
import shlex
import sys

from ropo_jax.evaluation import run_results

COLUMNS = (
    ("gold win rate vs SFT", run_results.win_rate),
    ("gold reward", run_results.gold_reward),
    ("clean held-out acc.", run_results.clean_accuracy),
    ("noise AUROC", run_results.noise_auroc),
    ("noise F1 (top-ρ)", lambda r: r["noise_identification"].get("f1")),
    # At the count the method sets aside: ρN for ROPO (and for the methods that do not filter,
    # ranked by -h), ⌊N·ε̂⌋ for Hölder + removal.
    ("noise precision (flagged)", lambda r: r["noise_identification"].get("precision")),
    ("flipped fit (epoch 1)", run_results.flipped_fit_first_epoch),
    ("flipped fit (end)", run_results.flipped_fit),
    ("KL (end)", run_results.final_kl),
    ("gold reward @ noisy-val pick", run_results.selected_gold_reward),
    ("RS gold agreement", run_results.rs_gold_agreement),
    ("RS length gap", run_results.rs_length_gap),
    ("ρ estimate", run_results.estimated_filter_ratio),
    ("ε̂ Hölder (round 1)", run_results.holder_estimate_round1),
    ("ε̂ Hölder (end)", run_results.holder_estimate_end),
    ("ρ̂ tail ratio (round 1)", run_results.tail_ratio_estimate_round1),
    ("realised flip rate", run_results.realised_noise_rate),
)
# Columns without any value in the runs (e.g. dynamics of older runs) are left out; these only
# appear where --columns names them (the older tables keep their shape).
ON_REQUEST = frozenset({"noise precision (flagged)"})
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


def _select(columns, names: list[str] | None):
    """``columns`` restricted to ``names`` (in the table's order); all but ON_REQUEST when None."""
    if names is None:
        return tuple((n, get) for n, get in columns if n not in ON_REQUEST)
    return tuple((n, get) for n, get in columns if n in names)


def per_run_table(runs: list[dict], names: list[str] | None = None) -> str:
    columns = _present(_select(COLUMNS, names), runs)
    header = ["run", "method", "noise", "seed", *(c for c, _ in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(runs, key=lambda r: _in_method_order(r["run"], r["method"])):
        cells = [r["run"], r["method"], _noise(r), r["seed"], *(f(r) for _, f in columns)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def seed_mean_table(
    runs: list[dict], baseline: str = "", spread: str = "std", names: list[str] | None = None
) -> str:
    columns = _present(_select(COLUMNS, names), runs)
    paired_columns = _present(_select(PAIRED, names), runs)
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
            if spread == "stderr":
                std = std / len(xs) ** 0.5 if xs else std
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


BLOCK = re.compile(
    r"^(?P<open><!-- results_table (?P<args>[^\n]*?) -->\n)(?P<body>.*?)"
    r"^(?P<close><!-- /results_table -->)",
    re.S | re.M,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="run directories or run records (results/NAME)")
    parser.add_argument("--seeds", choices=("each", "mean"), default="each")
    parser.add_argument("--spread", choices=("std", "stderr"), default="std")
    parser.add_argument("--match", default="", help="a regex: only the runs whose name it matches")
    parser.add_argument("--columns", help="comma-separated column names to keep (default: all)")
    parser.add_argument(
        "--baseline",
        default="",
        help="with --seeds=mean: add each variant's difference to this method's run of the same "
        "noise and seed (mean and 95%% interval of the paired differences, and in how many seeds "
        "it is > 0)",
    )
    parser.add_argument("--check", help="a Markdown file: exit 1 if a marked block differs")
    parser.add_argument("--write", help="a Markdown file: re-render its marked blocks in place")
    return parser


def render(args: argparse.Namespace) -> str:
    runs = [r for r in run_results.load_runs(args.root) if re.search(args.match, r["run"])]
    if not runs:
        raise SystemExit(f"no run with results.json under {args.root} (match {args.match!r})")
    names = None
    if args.columns:
        names = [n.strip() for n in args.columns.split(",")]
        known = {n for n, _ in COLUMNS + PAIRED}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"--columns: unknown {unknown}; choose from {sorted(known)}")
    if args.seeds == "mean":
        return seed_mean_table(runs, args.baseline, args.spread, names)
    return per_run_table(runs, names)


def render_blocks(path: str) -> tuple[str, str]:
    """(the file's text, the text with every marked block re-rendered from its records)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()

    def block(match: re.Match) -> str:
        args = _parser().parse_args(shlex.split(match["args"]))
        if not args.root:
            raise SystemExit(f"{path}: a results_table block names no --root: {match['args']}")
        return match["open"] + render(args) + "\n" + match["close"]

    return text, BLOCK.sub(block, text)


def check(path: str) -> int:
    text, rendered = render_blocks(path)
    count = len(BLOCK.findall(text))
    if text == rendered:
        print(f"{path}: {count} generated blocks match their records")
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            rendered.splitlines(keepends=True),
            fromfile=f"{path} (as written)",
            tofile=f"{path} (from the records)",
        )
    )
    print(
        f"{path}: generated blocks differ from their records; "
        f"python scripts/results_table.py --write={path} re-renders them"
    )
    return 1


def main():
    args = _parser().parse_args()
    if args.check:
        raise SystemExit(check(args.check))
    if args.write:
        text, rendered = render_blocks(args.write)
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(rendered)
        print(f"{args.write}: {len(BLOCK.findall(text))} generated blocks written")
        return
    if not args.root:
        raise SystemExit("give --root (or --check/--write with a Markdown file)")
    text = render(args)
    print(text)
    # Run directories get the table beside them; committed records (results/) stay records only.
    if not glob.glob(os.path.join(args.root, "*", "provenance.json")):
        with open(os.path.join(args.root, "results.md"), "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
