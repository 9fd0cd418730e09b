"""The ROPO framework's options (docs/method.md §3.7; config keys ``ropo.*``), checked when
built. A module of its own so that the framework's pieces (``framework``, ``rejection_sampling``,
``rounds``) all depend on it and not on each other.
"""

from __future__ import annotations

import dataclasses
import numbers

from ropo_jax.errors import ConfigValueError

SELECTIONS = ("max_margin", "best_vs_worst_original", "reorient_original")
RANKINGS = ("sum", "mean")
FILTER_MODES = ("recompute", "cumulative")
GRANULARITIES = ("dataset", "batch")
# ρ estimated during the run instead of set (docs/ropo.md "Estimating ρ"): "auto" from the tail
# ratio of the margins early in round 1 (``noise_rate.estimate_flip_rate``), "holder" from
# Hölder-DPO's contamination estimate ε̂ of the margins at the end of round 1
# (``noise_rate.estimate_holder_rate``). Either is used from the first w-step on.
ESTIMATED_RATIOS = ("auto", "holder")
# The framework methods (docs/method.md §3.6), each → the loss its rounds train with. Both filter
# (the w-step); only ROPO rejection-samples new pairs (Hölder-DPO has no such step).
FRAMEWORK_METHODS = {"ropo_full": "ropo", "holder_full": "holder_dpo"}
RS_METHODS = ("ropo_full",)
# What a framework method requires of ropo.filter_ratio (validated; absent: any value).
FRAMEWORK_FILTER_RATIO = {"holder_full": "holder"}


def method_loss(method: str) -> str:
    """The loss ``method`` trains with: its own name, or a framework method's loss."""
    return FRAMEWORK_METHODS.get(method, method)


@dataclasses.dataclass(frozen=True)
class RopoConfig:
    """The options of docs/method.md §3.7 (config keys ``ropo.*``)."""

    num_rounds: int = 1
    # ρ, or "auto"/"holder": estimated from the margins in round 1 (ESTIMATED_RATIOS above).
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
        ratio = self.filter_ratio
        if ratio not in ESTIMATED_RATIOS and not (
            isinstance(ratio, numbers.Real) and 0.0 <= ratio < 1.0
        ):
            raise ConfigValueError(
                f"ropo.filter_ratio={self.filter_ratio!r} must lie in [0, 1) or be 'auto' or "
                "'holder'"
            )
        if self.filter_mode not in FILTER_MODES:
            raise ConfigValueError(
                f"ropo.filter_mode={self.filter_mode!r} is not one of {FILTER_MODES}"
            )
        if self.filter_granularity not in GRANULARITIES:
            raise ConfigValueError(
                f"ropo.filter_granularity={self.filter_granularity!r} is not one of {GRANULARITIES}"
            )
        selections = SELECTIONS
        if self.rs_selection not in selections:
            raise ConfigValueError(
                f"ropo.rs.selection={self.rs_selection!r} is not one of {selections}"
            )
        if self.rs_selection != "max_margin" and not self.rs_include_original:
            raise ConfigValueError(
                f"ropo.rs.selection={self.rs_selection!r} needs rs.include_original=True"
            )
        if self.rs_ranking not in RANKINGS:
            raise ConfigValueError(f"ropo.rs.ranking={self.rs_ranking!r} is not one of {RANKINGS}")
        if self.rs_min_margin < 0:
            raise ConfigValueError(f"ropo.rs.min_margin={self.rs_min_margin} must be >= 0")
        if self.rs_num_candidates < 2:
            raise ConfigValueError(f"ropo.rs.num_candidates={self.rs_num_candidates} must be >= 2")
