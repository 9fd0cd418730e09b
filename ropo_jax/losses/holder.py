"""Hölder-DPO's contamination estimate and mislabel ranking (docs/method.md §2.7).

After training with ``holder_dpo``, σ(βh) of each training pair under the trained policy
estimates how likely its label is clean. From those values this module estimates the fraction of
contaminated (mislabelled) pairs, ε̂, and flags the ⌊N·ε̂⌋ least likely ones. Both run once on a
data set's margins, outside ``jit``, in float64 NumPy.

The estimator is a reconstruction from Lemmas 3–4 of Fujisawa, Adachi & Osborne (2025) and
their worked example (the paper's Eq. 27 did not render in our source): with σᵢ = σ(βhᵢ),

    ξ̂ = (1/N·Σσᵢ) · Σσᵢ^γ / Σσᵢ^(1+γ),      ε̂ = max(0, 1 − ξ̂),

which gives ξ̂ = (N−M)/N exactly when M pairs have σ = 0 and the rest σ = 1.

Shape key: N pairs (a data set).
"""

from __future__ import annotations

import math

import numpy as np

from ropo_jax.losses.pairwise import check_hyperparam


def _log_sigmoid(z_N: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z_N)


def _logsumexp(x_N: np.ndarray) -> float:
    peak = float(np.max(x_N))
    return peak + math.log(float(np.sum(np.exp(x_N - peak))))


def _scaled_margins(margin_N, beta, gamma) -> np.ndarray:
    """β·h in float64, after the checks both public functions share."""
    check_hyperparam("beta", beta)
    check_hyperparam("holder_gamma", gamma)
    margin_N = np.asarray(margin_N, np.float64)
    if margin_N.ndim != 1:
        raise ValueError(
            f"margin_N must be one-dimensional (one margin per pair), got shape {margin_N.shape}"
        )
    if margin_N.size == 0:
        raise ValueError("holder contamination needs at least one pair's margin, got none")
    if not np.all(np.isfinite(margin_N)):
        raise ValueError("holder contamination needs finite margins; got NaN or inf")
    return float(beta) * margin_N


def holder_contamination(margin_N, *, beta, gamma) -> float:
    """ε̂ = max(0, 1 − ξ̂), ξ̂ = (1/N·Σσᵢ)·Σσᵢ^γ / Σσᵢ^(1+γ), σᵢ = σ(β·hᵢ) (docs/method.md §2.7).

    ``margin_N`` are the N training pairs' margins h under the trained policy; ``beta`` and
    ``gamma`` are the knobs the policy was trained with (the config's ``loss.beta`` and
    ``loss.holder_gamma``). The
    three sums are taken as log-sum-exps of log σᵢ, so margins whose σ underflows to 0 (or
    rounds to 1) still give the limit values, and nothing is divided by zero. ξ̂ ≤ 1 always
    (Chebyshev's sum inequality: σ and σ^γ are similarly ordered), with equality exactly when
    every σᵢ is the same; the max(0, ·) only absorbs rounding. Raises ValueError for no margins,
    non-finite margins or invalid knobs.
    """
    log_sigma_N = _log_sigmoid(_scaled_margins(margin_N, beta, gamma))
    gamma = float(gamma)
    log_xi = (
        _logsumexp(log_sigma_N)
        - math.log(log_sigma_N.size)
        + _logsumexp(gamma * log_sigma_N)
        - _logsumexp((1.0 + gamma) * log_sigma_N)
    )
    return max(0.0, 1.0 - math.exp(log_xi))


def holder_flagged(margin_N, *, beta, gamma) -> np.ndarray:
    """Boolean [N] mask of the ⌊N·ε̂⌋ pairs with the lowest σ(β·hᵢ): the likely mislabels
    (docs/method.md §2.7).

    Pairs are ranked by β·hᵢ, which orders σ(β·hᵢ) exactly (σ is strictly increasing) without
    the ties σ's rounding to 0 or 1 would create; equal margins go to the earlier index (a
    stable sort). The count is ⌊N·ε̂ + 1e-6⌋, so an exact count (ε̂ = 3/10 of 10 pairs) is not
    lost to rounding, as in the w-step (``filtering.num_discarded``).
    """
    z_N = _scaled_margins(margin_N, beta, gamma)
    epsilon = holder_contamination(margin_N, beta=beta, gamma=gamma)
    count = min(math.floor(z_N.size * epsilon + 1e-6), z_N.size)
    flagged_N = np.zeros(z_N.size, bool)
    flagged_N[np.argsort(z_N, kind="stable")[:count]] = True
    return flagged_N
