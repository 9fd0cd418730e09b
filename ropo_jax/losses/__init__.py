"""Preference losses (docs/method.md §2), token/sequence log-probs and the loss registry.

Pure ``jax.numpy``: no Flax, no config objects. The public contract (README.md "Public API";
docs/losses.md):
``dpo_loss``, ``ropo_loss``, ``noise_aware_loss``, ``cdpo_loss``, ``rdpo_loss``, ``ipo_loss``,
``hinge_loss``, ``holder_dpo_loss`` (four [B] log-prob arrays + keyword hyper-parameters →
``(loss_B, aux)``), ``ropo_gradient_weight``, and Hölder-DPO's contamination estimate
``holder_contamination`` and mislabel ranking ``holder_flagged`` (NumPy, outside ``jit``;
docs/method.md §2.7).
"""

from ropo_jax.losses.holder import holder_contamination, holder_flagged
from ropo_jax.losses.logprobs import (
    chunked_token_logps,
    gather_completions,
    segment_logps,
    segment_token_counts,
    sequence_logps,
    token_logps,
    weighted_mean,
)
from ropo_jax.losses.pairwise import (
    HYPERPARAM_RULES,
    LCPO_BASES,
    cdpo_loss,
    dpo_loss,
    dpo_nll_loss,
    dr_dpo_loss,
    hinge_loss,
    holder_dpo_loss,
    ipo_loss,
    lcpo_e_step,
    lcpo_em_loss,
    lcpo_m_step,
    noise_aware_loss,
    pair_statistics,
    rdpo_loss,
    ropo_gradient_weight,
    ropo_loss,
    ropo_normaliser,
    simpo_loss,
)
from ropo_jax.losses.registry import (
    LOSSES,
    LossSpec,
    PairLogps,
    get_loss,
    gradient_weight,
    hyperparams_from,
    preference_loss,
    validate_hyperparams,
)

__all__ = [
    "HYPERPARAM_RULES",
    "LCPO_BASES",
    "LOSSES",
    "LossSpec",
    "PairLogps",
    "cdpo_loss",
    "chunked_token_logps",
    "dpo_loss",
    "dpo_nll_loss",
    "dr_dpo_loss",
    "gather_completions",
    "get_loss",
    "gradient_weight",
    "hinge_loss",
    "holder_contamination",
    "holder_dpo_loss",
    "holder_flagged",
    "hyperparams_from",
    "ipo_loss",
    "lcpo_e_step",
    "lcpo_em_loss",
    "lcpo_m_step",
    "noise_aware_loss",
    "pair_statistics",
    "preference_loss",
    "rdpo_loss",
    "ropo_gradient_weight",
    "ropo_loss",
    "ropo_normaliser",
    "segment_logps",
    "segment_token_counts",
    "sequence_logps",
    "simpo_loss",
    "token_logps",
    "validate_hyperparams",
    "weighted_mean",
]
