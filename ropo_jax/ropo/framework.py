"""The ROPO framework's pieces (docs/method.md §3): its options, the w-step, the schedule
over rounds, and robustness-guided rejection sampling of new pairs for the discarded prompts
(``rejection_sample``, from ``ropo_jax.ropo.rejection_sampling``). ``ropo_jax.ropo.rounds`` runs
them round by round.

Shape key: N original examples.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from ropo_jax.data.prepared import PreferenceData
from ropo_jax.losses import filtering
from ropo_jax.ropo.options import RopoConfig
from ropo_jax.ropo.rejection_sampling import rejection_sample as rejection_sample  # re-exported
from ropo_jax.training import loop as trainer
from ropo_jax.training import step as train


def concat(a: PreferenceData, b: PreferenceData | None) -> PreferenceData:
    """Examples of ``a`` then ``b`` (same tokenizer), flip masks included."""
    return a.concat(b)


def w_step(scores_N, *, ropo: RopoConfig, previous_keep_N=None) -> np.ndarray:
    """Sample weights of the w-step (docs/method.md §3.2), as a float32 {0, 1} array."""
    previous = None if ropo.filter_mode == "recompute" else previous_keep_N
    return np.asarray(
        filtering.filter_weights(
            jnp.asarray(scores_N),
            filter_ratio=ropo.filter_ratio,
            previous_keep_N=None if previous is None else jnp.asarray(previous, bool),
        )
    )


def schedule_steps(stage: trainer.StageConfig, num_examples: int, ropo: RopoConfig) -> int:
    """The optimizer steps of all rounds, for one learning-rate schedule over them: round 1's
    exactly, later rounds' with the most rejection-sampled pairs they can hold (one per
    discarded pair), so the schedule never ends before training does."""
    micro_size = stage.batch_size // stage.micro_batches

    def steps(n):
        return math.floor(stage.epochs * (n // micro_size) / stage.micro_batches)

    most = num_examples + (math.floor(ropo.filter_ratio * num_examples) if ropo.rs_enabled else 0)
    return steps(num_examples) + (ropo.num_rounds - 1) * steps(most)


def step_config_for(template: train.StepConfig, loss: str, hyperparams: dict) -> train.StepConfig:
    return dataclasses.replace(template, loss=loss, hyperparams=tuple(sorted(hyperparams.items())))
