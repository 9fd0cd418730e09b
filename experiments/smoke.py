"""Smoke run: experiments/synthetic.py's ``smoke`` preset (the synthetic task at toy size, SFT
then preference training, in well under a minute on a CPU), logged and checkpointed every 4
steps so that a run can be killed and resumed mid-epoch. ``--config.method`` picks the loss
(default dpo), e.g. ropo or ropo_full.

    python -m ropo_jax.main --config=experiments/smoke.py --workdir=/tmp/smoke

The toy size lives in one place, the ``smoke`` preset of experiments/synthetic.py: this file,
``experiments/synthetic.py:smoke`` (the sweeps' smoke variants) and ``experiments/sft.py:smoke``
all run it. This file adds only the logging and checkpoint cadence the command-line tests need.
"""

import importlib.util
import os

import ml_collections


def _synthetic():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic.py")
    spec = importlib.util.spec_from_file_location("experiments_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = _synthetic().get_config("smoke")
    # 8 steps per epoch (256 pairs, batch 32): a log record and a checkpoint every 4 steps, and
    # no warmup, so a run killed mid-epoch has a checkpoint to resume from. method=ropo_full runs
    # two rounds, filtering from round 2, rejection sampling for the discarded prompts.
    c.sft.update(warmup_ratio=0.0, log_every=4, checkpoint_every=4)
    c.train.update(warmup_ratio=0.0, log_every=4, checkpoint_every=4)
    return c
