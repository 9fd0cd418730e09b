"""Supervised fine-tuning only (the starting point of every preference run).

    python -m ropo_jax.main --config=experiments/sft.py --workdir=runs/sft \
        --config.data.sft=PREPARED_SFT_DIR --config.data.train=PREPARED_PAIRS_DIR \
        --config.model.hf_path=MODEL_DIR

``:smoke`` runs it on the synthetic task at toy size. The fine-tuned model is the last
checkpoint in ``WORKDIR/checkpoints/sft``; the preference pairs (``data.train``) are only scored
(the SFT model's implicit-reward accuracy and noise identification).
"""

import ml_collections

from ropo_jax.configs import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base_config()
    c.method = "sft"
    c.sft.update(epochs=2.0, batch_size=64, learning_rate=1e-5, warmup_ratio=0.1)
    if arg == "smoke":
        c.task = "synthetic"
        c.synthetic = ml_collections.ConfigDict(
            dict(
                data_seed=0,
                task=dict(num_topics=4, words_per_topic=6, min_length=3, max_length=8),
                data=dict(num_sft=128, num_train_pairs=64, num_test_pairs=32, num_eval_prompts=16),
            )
        )
        c.sft.update(epochs=1.0, batch_size=32, learning_rate=3e-3, warmup_ratio=0.0, log_every=2)
        c.eval.update(max_new_tokens=12, generate_batch_size=16)
    elif arg:
        raise ValueError(f"experiments/sft.py takes no argument or ':smoke', got {arg!r}")
    return c
