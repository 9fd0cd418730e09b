"""Prints a markdown table of the runs under a root directory (their ``results.json``) and writes
it to ROOT/results.md. Reads run directories only.

    python scripts/results_table.py --root=runs/quickstart
"""

import argparse
import json
import os

COLUMNS = (
    ("method", lambda r: r["method"]),
    ("noise", lambda r: f"{r['noise']['kind']} {r['noise']['rate']:g}"),
    ("seed", lambda r: r["seed"]),
    ("gold win rate vs SFT", lambda r: r["eval"].get("gold_win_rate_vs_sft")),
    ("gold reward", lambda r: r["eval"].get("gold_reward_mean")),
    ("clean held-out acc.", lambda r: r["eval"].get("pref_accuracy_clean")),
    ("noise AUROC", lambda r: r["noise_identification"].get("auroc")),
    ("noise F1 (top-ρ)", lambda r: r["noise_identification"].get("f1")),
)


def _cell(value):
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def load_runs(root: str) -> list[dict]:
    runs = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "results.json")
        if os.path.exists(path):
            with open(path) as f:
                runs.append({"run": name, **json.load(f)})
    return runs


def table(runs: list[dict]) -> str:
    header = "| run | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for r in runs:
        lines.append(f"| {r['run']} | " + " | ".join(_cell(f(r)) for _, f in COLUMNS) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    runs = load_runs(args.root)
    if not runs:
        raise SystemExit(f"no run directory with results.json under {args.root}")
    text = table(runs)
    print(text)
    with open(os.path.join(args.root, "results.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
