"""Padding efficiency (real tokens / total tokens) of padded, bucketed and packed batches.

A realistic length distribution without downloading data: prompt and response token counts
drawn log-normally with the medians and spreads of UltraFeedback Binarized under a Llama/Mistral
tokenizer (prompt median ≈ 100 tokens, response median ≈ 250, long right tails), truncated as
`prepare` does (prompt ≤ 512, sequence ≤ 1024). Prints one line per mode.

    python scripts/data_padding_efficiency.py [--num_pairs=4096 --batch_size=64]
"""

import argparse
import sys

import numpy as np

from ropo_jax.data.batching import padding_efficiency
from ropo_jax.data.loader import make_loader
from ropo_jax.data.prepared import PreferenceData


def realistic_data(num_pairs: int, seed: int, max_length: int, max_prompt: int) -> PreferenceData:
    rng = np.random.default_rng(seed)
    lognormal = lambda median, sigma: np.maximum(1, rng.lognormal(np.log(median), sigma, num_pairs))
    prompt = np.minimum(lognormal(100, 0.9).astype(int) + 1, max_prompt)
    chosen = np.minimum(lognormal(250, 0.7).astype(int) + 1, max_length - prompt)
    rejected = np.minimum(lognormal(220, 0.8).astype(int) + 1, max_length - prompt)
    tokens = lambda n: rng.integers(3, 32000, n, dtype=np.int32)
    return PreferenceData.from_token_lists(
        [f"ex{i}" for i in range(num_pairs)],
        [np.concatenate([[1], tokens(p - 1)]) for p in prompt],
        [tokens(c) for c in chosen],
        [tokens(r) for r in rejected],
        manifest={"bos_id": 1, "eos_id": 2, "pad_id": 0, "max_length": max_length},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_pairs", type=int, default=4096)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=1024)
    parser.add_argument("--max_prompt_length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = realistic_data(args.num_pairs, args.seed, args.max_length, args.max_prompt_length)
    lengths = data.sequence_lengths()
    sys.stdout.write(
        f"{len(data)} pairs, sequence length median {int(np.median(lengths))}, "
        f"p90 {int(np.percentile(lengths, 90))}, max {int(lengths.max())}; "
        f"batch {args.batch_size} pairs, max_length {args.max_length}\n"
    )
    boundaries = [128, 256, 384, 512, 640, 768, 896, 1024]
    for mode in ("padded", "bucketed", "packed"):
        it = make_loader(
            data,
            batch_size=args.batch_size,
            seed=args.seed,
            mode=mode,
            max_length=args.max_length,
            bucket_boundaries=boundaries,
            shard_index=0,
            shard_count=1,
        )
        batches = list(it)
        shapes = sorted({b["tokens"].shape for b in batches})
        rows = np.mean([b["tokens"].shape[0] for b in batches])
        sys.stdout.write(
            f"{mode:9s} efficiency {padding_efficiency(batches):.3f}  "
            f"({len(shapes)} distinct [R, T] shapes, mean rows per batch {rows:.1f})\n"
        )


if __name__ == "__main__":
    main()
