"""Tests of the preference-loss library (docs/method.md §2): closed forms, the facts of §2.4–§2.5,
gradients, an independent NumPy implementation, the registry's errors, and TRL's own loss code.

Shape key: B batch (pairs), T length, V vocabulary, D width.
"""

import math
import types
import warnings
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropo_jax import losses
from ropo_jax.losses import pairwise

BASIC_LOSSES = {
    # name → hyper-parameters; every function with the four-log-prob signature.
    "dpo": {"beta": 0.1},
    "noise_aware": {"beta": 0.1},
    "ropo": {"beta": 0.1, "alpha": 14.0},
    "cdpo": {"beta": 0.1, "label_smoothing": 0.1},
    "rdpo": {"beta": 0.1, "flip_rate": 0.2},
    "ipo": {"beta": 0.1},
    "hinge": {"beta": 0.1},
    "holder_dpo": {"beta": 0.1, "holder_gamma": 3.0},  # γ ≠ 2: the general, asymmetric case
}
LOSS_FNS = {
    "dpo": losses.dpo_loss,
    "noise_aware": losses.noise_aware_loss,
    "ropo": losses.ropo_loss,
    "cdpo": losses.cdpo_loss,
    "rdpo": losses.rdpo_loss,
    "ipo": losses.ipo_loss,
    "hinge": losses.hinge_loss,
    # The registry's knob names (holder_gamma); the public gamma= is tested below.
    "holder_dpo": pairwise.holder_dpo_registry_loss,
}


def _random_logps(seed: int, batch: int = 64, scale: float = 20.0):
    """Four [B] float32 arrays of plausible sequence log-probs (negative, spread out)."""
    rng = np.random.default_rng(seed)
    base = -rng.uniform(5.0, 80.0, size=(4, batch))
    jitter = rng.normal(scale=scale, size=(4, batch))
    return tuple(jnp.asarray(np.minimum(base + jitter, -0.1), jnp.float32))


def _logps_with_margin(margin_B):
    """Log-probs whose margin h equals ``margin_B`` exactly (policy chosen carries it)."""
    margin_B = jnp.asarray(margin_B, jnp.float32)
    zeros = jnp.zeros_like(margin_B)
    return margin_B, zeros, zeros, zeros


# --------------------------------------------------------------------------- NumPy reference.
# Written independently of ropo_jax.losses, straight from the table of docs/method.md §2.2, in
# float64.


def _np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _np_sigmoid(x):
    return np.exp(_np_log_sigmoid(x))


def _np_holder(z, gamma):
    """Hölder-DPO as the paper writes it: −(1+γ)·σ(z)^γ + γ·σ(z)^(1+γ)."""
    s = _np_sigmoid(z)
    return -(1 + gamma) * s**gamma + gamma * s ** (1 + gamma)


def numpy_loss(
    name, pc, pr, rc, rr, hp, chosen_len=None, rejected_len=None, weights=None, posterior=None
):
    pc, pr, rc, rr = (np.asarray(a, np.float64) for a in (pc, pr, rc, rr))
    beta = hp["beta"]
    h = (pc - rc) - (pr - rr)
    z = beta * h
    if name == "dpo":
        return -_np_log_sigmoid(z)
    if name == "noise_aware":
        return _np_sigmoid(-z)
    if name == "ropo":
        a = hp["alpha"]
        return 4 * a / (1 + a) ** 2 * (-_np_log_sigmoid(z) + a * _np_sigmoid(-z))
    if name == "cdpo":
        e = hp["label_smoothing"]
        return -(1 - e) * _np_log_sigmoid(z) - e * _np_log_sigmoid(-z)
    if name == "rdpo":
        e = hp["flip_rate"]
        return (-(1 - e) * _np_log_sigmoid(z) + e * _np_log_sigmoid(-z)) / (1 - 2 * e)
    if name == "ipo":
        if hp.get("ipo_average"):
            h = (pc - rc) / chosen_len - (pr - rr) / rejected_len
        return (h - 1 / (2 * beta)) ** 2
    if name == "hinge":
        return np.maximum(0.0, 1 - z)
    if name == "holder_dpo":
        g = hp["holder_gamma"]
        return _np_holder(z, g)
    if name == "dpo_nll":
        return -_np_log_sigmoid(z) + hp["nll_weight"] * (-pc / chosen_len)
    if name == "simpo":
        return -_np_log_sigmoid(beta * pc / chosen_len - beta * pr / rejected_len - hp["gamma"])
    if name == "dr_dpo":
        w = np.ones_like(h) if weights is None else np.asarray(weights, np.float64)
        dpo = -_np_log_sigmoid(z)
        value = -hp["beta_prime"] * np.log(np.sum(w * np.exp(-dpo / hp["beta_prime"])) / w.sum())
        return np.full_like(h, value)
    if name == "lcpo_em":
        eta = hp["eta"]
        p = (1 - eta) * _np_sigmoid(z) / ((1 - eta) * _np_sigmoid(z) + eta * _np_sigmoid(-z))
        p = p if posterior is None else posterior  # the E-step weight is a constant in the M-step
        return p * -_np_log_sigmoid(z) + (1 - p) * -_np_log_sigmoid(-z)
    raise AssertionError(name)


ALL_HPARAMS = {
    **BASIC_LOSSES,
    "ipo_avg": {"beta": 0.1, "ipo_average": True},
    "dpo_nll": {"beta": 0.1, "nll_weight": 0.5},
    "simpo": {"beta": 2.0, "gamma": 0.7},
    "dr_dpo": {"beta": 0.1, "beta_prime": 0.5},
    "lcpo_em": {"beta": 0.1, "eta": 0.2},
}


def _pair_logps(seed, batch=64, weights=None):
    pc, pr, rc, rr = _random_logps(seed, batch)
    rng = np.random.default_rng(seed + 1)
    lengths = jnp.asarray(rng.integers(1, 60, size=(2, batch)), jnp.float32)
    return losses.PairLogps(pc, pr, rc, rr, lengths[0], lengths[1], weights)


@pytest.mark.parametrize("key", sorted(ALL_HPARAMS))
def test_matches_independent_numpy_implementation(key):
    name = "ipo" if key == "ipo_avg" else key
    hp = ALL_HPARAMS[key]
    weights = jnp.asarray(np.random.default_rng(3).integers(0, 3, size=64), jnp.float32)
    logps = _pair_logps(seed=7, weights=weights)
    loss_B, aux = losses.preference_loss(name, logps, **hp)
    expected = numpy_loss(
        name,
        logps.policy_chosen,
        logps.policy_rejected,
        logps.ref_chosen,
        logps.ref_rejected,
        hp,
        np.asarray(logps.chosen_lengths, np.float64),
        np.asarray(logps.rejected_lengths, np.float64),
        weights,
    )
    # float32 evaluation of float64 formulas on margins up to ~100: 1e-5 relative.
    np.testing.assert_allclose(np.asarray(loss_B), expected, rtol=1e-5, atol=1e-6)
    assert loss_B.dtype == jnp.float32 and loss_B.shape == (64,)
    for key_ in ("margin", "rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert aux[key_].shape == (64,)


# --------------------------------------------------------------------------- closed forms.


def test_policy_equals_reference_gives_log2_and_zero_margin():
    pc, pr, _, _ = _random_logps(0)
    loss_B, aux = losses.dpo_loss(pc, pr, pc, pr, beta=0.1)
    np.testing.assert_allclose(loss_B, math.log(2.0), rtol=1e-6)
    np.testing.assert_array_equal(aux["margin"], 0.0)
    np.testing.assert_array_equal(aux["rewards/accuracies"], 0.0)
    ropo_B, _ = losses.ropo_loss(pc, pr, pc, pr, beta=0.1, alpha=14.0)
    c = 4 * 14 / 15**2
    np.testing.assert_allclose(ropo_B, c * (math.log(2.0) + 14 / 2), rtol=1e-6)
    ipo_B, _ = losses.ipo_loss(pc, pr, pc, pr, beta=0.1)
    np.testing.assert_allclose(ipo_B, (1 / 0.2) ** 2, rtol=1e-6)
    hinge_B, _ = losses.hinge_loss(pc, pr, pc, pr, beta=0.1)
    np.testing.assert_allclose(hinge_B, 1.0)


def test_aux_rewards_follow_trl_definitions():
    pc, pr, rc, rr = _random_logps(1)
    _, aux = losses.dpo_loss(pc, pr, rc, rr, beta=0.3)
    np.testing.assert_allclose(aux["rewards/chosen"], 0.3 * (pc - rc), rtol=1e-6)
    np.testing.assert_allclose(aux["rewards/rejected"], 0.3 * (pr - rr), rtol=1e-6)
    np.testing.assert_allclose(
        aux["rewards/margins"],
        aux["rewards/chosen"] - aux["rewards/rejected"],
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_array_equal(aux["rewards/accuracies"], np.asarray((pc - rc) > (pr - rr)))
    np.testing.assert_array_equal(aux["logps/chosen"], pc)
    np.testing.assert_array_equal(aux["logps/rejected"], pr)


@pytest.mark.parametrize("name", sorted(BASIC_LOSSES))
def test_swapping_chosen_and_rejected_negates_the_margin(name):
    pc, pr, rc, rr = _random_logps(2)
    hp = BASIC_LOSSES[name]
    _, aux = LOSS_FNS[name](pc, pr, rc, rr, **hp)
    swapped_B, swapped_aux = LOSS_FNS[name](pr, pc, rr, rc, **hp)
    np.testing.assert_allclose(swapped_aux["margin"], -aux["margin"], rtol=1e-6)
    # The swapped loss is the loss evaluated at −h.
    neg_B, _ = LOSS_FNS[name](*_logps_with_margin(-aux["margin"]), **hp)
    np.testing.assert_allclose(swapped_B, neg_B, rtol=1e-5, atol=1e-6)


def test_cdpo_swap_exchanges_epsilon_and_one_minus_epsilon():
    pc, pr, rc, rr = _random_logps(3)
    """ℓ_cdpo(−h; ε) = ℓ_cdpo(h; 1−ε): swapping the labels turns ε into 1−ε."""
    swapped_B, _ = losses.cdpo_loss(pr, pc, rr, rc, beta=0.1, label_smoothing=0.1)
    z = 0.1 * np.asarray((pc - rc) - (pr - rr), np.float64)
    one_minus_eps_B = 0.9 * np.logaddexp(0, z) + 0.1 * np.logaddexp(0, -z)
    np.testing.assert_allclose(swapped_B, one_minus_eps_B, rtol=1e-5)


@pytest.mark.parametrize(
    "name", ["dpo", "ropo", "cdpo", "rdpo", "hinge", "noise_aware", "holder_dpo"]
)
def test_beta_is_applied_exactly_once(name):
    """loss(β, h) must equal loss(1, β·h): an implementation applying β twice fails this."""
    margin_B = jnp.linspace(-30.0, 30.0, 61)
    hp = dict(BASIC_LOSSES[name], beta=0.5)
    loss_B, aux = LOSS_FNS[name](*_logps_with_margin(margin_B), **hp)
    unit_B, _ = LOSS_FNS[name](*_logps_with_margin(0.5 * margin_B), **dict(hp, beta=1.0))
    np.testing.assert_allclose(loss_B, unit_B, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(aux["rewards/margins"], 0.5 * margin_B, rtol=1e-6)


def test_ipo_beta_enters_only_through_the_target_margin():
    margin_B = jnp.linspace(-5.0, 5.0, 11)
    loss_B, _ = losses.ipo_loss(*_logps_with_margin(margin_B), beta=0.25)
    np.testing.assert_allclose(loss_B, (margin_B - 2.0) ** 2, rtol=1e-6)


# --------------------------------------------------------------------------- gradients.


def _finite_difference(f, x_B, eps):
    """Central differences of sum(f(x)) per coordinate (f is elementwise in x)."""
    return (f(x_B + eps) - f(x_B - eps)) / (2 * eps)


@pytest.mark.parametrize("key", sorted(ALL_HPARAMS))
def test_gradients_match_finite_differences(key):
    name = "ipo" if key == "ipo_avg" else key
    hp = ALL_HPARAMS[key]
    logps = _pair_logps(seed=11, batch=16)
    if name == "hinge":  # stay away from the kink at βh = 1
        logps = losses.PairLogps(*_logps_with_margin(jnp.linspace(-40.0, 5.0, 16)))
    elif name == "dr_dpo":
        logps = losses.PairLogps(*(a / 20 for a in _random_logps(11, 16)))

    def total(policy_chosen):
        new = losses.PairLogps(
            policy_chosen,
            logps.policy_rejected,
            logps.ref_chosen,
            logps.ref_rejected,
            logps.chosen_lengths,
            logps.rejected_lengths,
        )
        loss_B, _ = losses.preference_loss(name, new, **hp)
        return loss_B

    if name == "dr_dpo":  # batch-level: differentiate the batch value
        grad = jax.grad(lambda x: total(x)[0])(logps.policy_chosen)
        x64 = np.asarray(logps.policy_chosen, np.float64)

        def batch_value(x):
            return numpy_loss(
                name, x, logps.policy_rejected, logps.ref_chosen, logps.ref_rejected, hp
            )[0]

        eps = 1e-5
        fd = np.array(
            [
                (batch_value(x64 + eps * e) - batch_value(x64 - eps * e)) / (2 * eps)
                for e in np.eye(16)
            ]
        )
        np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=1e-6)
        return
    grad = jax.grad(lambda x: jnp.sum(total(x)))(logps.policy_chosen)
    # Per-example losses: the derivative is elementwise, so central differences of the float64
    # NumPy reference give the exact gradient to ~1e-9; float32 autodiff is good to ~1e-5.
    x64 = np.asarray(logps.policy_chosen, np.float64)
    # lcpo_em's E-step posterior is stop-gradient: differentiate with it held at its value.
    posterior = None
    if name == "lcpo_em":
        z = hp["beta"] * ((x64 - logps.ref_chosen) - (logps.policy_rejected - logps.ref_rejected))
        eta = hp["eta"]
        posterior = (1 - eta) / (1 - eta + eta * np.exp(-np.asarray(z, np.float64)))
    ref = lambda x: numpy_loss(
        name,
        x,
        logps.policy_rejected,
        logps.ref_chosen,
        logps.ref_rejected,
        hp,
        None if logps.chosen_lengths is None else np.asarray(logps.chosen_lengths, np.float64),
        None if logps.rejected_lengths is None else np.asarray(logps.rejected_lengths, np.float64),
        posterior=posterior,
    )
    fd = _finite_difference(ref, x64, 1e-5)
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)


def _autodiff_weight(name, margin_B, **hp):
    """−∂ℓ/∂(βh) by autodiff through the loss (independent of the closed form)."""
    beta = hp["beta"]

    def loss_of_z(z):
        loss_B, _ = LOSS_FNS[name](*_logps_with_margin(z / beta), **hp)
        return jnp.sum(loss_B)

    return -jax.grad(loss_of_z)(beta * jnp.asarray(margin_B, jnp.float32))


def test_ropo_gradient_weight_closed_form_matches_autodiff():
    margin_B = jnp.linspace(-200.0, 200.0, 401)
    for alpha in (3.0, 14.0, 30.0):
        closed = losses.ropo_gradient_weight(margin_B, beta=0.1, alpha=alpha)
        auto = _autodiff_weight("ropo", margin_B, beta=0.1, alpha=alpha)
        np.testing.assert_allclose(closed, auto, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------ docs/method.md §2.4–§2.5 facts.


@pytest.mark.parametrize("alpha", [3.0, 6.0, 14.0, 30.0])
def test_ropo_max_gradient_weight_is_one(alpha):
    z = np.linspace(-20.0, 20.0, 400_001)  # dense grid of βh, step 1e-4
    w = np.asarray(losses.ropo_gradient_weight(jnp.asarray(z), beta=1.0, alpha=alpha))
    assert abs(w.max() - 1.0) < 1e-6
    assert w.max() <= 1.0 + 1e-6
    # The maximiser is βh* = log((α−1)/(α+1)), derived from dw/dσ = c·(α(1 − 2σ) − 1) = 0.
    assert abs(z[np.argmax(w)] - math.log((alpha - 1) / (alpha + 1))) < 1e-3


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0, 6.0, 14.0, 30.0])
def test_ropo_weight_limits(alpha):
    c = 4 * alpha / (1 + alpha) ** 2
    w = losses.ropo_gradient_weight(jnp.asarray([-1e4, 0.0, 1e4]), beta=1.0, alpha=alpha)
    np.testing.assert_allclose(w[0], c, rtol=1e-6)  # w(−∞) = 4α/(1+α)²
    np.testing.assert_allclose(w[1], alpha * (alpha + 2) / (1 + alpha) ** 2, rtol=1e-6)  # w(0)
    assert float(w[2]) == pytest.approx(0.0, abs=1e-30)  # w(+∞) = 0
    # w(−∞) < w(0) iff α > 2: only then are confidently contradicted pairs down-weighted.
    assert (float(w[0]) < float(w[1])) == (alpha > 2)


def test_ropo_weight_monotonicity_for_small_alpha():
    """α ≤ 2 is often read as "a monotone weight"; it is not. From w = c(1−s)(1+αs), s = σ(βh),
    dw/ds = c(α(1−2s) − 1): the weight is non-increasing in h exactly when α ≤ 1. For
    1 < α ≤ 2 it rises to 1 at βh = log((α−1)/(α+1)) and then falls, while w(−∞) ≥ w(0) still
    holds (the fact the α warning states). docs/method.md §2.4 states them."""
    z = jnp.linspace(-30.0, 30.0, 60_001)
    for alpha in (0.25, 0.5, 1.0):
        w = np.asarray(losses.ropo_gradient_weight(z, beta=1.0, alpha=alpha))
        # 5e-7 = 4 float32 ulps near 1: rounding noise, vs ≥ 1e-5 per step for a real rise.
        assert np.all(np.diff(w) <= 5e-7), alpha
    for alpha in (1.5, 2.0):
        w = np.asarray(losses.ropo_gradient_weight(z, beta=1.0, alpha=alpha))
        assert np.any(np.diff(w) > 1e-6), alpha
        assert w[0] >= w[30_000] - 1e-7  # w(−30) ≥ w(0)
    for alpha in (2.5, 14.0):
        w = np.asarray(losses.ropo_gradient_weight(z, beta=1.0, alpha=alpha))
        assert w[0] < w[30_000]


def test_noise_aware_loss_is_symmetric():
    margin_B = jnp.linspace(-100.0, 100.0, 201)
    pos_B, _ = losses.noise_aware_loss(*_logps_with_margin(margin_B), beta=0.1)
    neg_B, _ = losses.noise_aware_loss(*_logps_with_margin(-margin_B), beta=0.1)
    np.testing.assert_allclose(pos_B + neg_B, 1.0, rtol=1e-6)


def test_expected_noise_aware_loss_under_symmetric_flips():
    """E[ℓ_na] under symmetric flips at rate η equals (1−2η)·ℓ_na + η (docs/method.md §2.5), checked
    by sampling flips: the sample mean of flipped losses matches within 6 standard errors."""
    rng = np.random.default_rng(0)
    margin = 7.0
    clean, _ = losses.noise_aware_loss(*_logps_with_margin(jnp.asarray([margin])), beta=0.1)
    for eta in (0.1, 0.25, 0.4):
        flips = rng.random(200_000) < eta
        sampled_B, _ = losses.noise_aware_loss(
            *_logps_with_margin(jnp.where(flips, -margin, margin)), beta=0.1
        )
        sampled = np.asarray(sampled_B, np.float64)
        predicted = (1 - 2 * eta) * float(clean[0]) + eta
        stderr = sampled.std() / math.sqrt(sampled.size)
        assert abs(sampled.mean() - predicted) < 6 * stderr + 1e-6
    # The exact expectation, for a grid of margins.
    margin_B = jnp.linspace(-50.0, 50.0, 101)
    na_B, _ = losses.noise_aware_loss(*_logps_with_margin(margin_B), beta=0.1)
    na_neg_B, _ = losses.noise_aware_loss(*_logps_with_margin(-margin_B), beta=0.1)
    for eta in (0.1, 0.3):
        np.testing.assert_allclose(
            (1 - eta) * na_B + eta * na_neg_B, (1 - 2 * eta) * na_B + eta, rtol=1e-6
        )


def test_dpo_under_flips_equals_cdpo_in_expectation():
    margin_B = jnp.linspace(-50.0, 50.0, 101)
    dpo_B, _ = losses.dpo_loss(*_logps_with_margin(margin_B), beta=0.1)
    dpo_neg_B, _ = losses.dpo_loss(*_logps_with_margin(-margin_B), beta=0.1)
    for eta in (0.1, 0.2, 0.4):
        cdpo_B, _ = losses.cdpo_loss(*_logps_with_margin(margin_B), beta=0.1, label_smoothing=eta)
        np.testing.assert_allclose((1 - eta) * dpo_B + eta * dpo_neg_B, cdpo_B, rtol=1e-6)


def test_rdpo_is_unbiased_for_dpo_under_symmetric_flips():
    """Chowdhury et al.: E over flips at rate ε of the rDPO loss equals the clean DPO loss."""
    margin_B = jnp.linspace(-50.0, 50.0, 101)
    eps = 0.2
    clean_B, _ = losses.dpo_loss(*_logps_with_margin(margin_B), beta=0.1)
    r_B, _ = losses.rdpo_loss(*_logps_with_margin(margin_B), beta=0.1, flip_rate=eps)
    r_neg_B, _ = losses.rdpo_loss(*_logps_with_margin(-margin_B), beta=0.1, flip_rate=eps)
    np.testing.assert_allclose((1 - eps) * r_B + eps * r_neg_B, clean_B, rtol=1e-5, atol=1e-6)


def test_lcpo_em_steps():
    margin_B = jnp.asarray([-100.0, 0.0, 100.0])
    p = losses.lcpo_e_step(margin_B, beta=1.0, eta=0.2)
    np.testing.assert_allclose(p, [0.0, 0.8, 1.0], atol=1e-6)
    np.testing.assert_allclose(losses.lcpo_m_step(jnp.asarray([1.0, 0.5, 0.0, 0.5])), 0.5)
    np.testing.assert_allclose(
        losses.lcpo_m_step(jnp.asarray([1.0, 0.0]), jnp.asarray([3.0, 1.0])), 0.25
    )
    # The E-step weight carries no gradient: the gradient is that of the p-weighted mixture.
    grad = jax.grad(
        lambda m: jnp.sum(losses.lcpo_em_loss(*_logps_with_margin(m), beta=1.0, eta=0.2)[0])
    )(jnp.asarray([0.0]))
    np.testing.assert_allclose(grad, [-(0.8 * 0.5) + 0.2 * 0.5], rtol=1e-6)


def test_dr_dpo_limits():
    """β′ → ∞ gives plain mean DPO; zero weights remove examples from the batch objective."""
    pc, pr, rc, rr = _random_logps(4, batch=8, scale=2.0)
    dpo_B, _ = losses.dpo_loss(pc, pr, rc, rr, beta=0.1)
    dr_B, _ = losses.dr_dpo_loss(pc, pr, rc, rr, beta=0.1, beta_prime=1e4)
    np.testing.assert_allclose(dr_B[0], jnp.mean(dpo_B), rtol=1e-3)
    weights = jnp.asarray([1, 1, 1, 1, 0, 0, 0, 0], jnp.float32)
    masked_B, _ = losses.dr_dpo_loss(pc, pr, rc, rr, beta=0.1, beta_prime=0.5, weights=weights)
    first_half_B, _ = losses.dr_dpo_loss(pc[:4], pr[:4], rc[:4], rr[:4], beta=0.1, beta_prime=0.5)
    np.testing.assert_allclose(masked_B[0], first_half_B[0], rtol=1e-6)
    np.testing.assert_allclose(losses.weighted_mean(masked_B, weights), masked_B[0], rtol=1e-6)


# --------------------------------------------------------- Hölder-DPO (docs/method.md §2.7).

HOLDER_GAMMAS = [0.5, 1.0, 2.0, 4.0, 6.0, 8.0]  # the paper's ablation grid, and a γ < 1


def _np_holder_weight(z, gamma):
    """Closed-form −∂ℓ/∂z = γ(1+γ)·σ(z)^γ·σ(−z)², in float64."""
    return gamma * (1 + gamma) * _np_sigmoid(z) ** gamma * _np_sigmoid(-z) ** 2


@pytest.mark.parametrize("gamma", HOLDER_GAMMAS)
def test_holder_dpo_matches_float64_reference_and_closed_form_gradient(gamma):
    """Value and gradient w.r.t. all four log-probs, on margins from |βh| = 0 to 1000."""
    beta = 0.1
    grid_B = np.concatenate([-np.logspace(-2, 4, 40), [0.0], np.logspace(-2, 4, 40)])
    rng = np.random.default_rng(0)
    margin_B = np.concatenate([grid_B, rng.normal(scale=30.0, size=64)])
    # Split the margin over four log-probs so every input carries part of it.
    rc, pr, rr = (rng.normal(scale=5.0, size=margin_B.shape) - 40.0 for _ in range(3))
    pc = margin_B + rc + pr - rr
    inputs = tuple(jnp.asarray(a, jnp.float32) for a in (pc, pr, rc, rr))
    h64 = (np.asarray(inputs[0], np.float64) - np.asarray(inputs[2], np.float64)) - (
        np.asarray(inputs[1], np.float64) - np.asarray(inputs[3], np.float64)
    )  # the margin the float32 inputs actually encode

    def total(*logps):
        return jnp.sum(losses.holder_dpo_loss(*logps, beta=beta, gamma=gamma)[0])

    loss_B, aux = losses.holder_dpo_loss(*inputs, beta=beta, gamma=gamma)
    assert loss_B.dtype == jnp.float32 and loss_B.shape == margin_B.shape
    np.testing.assert_allclose(aux["margin"], h64, rtol=1e-6, atol=1e-4)
    z64 = beta * np.asarray(aux["margin"], np.float64)
    np.testing.assert_allclose(loss_B, _np_holder(z64, gamma), rtol=1e-6, atol=1e-6)
    grads = jax.grad(total, argnums=(0, 1, 2, 3))(*inputs)
    # dℓ/dh = −β·γ(1+γ)·σ^γ·(1−σ)², and ∂h/∂(pc, pr, rc, rr) = (+1, −1, −1, +1).
    dl_dh = -beta * _np_holder_weight(z64, gamma)
    for grad, sign in zip(grads, (1, -1, -1, 1), strict=True):
        assert np.all(np.isfinite(grad))
        np.testing.assert_allclose(grad, sign * dl_dh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        losses.gradient_weight("holder_dpo", aux["margin"], holder_gamma=gamma),
        _np_holder_weight(z64, gamma),
        rtol=1e-5,
        atol=1e-6,
    )
    # The closed form itself, against central differences of the float64 formula.
    z_mid = np.linspace(-30.0, 30.0, 121)
    fd = _finite_difference(lambda z: _np_holder(z, gamma), z_mid, 1e-5)
    np.testing.assert_allclose(-_np_holder_weight(z_mid, gamma), fd, rtol=1e-6, atol=1e-9)
    # Confident pairs keep a positive weight with full relative accuracy (autodiff through the
    # value would leave rounding noise of either sign there; the loss uses the closed form).
    w_far = losses.gradient_weight("holder_dpo", jnp.asarray([170.0, 300.0]), holder_gamma=gamma)
    np.testing.assert_allclose(w_far, _np_holder_weight(np.asarray([17.0, 30.0]), gamma), rtol=1e-5)
    # ∂ℓ/∂γ, for a caller differentiating through γ.
    dgamma = jax.grad(lambda g: jnp.sum(losses.holder_dpo_loss(*inputs, beta=beta, gamma=g)[0]))(
        jnp.float32(gamma)
    )
    fd_gamma = np.sum((_np_holder(z64, gamma + 1e-6) - _np_holder(z64, gamma - 1e-6)) / 2e-6)
    np.testing.assert_allclose(dgamma, fd_gamma, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gamma", HOLDER_GAMMAS)
def test_holder_dpo_range_limits_and_redescending_weight(gamma):
    margin_B = jnp.linspace(-2000.0, 2000.0, 40_001)  # βh from −200 to 200, step 0.01
    loss_B, _ = losses.holder_dpo_loss(*_logps_with_margin(margin_B), beta=0.1, gamma=gamma)
    assert np.all(np.asarray(loss_B) >= -1.0) and np.all(np.asarray(loss_B) <= 0.0)
    # Strictly decreasing in h while the weight is resolvable in float32.
    middle = np.asarray(loss_B)[(np.abs(margin_B) < 30.0)]
    assert np.all(np.diff(middle) < 0)
    ends_B, _ = losses.holder_dpo_loss(
        *_logps_with_margin(jnp.asarray([-1e4, 1e4])), beta=0.1, gamma=gamma
    )
    np.testing.assert_allclose(ends_B, [0.0, -1.0], atol=1e-7)  # ℓ(−∞) = 0, ℓ(+∞) = −1
    # No NaN or inf at |βh| = 100 (and beyond), in the loss or its gradient.
    far_B = jnp.asarray([-1e5, -1000.0, 1000.0, 1e5])
    far_loss_B, _ = losses.holder_dpo_loss(*_logps_with_margin(far_B), beta=0.1, gamma=gamma)
    far_grad_B = jax.grad(
        lambda m: jnp.sum(
            losses.holder_dpo_loss(m, *_logps_with_margin(m)[1:], beta=0.1, gamma=gamma)[0]
        )
    )(far_B)
    assert np.all(np.isfinite(far_loss_B)) and np.all(np.isfinite(far_grad_B))
    # Redescending: the weight of a confidently contradicted pair vanishes (DPO's tends to 1).
    w = np.asarray(losses.gradient_weight("holder_dpo", margin_B, holder_gamma=gamma))
    assert np.all(np.isfinite(w)) and np.all(w >= 0.0)
    z = 0.1 * np.asarray(margin_B, np.float64)
    assert w[z <= -100].max() < 1e-20 and abs(float(far_grad_B[1])) < 1e-20
    assert float(far_grad_B[0]) == 0.0  # βh = −10⁴
    # The weight peaks at σ* = γ/(γ+2), i.e. βh* = log(γ/2), from d[s^γ(1−s)²]/ds = 0.
    s_star = gamma / (gamma + 2)
    assert abs(z[np.argmax(w)] - math.log(gamma / 2)) < 0.02
    np.testing.assert_allclose(
        w.max(), gamma * (1 + gamma) * s_star**gamma * (1 - s_star) ** 2, rtol=1e-4
    )


def test_holder_dpo_with_gamma_two_is_symmetric():
    """At γ = 2, ℓ(h) + ℓ(−h) = −3s² + 2s³ − 3(1−s)² + 2(1−s)³ = −1 for every s (docs/method.md
    §2.7); for other γ it is not."""
    margin_B = jnp.linspace(-100.0, 100.0, 201)
    pos_B, _ = losses.holder_dpo_loss(*_logps_with_margin(margin_B), beta=0.1, gamma=2.0)
    neg_B, _ = losses.holder_dpo_loss(*_logps_with_margin(-margin_B), beta=0.1, gamma=2.0)
    np.testing.assert_allclose(pos_B + neg_B, -1.0, rtol=1e-6)
    pos4_B, _ = losses.holder_dpo_loss(*_logps_with_margin(margin_B), beta=0.1, gamma=4.0)
    neg4_B, _ = losses.holder_dpo_loss(*_logps_with_margin(-margin_B), beta=0.1, gamma=4.0)
    assert np.max(np.abs(np.asarray(pos4_B + neg4_B) + 1.0)) > 0.1


def test_holder_dpo_refuses_nonpositive_gamma_directly():
    z = jnp.zeros(2)
    for gamma in (0.0, -1.0):
        with pytest.raises(ValueError, match=rf"holder_gamma={gamma!r} is invalid"):
            losses.holder_dpo_loss(z, z, z, z, beta=0.1, gamma=gamma)
        with pytest.raises(ValueError, match=rf"holder_gamma={gamma!r} is invalid"):
            losses.holder_contamination(np.zeros(3), beta=0.1, gamma=gamma)
        with pytest.raises(ValueError, match=rf"holder_gamma={gamma!r} is invalid"):
            losses.holder_flagged(np.zeros(3), beta=0.1, gamma=gamma)
    # Under jit the value is traced: checked by the registry before compiling, not here.
    jax.jit(lambda g: losses.holder_dpo_loss(z, z, z, z, beta=0.1, gamma=g)[0])(2.0)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 8.0])
@pytest.mark.parametrize("num_contaminated", range(10))
def test_holder_contamination_worked_example(gamma, num_contaminated):
    """N = 10 pairs, M contaminated: clean ones σ → 1, contaminated σ → 0 (margins ±1e4 at
    β = 0.1, βh = ±1000). Then ξ̂ = (N−M)/N, so ε̂ = M/N, and the flagged pairs are exactly the
    M contaminated ones, wherever they sit."""
    rng = np.random.default_rng(num_contaminated)
    contaminated_N = np.zeros(10, bool)
    contaminated_N[rng.permutation(10)[:num_contaminated]] = True
    margin_N = np.where(contaminated_N, -1e4, 1e4)
    epsilon = losses.holder_contamination(margin_N, beta=0.1, gamma=gamma)
    assert isinstance(epsilon, float)
    assert abs(epsilon - num_contaminated / 10) < 1e-6
    flagged_N = losses.holder_flagged(margin_N, beta=0.1, gamma=gamma)
    assert flagged_N.dtype == bool and flagged_N.shape == (10,)
    np.testing.assert_array_equal(flagged_N, contaminated_N)
    # float32 margins (as training returns them) give the same answer.
    margin32_N = jnp.asarray(margin_N, jnp.float32)
    epsilon32 = losses.holder_contamination(margin32_N, beta=0.1, gamma=gamma)
    assert abs(epsilon32 - epsilon) < 1e-9


def test_holder_contamination_estimator_properties():
    """Nothing contaminated → 0; equal σ everywhere (e.g. the untrained policy, h = 0) → 0;
    otherwise the float64 formula, computed naively where it is safe; always in [0, 1)."""
    ones_N = np.full(10, 1e4)
    assert losses.holder_contamination(ones_N, beta=0.1, gamma=2.0) == pytest.approx(0.0, abs=1e-12)
    assert not losses.holder_flagged(ones_N, beta=0.1, gamma=2.0).any()
    for value in (-1e4, -3.0, 0.0, 5.0):
        same_N = np.full(7, value)
        assert losses.holder_contamination(same_N, beta=0.1, gamma=2.0) == pytest.approx(
            0.0, abs=1e-12
        )
    rng = np.random.default_rng(1)
    for gamma in HOLDER_GAMMAS:
        margin_N = rng.normal(loc=20.0, scale=40.0, size=500)
        s = _np_sigmoid(0.1 * margin_N)
        xi = s.mean() * np.sum(s**gamma) / np.sum(s ** (1 + gamma))
        epsilon = losses.holder_contamination(margin_N, beta=0.1, gamma=gamma)
        assert epsilon == pytest.approx(max(0.0, 1 - xi), rel=1e-10, abs=1e-12)
        assert 0.0 <= epsilon < 1.0
        flagged_N = losses.holder_flagged(margin_N, beta=0.1, gamma=gamma)
        count = int(flagged_N.sum())
        assert count == math.floor(500 * epsilon + 1e-6)
        # The flagged pairs are those of lowest σ: every flagged margin ≤ every other one.
        assert margin_N[flagged_N].max() <= margin_N[~flagged_N].min()


def test_holder_flagged_breaks_ties_by_position():
    """Six clean pairs, one at σ → 0 and three tied at βh = −2: ε̂ ≈ 0.36 flags 3 pairs, the
    σ → 0 one and the first two of the tie."""
    margin_N = np.asarray([1e4, -20.0, 1e4, -1e4, -20.0, 1e4, 1e4, -20.0, 1e4, 1e4])
    assert math.floor(10 * losses.holder_contamination(margin_N, beta=0.1, gamma=2.0)) == 3
    flagged_N = losses.holder_flagged(margin_N, beta=0.1, gamma=2.0)
    assert np.flatnonzero(flagged_N).tolist() == [1, 3, 4]


@pytest.mark.parametrize(
    ("margin", "message"),
    [
        (np.zeros(0), "at least one pair"),
        (np.zeros((2, 3)), "one-dimensional"),
        (np.asarray([0.0, np.nan]), "finite margins"),
        (np.asarray([0.0, -np.inf]), "finite margins"),
    ],
)
def test_holder_contamination_refuses_bad_margins(margin, message):
    with pytest.raises(ValueError, match=message):
        losses.holder_contamination(margin, beta=0.1, gamma=2.0)
    with pytest.raises(ValueError, match=message):
        losses.holder_flagged(margin, beta=0.1, gamma=2.0)


# --------------------------------------------------------------------------- log-probs.


def test_token_logps_equals_log_softmax_gather():
    rng = np.random.default_rng(5)
    logits_BTV = jnp.asarray(rng.normal(scale=5.0, size=(3, 7, 50)), jnp.float32)
    targets_BT = jnp.asarray(rng.integers(0, 50, size=(3, 7)))
    logits64 = np.asarray(logits_BTV, np.float64)
    shifted = logits64 - logits64.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    expected = np.take_along_axis(log_softmax, np.asarray(targets_BT)[..., None], axis=-1)[..., 0]
    got = losses.token_logps(logits_BTV, targets_BT)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # bf16 logits are promoted to float32 before the logsumexp.
    got_bf16 = losses.token_logps(logits_BTV.astype(jnp.bfloat16), targets_BT)
    assert got_bf16.dtype == jnp.float32


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 16, 64])
def test_chunked_token_logps_equals_plain(chunk_size):
    rng = np.random.default_rng(6)
    hidden_BTD = jnp.asarray(rng.normal(size=(2, 16, 32)), jnp.float32)
    unembed_DV = jnp.asarray(rng.normal(scale=0.3, size=(32, 300)), jnp.float32)
    targets_BT = jnp.asarray(rng.integers(0, 300, size=(2, 16)))
    mask_BT = jnp.asarray(rng.random((2, 16)) < 0.7, jnp.float32)

    def plain(hidden, unembed):
        logits_BTV = jnp.einsum("btd,dv->btv", hidden, unembed)
        return losses.sequence_logps(losses.token_logps(logits_BTV, targets_BT), mask_BT)

    def chunked(hidden, unembed):
        logps_BT = losses.chunked_token_logps(hidden, unembed, targets_BT, chunk_size=chunk_size)
        return losses.sequence_logps(logps_BT, mask_BT)

    # Same float32 dot products per logit; only the summation grouping may differ.
    np.testing.assert_allclose(
        chunked(hidden_BTD, unembed_DV), plain(hidden_BTD, unembed_DV), rtol=1e-6, atol=1e-5
    )
    grads_plain = jax.grad(lambda h, u: jnp.sum(plain(h, u)), argnums=(0, 1))(
        hidden_BTD, unembed_DV
    )
    grads_chunk = jax.jit(jax.grad(lambda h, u: jnp.sum(chunked(h, u)), argnums=(0, 1)))(
        hidden_BTD, unembed_DV
    )
    for a, b in zip(grads_chunk, grads_plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_chunked_token_logps_never_builds_the_full_logits():
    """The compiled chunked function holds at most one chunk of logits: no [B, T, V] buffer."""
    hidden_BTD = jax.ShapeDtypeStruct((2, 64, 16), jnp.float32)
    unembed_DV = jax.ShapeDtypeStruct((16, 4096), jnp.float32)
    targets_BT = jax.ShapeDtypeStruct((2, 64), jnp.int32)

    def loss(hidden, unembed, targets, chunk):
        return jnp.sum(losses.chunked_token_logps(hidden, unembed, targets, chunk_size=chunk))

    def temp_bytes(chunk):
        compiled = (
            jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=3)
            .lower(hidden_BTD, unembed_DV, targets_BT, chunk)
            .compile()
        )
        return compiled.memory_analysis().temp_size_in_bytes

    full_logits_bytes = 2 * 64 * 4096 * 4
    assert temp_bytes(64) >= full_logits_bytes  # one chunk = whole sequence
    assert temp_bytes(8) < full_logits_bytes / 2


def test_sequence_and_segment_logps():
    logps_BT = jnp.asarray([[-1.0, -2.0, -3.0, -4.0], [-0.5, -0.5, -0.5, -0.5]])
    mask_BT = jnp.asarray([[0, 1, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_allclose(losses.sequence_logps(logps_BT, mask_BT), [-5.0, -2.0])
    np.testing.assert_allclose(losses.sequence_logps(logps_BT, mask_BT, average=True), [-2.5, -0.5])
    np.testing.assert_allclose(losses.sequence_logps(logps_BT, jnp.zeros((2, 4)), average=True), 0)
    # Two sequences packed in row 0, a third in row 1, padding (masked) with index 0.
    index_BT = jnp.asarray([[0, 0, 1, 1], [2, 2, 2, 0]])
    mask2_BT = jnp.asarray([[1, 1, 0, 1], [1, 1, 1, 0]])
    np.testing.assert_allclose(
        losses.segment_logps(logps_BT, mask2_BT, index_BT, 3), [-3.0, -4.0, -1.5]
    )
    np.testing.assert_allclose(losses.segment_token_counts(mask2_BT, index_BT, 3), [2, 1, 3])


def test_weighted_mean():
    loss_B = jnp.asarray([1.0, 2.0, jnp.nan, 4.0])
    weights_B = jnp.asarray([1.0, 3.0, 0.0, 0.0])
    np.testing.assert_allclose(losses.weighted_mean(loss_B, weights_B), 7.0 / 4.0)
    np.testing.assert_allclose(losses.weighted_mean(jnp.asarray([1.0, 3.0])), 2.0)
    assert float(losses.weighted_mean(loss_B, jnp.zeros(4))) == 0.0
    grad = jax.grad(lambda x: losses.weighted_mean(x, weights_B))(loss_B)
    np.testing.assert_allclose(grad, [0.25, 0.75, 0.0, 0.0])  # a NaN padding row stays out


# --------------------------------------------------------------------------- registry.


def test_registry_lists_every_spec_loss():
    assert set(losses.LOSSES) == {
        "dpo",
        "noise_aware",
        "ropo",
        "cdpo",
        "rdpo",
        "ipo",
        "hinge",
        "dpo_nll",
        "simpo",
        "dr_dpo",
        "lcpo_em",
        "holder_dpo",
    }
    assert losses.get_loss("ropo").defaults == {"beta": 0.1, "alpha": 14.0}
    assert losses.get_loss("holder_dpo").defaults == {"beta": 0.1, "holder_gamma": 2.0}
    assert not losses.get_loss("simpo").needs_reference
    assert losses.get_loss("dr_dpo").batch_level


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [
        ("dpoo", {}, "unknown loss 'dpoo'; choose one of"),
        ("dpo", {"alpha": 3.0}, "does not take hyper-parameter(s) ['alpha']"),
        ("cdpo", {}, "needs hyper-parameter(s) ['label_smoothing']"),
        ("rdpo", {}, "needs hyper-parameter(s) ['flip_rate']"),
        ("rdpo", {}, "set e.g. --config.loss.flip_rate=..."),  # the key the config has
        ("ropo", {"alpha": 0.0}, "alpha=0.0 is invalid"),
        ("ropo", {"alpha": -1.0}, "alpha=-1.0 is invalid"),
        ("dpo", {"beta": 0.0}, "beta=0.0 is invalid: beta must be > 0"),
        ("ropo", {"beta": -0.1}, "beta=-0.1 is invalid"),
        ("rdpo", {"flip_rate": 0.5}, "flip_rate=0.5 is invalid: rdpo needs 0 <= flip_rate < 0.5"),
        ("rdpo", {"flip_rate": 0.7}, "flip_rate=0.7 is invalid"),
        ("cdpo", {"label_smoothing": 0.6}, "label_smoothing=0.6 is invalid"),
        ("dpo", {"beta": float("nan")}, "beta=nan is invalid"),
        ("lcpo_em", {"eta": 0.2, "base": "simpo"}, "lcpo_em base='simpo' is not one of"),
        ("ipo", {"ipo_average": "yes"}, "ipo_average must be True or False"),
        (
            "holder_dpo",
            {"holder_gamma": 0.0},
            "holder_gamma=0.0 is invalid: holder_dpo needs holder_gamma > 0",
        ),
        ("holder_dpo", {"holder_gamma": -2.0}, "holder_gamma=-2.0 is invalid"),
        ("holder_dpo", {"holder_gamma": float("inf")}, "holder_gamma=inf is invalid"),
        # Its γ is not simpo's gamma (a different knob with another range and default).
        ("holder_dpo", {"gamma": 2.0}, "does not take hyper-parameter(s) ['gamma']"),
    ],
)
def test_registry_rejects_bad_configs_with_one_clear_message(name, hparams, message):
    with pytest.raises(ValueError) as error:
        losses.validate_hyperparams(name, hparams)
    assert message in str(error.value)


def test_loss_functions_validate_concrete_values_directly():
    z = jnp.zeros(2)
    with pytest.raises(ValueError, match="beta=0"):
        losses.dpo_loss(z, z, z, z, beta=0)
    with pytest.raises(ValueError, match=r"flip_rate=0\.5"):
        losses.rdpo_loss(z, z, z, z, beta=0.1, flip_rate=0.5)
    # Under jit the values are traced: no check, no error (validated before compiling).
    jax.jit(lambda b: losses.dpo_loss(z, z, z, z, beta=b)[0])(0.1)


def test_ropo_alpha_at_most_two_warns():
    with pytest.warns(UserWarning, match="alpha=2.0 <= 2") as record:
        losses.validate_hyperparams("ropo", {"alpha": 2.0})
    # The warning states w(−∞) ≥ w(0), which holds for every α ≤ 2; "monotone" holds only for
    # α ≤ 1 (test_ropo_weight_monotonicity_for_small_alpha).
    message = str(record[0].message)
    assert "w(-inf) >= w(0)" in message and "monotone" not in message
    with pytest.warns(UserWarning, match="alpha=1.0 <= 2"):
        losses.ropo_loss(*_logps_with_margin(jnp.zeros(2)), beta=0.1, alpha=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losses.validate_hyperparams("ropo", {"alpha": 2.5})


def test_registry_input_requirements():
    z = jnp.zeros(3)
    with pytest.raises(ValueError, match="needs reference log-probs"):
        losses.preference_loss("dpo", losses.PairLogps(z, z))
    with pytest.raises(ValueError, match=r"needs PairLogps.chosen_lengths"):
        losses.preference_loss("dpo_nll", losses.PairLogps(z, z, z, z), nll_weight=1.0)
    with pytest.raises(ValueError, match="ipo_average=True needs"):
        losses.preference_loss("ipo", losses.PairLogps(z, z, z, z), ipo_average=True)
    loss_B, _ = losses.preference_loss(
        "simpo", losses.PairLogps(z - 1, z - 2, None, None, z + 1, z + 1), gamma=0.0
    )
    assert loss_B.shape == (3,)
    picked = losses.hyperparams_from("rdpo", {"beta": 0.2, "alpha": 14, "flip_rate": 0.1})
    assert picked == {"beta": 0.2, "flip_rate": 0.1}


def test_preference_loss_is_jittable_and_a_pytree():
    logps = _pair_logps(seed=9, batch=8)
    fn = jax.jit(lambda lp: losses.preference_loss("ropo", lp, alpha=6.0)[0])
    np.testing.assert_allclose(
        fn(logps), losses.ropo_loss(*jax.tree.leaves(logps)[:4], beta=0.1, alpha=6.0)[0], rtol=1e-6
    )


# --------------------------------------------------------------------------- TRL parity.


def _trl_dpo_loss(loss_type, beta, label_smoothing, pc, pr, rc, rr, lengths_c, lengths_r):
    """Runs TRL's own ``DPOTrainer._compute_loss`` (trl 1.16) on given sequence log-probs.

    TRL computes its losses inside ``_compute_loss`` from a model forward, with no public
    function taking log-probs. We call that method on a trainer object built without
    ``__init__`` (only the attributes the method reads), with a stand-in model whose
    ``log_probs`` output puts each response's total log-prob on its first completion token, and
    with the reference log-probs passed precomputed — so TRL's own loss code runs on exactly
    our inputs. Returns TRL's batch-mean loss and its logged metrics.
    """
    torch = pytest.importorskip("torch")
    dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer")
    batch = len(pc)
    max_len = int(max(lengths_c.max(), lengths_r.max()))
    lengths = np.concatenate([lengths_c, lengths_r]).astype(int)
    completion_mask = torch.zeros((2 * batch, max_len + 1), dtype=torch.long)
    for row, n in enumerate(lengths):
        completion_mask[row, 1 : 1 + n] = 1  # token 0 is the prompt
    per_token = torch.zeros((2 * batch, max_len), dtype=torch.float64)
    per_token[:, 0] = torch.tensor(np.concatenate([pc, pr]), dtype=torch.float64)

    def model(**kwargs):
        shape = per_token.shape
        return types.SimpleNamespace(
            log_probs=per_token,
            entropy=torch.zeros(shape),
            mean_logits=torch.zeros(shape),
            is_top1=torch.zeros(shape, dtype=torch.bool),
        )

    model.training = True
    trainer = object.__new__(dpo_trainer.DPOTrainer)
    trainer.__dict__.update(
        model=model,
        accelerator=types.SimpleNamespace(
            device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x
        ),
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        f_divergence_type="reverse_kl",
        ld_alpha=None,
        precompute_ref_logps=True,
        aux_loss_enabled=False,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros((2 * batch, max_len + 1), dtype=torch.long),
        "attention_mask": torch.ones((2 * batch, max_len + 1), dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": torch.tensor(np.asarray(rc), dtype=torch.float64),
        "ref_rejected_logps": torch.tensor(np.asarray(rr), dtype=torch.float64),
    }
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    return float(loss), trainer._metrics["train"]


@pytest.mark.parametrize(
    ("trl_type", "ours", "hp"),
    [
        ("sigmoid", "dpo", {"beta": 0.1}),
        ("robust", "rdpo", {"beta": 0.1, "flip_rate": 0.2}),
        ("ipo", "ipo", {"beta": 0.1, "ipo_average": True}),
        ("hinge", "hinge", {"beta": 0.1}),
    ],
)
def test_matches_trl_dpo_trainer_losses(trl_type, ours, hp):
    """TRL 1.16 has no conservative DPO: its ``sigmoid`` loss ignores ``label_smoothing``
    (checked in ``test_trl_sigmoid_has_no_label_smoothing``), so cdpo relies on the NumPy
    reference and the flip-expectation identity above."""
    logps = _pair_logps(seed=13, batch=16)
    arrays = [np.asarray(a, np.float64) for a in jax.tree.leaves(logps)]
    pc, pr, rc, rr, len_c, len_r = arrays
    smoothing = hp.get("label_smoothing", hp.get("flip_rate", 0.0))
    trl_loss, trl_metrics = _trl_dpo_loss(
        trl_type, hp["beta"], smoothing, pc, pr, rc, rr, len_c, len_r
    )
    loss_B, aux = losses.preference_loss(ours, logps, **hp)
    np.testing.assert_allclose(float(jnp.mean(loss_B)), trl_loss, rtol=1e-5)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        np.testing.assert_allclose(
            float(jnp.mean(aux[key])), trl_metrics[key][0], rtol=1e-5, atol=1e-6
        )


def test_trl_sigmoid_has_no_label_smoothing():
    logps = _pair_logps(seed=13, batch=16)
    pc, pr, rc, rr, len_c, len_r = (np.asarray(a, np.float64) for a in jax.tree.leaves(logps))
    trl_loss, _ = _trl_dpo_loss("sigmoid", 0.1, 0.15, pc, pr, rc, rr, len_c, len_r)
    dpo_B, _ = losses.dpo_loss(*jax.tree.leaves(logps)[:4], beta=0.1)
    cdpo_B, _ = losses.cdpo_loss(*jax.tree.leaves(logps)[:4], beta=0.1, label_smoothing=0.15)
    np.testing.assert_allclose(trl_loss, float(jnp.mean(dpo_B)), rtol=1e-5)
    assert abs(trl_loss - float(jnp.mean(cdpo_B))) > 1e-3


def test_registry_gradient_weight_matches_closed_forms():
    margin_B = jnp.linspace(-100.0, 100.0, 201)
    z = 0.1 * margin_B
    np.testing.assert_allclose(
        losses.gradient_weight("dpo", margin_B), jax.nn.sigmoid(-z), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        losses.gradient_weight("ropo", margin_B, alpha=6.0),
        losses.ropo_gradient_weight(margin_B, beta=0.1, alpha=6.0),
        rtol=1e-5,
        atol=1e-7,
    )
    # cDPO: (1−ε)σ(−z) − εσ(z); rDPO: [(1−ε)σ(−z) + εσ(z)] / (1−2ε).
    np.testing.assert_allclose(
        losses.gradient_weight("cdpo", margin_B, label_smoothing=0.1),
        0.9 * jax.nn.sigmoid(-z) - 0.1 * jax.nn.sigmoid(z),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        losses.gradient_weight("rdpo", margin_B, flip_rate=0.2),
        (0.8 * jax.nn.sigmoid(-z) + 0.2 * jax.nn.sigmoid(z)) / 0.6,
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="not 'simpo'"):
        losses.gradient_weight("simpo", margin_B, gamma=0.5)
