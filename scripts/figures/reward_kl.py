"""The reward–KL frontier: gold reward of samples against KL(π‖π_ref) over the checkpoints of
preference training (every epoch), one line per method (mean over seeds at each epoch), a
square at the end of training and a star at the epoch a user without clean labels would keep
(best noisy held-out accuracy). It separates the two ways a policy can lose gold reward: wrong
preferences (a lower curve) and drift (moving right along it). Reads run directories only.

    python scripts/figures/reward_kl.py --root=runs/regime --rate=0.4 \\
        --out=docs/figures/reward_kl.png
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import figure_io
import matplotlib.pyplot as plt
import numpy as np

from ropo_jax.evaluation import run_results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument(
        "--variants", default="", help="comma-separated run variants (default: plain methods)"
    )
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--out", default="figures/reward_kl.png")
    args = parser.parse_args()
    runs = figure_io.runs_with_dynamics(args.root, args.rate, args.variants)
    by_method = run_results.group_by(runs, figure_io.variant)
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=150)
    print("| method | seeds | end of training | noisy-validation pick | best epoch's gold |")
    for method in sorted(by_method, key=lambda m: (run_results.method_rank(m), m)):
        group = by_method[method]
        length = min(len(r["dynamics"]) for r in group)
        kl = np.array([[row["kl"] for row in r["dynamics"][:length]] for r in group], float)
        gold = np.array(
            [[row["gold_reward_mean"] for row in r["dynamics"][:length]] for r in group], float
        )
        color = f"C{run_results.method_rank(method) % 10}"
        ax.plot(kl.mean(0), gold.mean(0), marker="o", ms=2.5, lw=1.2, color=color, label=method)
        ax.scatter(kl.mean(0)[-1], gold.mean(0)[-1], marker="s", s=30, color=color)
        picks = [r["selected_by_noisy_validation"] for r in group]
        picks = [p for p in picks if p]
        pick = "–"
        if picks:
            pick_kl = np.mean([p["kl"] for p in picks])
            pick_gold = np.mean([p["gold_reward_mean"] for p in picks])
            pick = f"KL {pick_kl:.2f}, gold {pick_gold:+.3f}"
            ax.scatter(
                pick_kl,
                pick_gold,
                marker="*",
                s=90,
                color=color,
                edgecolor="black",
                linewidth=0.5,
            )
        print(
            f"| {method} | {len(group)} | KL {kl.mean(0)[-1]:.2f}, gold {gold.mean(0)[-1]:+.3f} "
            f"| {pick} | {gold.mean(0).max():+.3f} |"
        )
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("KL(π‖π_ref) of samples (nats, mean over seeds)")
    ax.set_ylabel("gold reward of samples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    name = os.path.basename(os.path.normpath(args.root))
    ax.set_title(
        f"{name}, noise {args.rate:g}: epochs (dots), end (square), noisy-val pick (star)",
        fontsize=8,
    )
    figure_io.save(fig, args.out)


if __name__ == "__main__":
    main()
