"""How good are the rejection-sampled pairs? On the synthetic benchmark the gold reward can grade
them: for each run directory, the fraction of RS pairs (``round_K/samples.jsonl``) whose chosen
response has the higher gold reward, and the mean response lengths of each side. Reads run
directories only (the run's own tokenizer and config).

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
    agree, lengths = [], []
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
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="a glob of run directories")
    args = parser.parse_args()
    run_dirs = sorted(glob.glob(args.runs))
    if not run_dirs:
        raise SystemExit(f"no run directory matches {args.runs}")
    rows = [_run_quality(d) for d in run_dirs]
    for row in rows:
        print(json.dumps(row))
    scored = [r for r in rows if r["rs_pairs"]]
    if scored:
        total = sum(r["rs_pairs"] for r in scored)
        agreement = sum(r["gold_agreement"] * r["rs_pairs"] for r in scored) / total
        print(
            f"{len(scored)} runs, {total} RS pairs: chosen has the higher gold reward in "
            f"{agreement:.1%}"
        )


if __name__ == "__main__":
    main()
