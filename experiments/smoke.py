"""Smoke run: the synthetic task at toy size, SFT then preference training, in well under a
minute on a CPU. ``--config.method`` picks the loss (default dpo), e.g. ropo or ropo_full.

    python -m ropo_jax.main --config=experiments/smoke.py --workdir=/tmp/smoke
"""

import ml_collections

from ropo_jax.configs import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = base_config()
    c.task = "synthetic"
    c.method = "dpo"
    c.synthetic = ml_collections.ConfigDict(
        dict(
            data_seed=0,
            task=dict(num_topics=4, words_per_topic=6, min_length=3, max_length=8),
            data=dict(num_sft=256, num_train_pairs=256, num_test_pairs=64, num_eval_prompts=32),
        )
    )
    c.noise.kind, c.noise.rate = "symmetric", 0.2
    c.model.preset = "tiny"
    c.sft.update(epochs=1.0, batch_size=32, learning_rate=3e-3, warmup_ratio=0.0, log_every=4)
    c.sft.checkpoint_every = 4
    c.train.update(batch_size=32, learning_rate=1e-3, warmup_ratio=0.0, log_every=4)
    c.train.checkpoint_every = 4
    c.eval.update(batch_size=64, max_new_tokens=16, generate_batch_size=32)
    # method=ropo_full: two rounds, filtering from round 2, rejection sampling for the discarded.
    c.ropo.update(num_rounds=2, epochs_per_round=1.0, filter_ratio=0.2, filter_start_round=2)
    c.ropo.rs.update(enabled=True, num_candidates=4, max_new_tokens=12)
    return c
