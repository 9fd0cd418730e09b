"""How good are the rejection-sampled pairs? On the synthetic benchmark the gold reward can grade
them: for each run directory, the fraction of RS pairs (``round_K/samples.jsonl``) whose chosen
response has the higher gold reward, and the mean response lengths of each side; over all runs,
the agreement per quartile of the pair's ranking-score margin (does a confident pair agree more
often? the question behind ``ropo.rs.min_margin``). Reads run directories only (the run's own
tokenizer and config). Runs since RS pair quality was recorded also carry it in
``results.json["rounds"][i]["rejection_sampling"]``.

    python scripts/rs_pair_quality.py --runs='runs/noise_rates/ropo_full_noise0.2_seed*'
"""

import argparse
import glob
import json
import os

import numpy as np
from tokenizers import Tokenizer

from ropo_jax.synthetic import task


def _run_quality(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    task_config = task.TaskConfig(**config["synthetic"]["task"])
    tokenizer = Tokenizer.from_file(os.path.join(run_dir, "data", "tokenizer", "tokenizer.json"))
    prompts = {}
    with open(os.path.join(run_dir, "data", "raw", "train.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            prompts[row["id"]] = row["prompt"]
    specials = {tokenizer.token_to_id(t) for t in task.SPECIAL_TOKENS}
    agree, lengths, margins = [], [], []
    for path in sorted(glob.glob(os.path.join(run_dir, "round_*", "samples.jsonl"))):
        with open(path) as f:
            for line in f:
                sample = json.loads(line)
                prompt = prompts[sample["source_id"]]
                words = {
                    side: tokenizer.decode(
                        [t for t in sample[f"{side}_tokens"] if t not in specials]
                    )
                    for side in ("chosen", "rejected")
                }
                gold = {s: task.gold_reward(task_config, prompt, w) for s, w in words.items()}
                agree.append(gold["chosen"] > gold["rejected"])
                # Older runs did not record the ranking-score margin; their summed margin is it.
                margins.append(sample.get("score_margin", sample["margin"]))
                lengths.append([len(words["chosen"].split()), len(words["rejected"].split())])
    if not agree:
        return {"run": run_dir, "rs_pairs": 0}
    lengths = np.asarray(lengths, np.float64)
    return {
        "run": run_dir,
        "rs_pairs": len(agree),
        "gold_agreement": float(np.mean(agree)),
        "chosen_words_mean": float(lengths[:, 0].mean()),
        "rejected_words_mean": float(lengths[:, 1].mean()),
        "_agree": agree,
        "_margins": margins,
    }


def by_margin_quartile(rows: list[dict]) -> list[float]:
    """Gold agreement of the RS pairs of ``rows`` in each quartile of their margin, ranked
    within each run (margins of different runs are not on one scale)."""
    quartile, agree = [], []
    for row in rows:
        ranks = np.argsort(np.argsort(row["_margins"])) / max(len(row["_margins"]), 1)
        quartile.extend(np.minimum((ranks * 4).astype(int), 3))
        agree.extend(row["_agree"])
    quartile, agree = np.asarray(quartile), np.asarray(agree, float)
    return [float(agree[quartile == q].mean()) for q in range(4)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="a glob of run directories")
    args = parser.parse_args()
    run_dirs = sorted(glob.glob(args.runs))
    if not run_dirs:
        raise SystemExit(f"no run directory matches {args.runs}")
    rows = [_run_quality(d) for d in run_dirs]
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("_")}))
    scored = [r for r in rows if r["rs_pairs"]]
    if scored:
        total = sum(r["rs_pairs"] for r in scored)
        agreement = sum(r["gold_agreement"] * r["rs_pairs"] for r in scored) / total
        print(
            f"{len(scored)} runs, {total} RS pairs: chosen has the higher gold reward in "
            f"{agreement:.1%}"
        )
        quartiles = " / ".join(f"{a:.1%}" for a in by_margin_quartile(scored))
        print(f"by margin quartile within each run (lowest → highest): {quartiles}")


if __name__ == "__main__":
    main()
