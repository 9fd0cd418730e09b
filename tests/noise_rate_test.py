"""The flip-rate estimates behind ropo.filter_ratio="auto" and "holder"
(ropo_jax/ropo/noise_rate.py)."""

import numpy as np
import pytest

from ropo_jax.losses import holder_contamination
from ropo_jax.ropo.noise_rate import (
    MAX_RATE,
    FlipRateEstimateError,
    estimate_flip_rate,
    estimate_holder_rate,
)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.4])
def test_recovers_the_rate_when_the_model_is_never_confidently_wrong(rate):
    """Margins on the true preference all positive (the assumption under which the tail ratio
    is exact): the estimate is the realised flip rate up to sampling noise."""
    rng = np.random.default_rng(3)
    true_margin_N = rng.gamma(3.0, 2.0, size=20_000)
    flipped_N = rng.random(true_margin_N.size) < rate
    estimate = estimate_flip_rate(np.where(flipped_N, -true_margin_N, true_margin_N))
    assert abs(estimate["rate"] - flipped_N.mean()) < 0.015
    assert estimate["lower_tail"] + estimate["upper_tail"] == pytest.approx(0.5, abs=1e-3)


def test_fitted_flipped_labels_are_underestimated():
    """Flipped pairs the model has started to fit have margins near 0, out of the tail: the
    estimate falls below the realised rate (the reason the rounds take it early)."""
    rng = np.random.default_rng(4)
    true_margin_N = rng.gamma(3.0, 2.0, size=20_000)
    flipped_N = rng.random(true_margin_N.size) < 0.4
    shrunk_N = np.where(flipped_N, -0.2 * true_margin_N, true_margin_N)
    assert estimate_flip_rate(shrunk_N)["rate"] < 0.2


def test_nans_are_counted_and_the_rate_is_capped():
    margin_N = np.array([-5.0, -4.0, -3.0, -2.0, 1.0, np.nan])
    estimate = estimate_flip_rate(margin_N)
    assert estimate["ignored"] == 1 and estimate["count"] == 5
    assert estimate["rate"] == MAX_RATE  # mostly negative margins: ambiguous orientation
    with pytest.raises(ValueError, match="needs >= 2 finite margins"):
        estimate_flip_rate(np.array([np.nan, 1.0]))


def test_holder_rate_is_the_contamination_estimate_of_the_finite_margins():
    rng = np.random.default_rng(5)
    margin_N = rng.normal(2.0, 3.0, size=500)
    estimate = estimate_holder_rate(np.append(margin_N, np.nan), beta=0.5, gamma=2.0)
    expected = holder_contamination(margin_N, beta=0.5, gamma=2.0)
    assert estimate["rate"] == estimate["epsilon"] == pytest.approx(expected, abs=1e-12)
    assert (estimate["count"], estimate["ignored"]) == (500, 1)
    assert (estimate["beta"], estimate["gamma"]) == (0.5, 2.0)


def test_holder_rate_is_capped_and_needs_a_finite_margin():
    # 6 of 10 pairs with σ(βh) = 0 and 4 with σ = 1: ε̂ = 6/10 exactly, capped at MAX_RATE.
    margin_N = np.array([-1e4] * 6 + [1e4] * 4)
    estimate = estimate_holder_rate(margin_N, beta=1.0, gamma=2.0)
    assert estimate["epsilon"] == pytest.approx(0.6) and estimate["rate"] == MAX_RATE
    with pytest.raises(
        FlipRateEstimateError, match=r"filter_ratio='holder'.*needs >= 1 finite margins"
    ):
        estimate_holder_rate(np.array([np.nan, np.inf]), beta=1.0, gamma=2.0)
    with pytest.raises(ValueError, match="holder_gamma"):
        estimate_holder_rate(margin_N, beta=1.0, gamma=0.0)
