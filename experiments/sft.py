"""Supervised fine-tuning only (the starting point of every preference run).

    python -m ropo_jax.main --config=experiments/sft.py --workdir=runs/sft \
        --config.data.sft=PREPARED_SFT_DIR --config.data.train=PREPARED_PAIRS_DIR \
        --config.model.hf_path=MODEL_DIR

``:smoke`` runs it on the synthetic task at the toy size of experiments/synthetic.py's ``smoke``
preset (the one every smoke run shares). The fine-tuned model is the last
checkpoint in ``WORKDIR/checkpoints/sft``; the preference pairs (``data.train``) are only scored
(the SFT model's implicit-reward accuracy and noise identification).
"""

import importlib.util
import os

import ml_collections

from ropo_jax.config.defaults import base_config


def _synthetic_smoke() -> ml_collections.ConfigDict:
    """experiments/synthetic.py's ``smoke`` config: the toy size every smoke run shares."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic.py")
    spec = importlib.util.spec_from_file_location("experiments_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base_config()
    c.method = "sft"
    c.sft.update(epochs=2.0, batch_size=64, learning_rate=1e-5, warmup_ratio=0.1)
    if arg == "smoke":
        smoke = _synthetic_smoke()
        c.task = "synthetic"
        c.synthetic = smoke.synthetic
        c.sft.update(epochs=1.0, batch_size=32, learning_rate=3e-3, warmup_ratio=0.0, log_every=2)
        c.eval.update(smoke.eval)
    elif arg:
        raise ValueError(f"experiments/sft.py takes no argument or ':smoke', got {arg!r}")
    return c
