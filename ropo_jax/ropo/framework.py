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
from ropo_jax.errors import ConfigValueError
from ropo_jax.losses import filtering
from ropo_jax.ropo import rejection_sampling
from ropo_jax.ropo.rejection_sampling import rejection_sample as rejection_sample  # re-exported
from ropo_jax.training import loop as trainer
from ropo_jax.training import step as train

FILTER_MODES = ("recompute", "cumulative")
GRANULARITIES = ("dataset", "batch")


@dataclasses.dataclass(frozen=True)
class RopoConfig:
    """The options of docs/method.md §3.7 (config keys ``ropo.*``)."""

    num_rounds: int = 1
    # ρ, or "auto": estimated from the margins at the first w-step (ropo_jax/ropo/noise_rate.py).
    filter_ratio: float | str = 0.2
    filter_start_round: int = 2  # first round trained on filtered weights
    filter_mode: str = "recompute"
    filter_granularity: str = "dataset"
    filtering: bool = True  # off for the baselines
    rs_enabled: bool = False
    rs_num_candidates: int = 4
    rs_temperature: float = 0.9
    rs_top_p: float = 1.0
    rs_max_new_tokens: int = 64  # 0: the longest response of the training data
    rs_include_original: bool = False
    rs_selection: str = "max_margin"
    rs_ranking: str = "sum"  # "sum": r̂; "mean": r̂ per response token
    rs_min_margin: float = 0.0  # a new pair needs a ranking-score margin above this
    # False: one optimizer over all rounds (Adam moments and the learning-rate schedule carry
    # on from round to round, warmup only at the start); True: a fresh optimizer, warmup and
    # decay in every round.
    restart_optimizer: bool = False

    def __post_init__(self):
        if self.num_rounds < 1:
            raise ConfigValueError(f"ropo.num_rounds={self.num_rounds} must be >= 1")
        if self.filter_ratio != "auto" and not 0.0 <= self.filter_ratio < 1.0:
            raise ConfigValueError(
                f"ropo.filter_ratio={self.filter_ratio!r} must lie in [0, 1) or be 'auto'"
            )
        if self.filter_mode not in FILTER_MODES:
            raise ConfigValueError(
                f"ropo.filter_mode={self.filter_mode!r} is not one of {FILTER_MODES}"
            )
        if self.filter_granularity not in GRANULARITIES:
            raise ConfigValueError(
                f"ropo.filter_granularity={self.filter_granularity!r} is not one of {GRANULARITIES}"
            )
        selections = rejection_sampling.SELECTIONS
        if self.rs_selection not in selections:
            raise ConfigValueError(
                f"ropo.rs.selection={self.rs_selection!r} is not one of {selections}"
            )
        if self.rs_selection != "max_margin" and not self.rs_include_original:
            raise ConfigValueError(
                f"ropo.rs.selection={self.rs_selection!r} needs rs.include_original=True"
            )
        if self.rs_ranking not in rejection_sampling.RANKINGS:
            raise ConfigValueError(
                f"ropo.rs.ranking={self.rs_ranking!r} is not one of {rejection_sampling.RANKINGS}"
            )
        if self.rs_min_margin < 0:
            raise ConfigValueError(f"ropo.rs.min_margin={self.rs_min_margin} must be >= 0")
        if self.rs_num_candidates < 2:
            raise ConfigValueError(f"ropo.rs.num_candidates={self.rs_num_candidates} must be >= 2")


def concat(a: PreferenceData, b: PreferenceData | None) -> PreferenceData:
    """Examples of ``a`` then ``b`` (same tokenizer), flip masks included."""
    if b is None or len(b) == 0:
        return a
    offsets = np.concatenate([a.offsets, b.offsets + len(a.tokens)])
    return dataclasses.replace(
        a,
        ids=list(a.ids) + list(b.ids),
        tokens=np.concatenate([np.asarray(a.tokens), np.asarray(b.tokens)]),
        offsets=offsets,
        lengths=np.concatenate([a.lengths, b.lengths]),
        original_lengths=np.concatenate([a.original_lengths, b.original_lengths]),
        metadata=list(a.metadata) + list(b.metadata),
        is_flipped=np.concatenate([a.is_flipped, b.is_flipped]),
    )


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
