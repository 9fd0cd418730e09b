"""ρ without knowing the noise rate: an estimate of the flip rate from the model's own margins
(``ropo.filter_ratio="auto"``, docs/ropo.md "Estimating ρ"), and Hölder-DPO's contamination
estimate as the other estimator (``ropo.filter_ratio="holder"``, ``estimate_holder_rate``).

Under symmetric label noise a pair's margin h in training orientation is the model's margin m
on the true preference, negated when the label was flipped: with g the density of m,

    p(h) = (1 − ε)·g(h) + ε·g(−h).

Where the model is rarely confidently wrong on correctly labelled pairs (g(−x) ≈ 0 for large
x), the two tails give the flip rate: P(h < −x) / P(h > x) → ε / (1 − ε). The estimate takes x
= the median |h| (half the pairs are in the tails) and returns ε̂ = r / (1 + r) for that
tail ratio r. It is a heuristic, not an identity: the flip rate is not identifiable from
margins alone. Clean pairs the model gets confidently wrong push ε̂ up; flipped labels the
model has started to fit (their margins shrink towards 0, out of the tail) push it down, which
is why the rounds take it early in round 1. docs/RESULTS.md measures ε̂ against the realised
rate for every noise model.

Shape key: N examples.
"""

from __future__ import annotations

import numpy as np

from ropo_jax.errors import UserError
from ropo_jax.losses.holder import holder_contamination

MAX_RATE = 0.49  # ε ≥ 0.5 would mean most labels are wrong: the orientation is ambiguous


class FlipRateEstimateError(UserError, ValueError):
    """``ropo.filter_ratio="auto"`` found too few finite margins to estimate ρ from."""


def _finite_margins(margin_N, *, needed: int, ratio: str) -> tuple[np.ndarray, int]:
    """(the finite margins, how many were not) — at least ``needed`` of them, else the error
    that names ``ropo.filter_ratio=ratio`` and the fixes."""
    margin_N = np.asarray(margin_N, np.float64)
    finite = np.isfinite(margin_N)
    h = margin_N[finite]
    if h.size < needed:
        raise FlipRateEstimateError(
            f"ropo.filter_ratio={ratio!r}: estimating the flip rate needs >= {needed} finite "
            f"margins, got {h.size} of {margin_N.size} ({int((~finite).sum())} NaN or "
            "infinite): the policy's log-probs are not finite (training diverged; lower "
            f"train.learning_rate) or there are fewer than {needed} training pairs. Fix that, "
            "or set ropo.filter_ratio to a number in [0, 1)"
        )
    return h, int((~finite).sum())


def estimate_flip_rate(margin_N: np.ndarray, *, tail_quantile: float = 0.5) -> dict:
    """ε̂ from the tail ratio of the finite margins at x = the ``tail_quantile`` quantile of
    |h|, as ``{"rate", "threshold", "lower_tail", "upper_tail", "count", "ignored"}`` (the
    tails as fractions of the margins used; NaNs are ignored and counted). Raises
    ``FlipRateEstimateError`` when fewer than two margins are finite."""
    h, ignored = _finite_margins(margin_N, needed=2, ratio="auto")
    threshold = float(np.quantile(np.abs(h), tail_quantile))
    lower, upper = float(np.mean(h < -threshold)), float(np.mean(h > threshold))
    ratio = lower / upper if upper > 0 else np.inf
    rate = ratio / (1.0 + ratio) if np.isfinite(ratio) else 1.0
    return {
        "rate": float(min(rate, MAX_RATE)),
        "threshold": threshold,
        "lower_tail": lower,
        "upper_tail": upper,
        "count": int(h.size),
        "ignored": ignored,
    }


def estimate_holder_rate(margin_N: np.ndarray, *, beta: float, gamma: float) -> dict:
    """Hölder-DPO's ε̂ (``losses.holder_contamination``, docs/method.md §2.7) of the finite
    margins, clamped to [0, MAX_RATE], as ``{"rate", "epsilon", "beta", "gamma", "count",
    "ignored"}`` (``epsilon``: ε̂ before the clamp; NaNs are ignored and counted). Raises
    ``FlipRateEstimateError`` when no margin is finite, ValueError for invalid knobs."""
    h, ignored = _finite_margins(margin_N, needed=1, ratio="holder")
    epsilon = holder_contamination(h, beta=beta, gamma=gamma)
    return {
        "rate": float(min(max(epsilon, 0.0), MAX_RATE)),
        "epsilon": float(epsilon),
        "beta": float(beta),
        "gamma": float(gamma),
        "count": int(h.size),
        "ignored": ignored,
    }
