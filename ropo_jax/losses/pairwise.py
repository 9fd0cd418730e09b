"""Per-example preference losses of docs/method.md §2, pure ``jax.numpy``.

Every loss takes the four sequence log-probabilities of a batch of pairs and keyword
hyper-parameters, and returns ``(loss_B, aux)``; the caller reduces with ``weighted_mean``.
The margin is h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)] and β is applied
exactly once, as z = β·h. ``aux`` holds per-example arrays under TRL's metric names.

Shape key: B batch (pairs).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ropo_jax.losses.logprobs import weighted_mean

Aux = dict[str, jax.Array]


# One validity rule per hyper-parameter: (predicate on a concrete value, what is required).
# Used by every loss below and by the registry, so a bad value fails the same way everywhere.
HYPERPARAM_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "beta": (lambda b: b > 0, "beta must be > 0 (it scales the margin, β·h)"),
    "alpha": (lambda a: a > 0, "alpha must be > 0 (paper's default 14; ablations 6, 14, 30)"),
    "label_smoothing": (lambda e: 0 <= e <= 0.5, "cdpo needs 0 <= label_smoothing <= 0.5"),
    "flip_rate": (lambda e: 0 <= e < 0.5, "rdpo needs 0 <= flip_rate < 0.5 (assumed flip rate)"),
    "nll_weight": (lambda w: w >= 0, "dpo_nll needs nll_weight >= 0"),
    "gamma": (lambda g: True, "simpo's gamma must be a finite number"),
    "beta_prime": (lambda b: b > 0, "dr_dpo needs beta_prime > 0"),
    "eta": (lambda e: 0 < e < 0.5, "lcpo_em needs 0 < eta < 0.5 (initial flip-rate estimate)"),
    # Hölder-DPO's γ is its own knob, not simpo's ``gamma``: the two mean different things and
    # have different ranges and defaults (as cdpo's and rdpo's ε are label_smoothing/flip_rate).
    "holder_gamma": (
        lambda g: g > 0,
        "holder_dpo needs holder_gamma > 0 (the Hölder exponent γ; paper's ablation 1, 2, 4, 6, 8)",
    ),
}


def check_hyperparam(name: str, value) -> None:
    """Raises ValueError for an invalid concrete value; traced values (under jit) pass through."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return
    ok, requirement = HYPERPARAM_RULES[name]
    if not (math.isfinite(value) and ok(float(value))):
        raise ValueError(f"loss hyper-parameter {name}={value!r} is invalid: {requirement}")


def _check_beta(beta) -> None:
    check_hyperparam("beta", beta)


def pair_statistics(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta,
) -> Aux:
    """Margin h and the implicit rewards r̂(y) = β·[log π(y) − log π_ref(y)] (docs/method.md §1)."""
    chosen_logratio_B = policy_chosen_logps - ref_chosen_logps
    rejected_logratio_B = policy_rejected_logps - ref_rejected_logps
    margin_B = chosen_logratio_B - rejected_logratio_B
    return {
        "margin": margin_B,
        "rewards/chosen": beta * chosen_logratio_B,
        "rewards/rejected": beta * rejected_logratio_B,
        "rewards/margins": beta * margin_B,
        "rewards/accuracies": (margin_B > 0).astype(jnp.float32),
        "logps/chosen": policy_chosen_logps,
        "logps/rejected": policy_rejected_logps,
    }


def dpo_loss(
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta
) -> tuple[jax.Array, Aux]:
    """DPO, docs/method.md §2.2: −log σ(βh)."""
    _check_beta(beta)
    aux = pair_statistics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta
    )
    return jax.nn.softplus(-beta * aux["margin"]), aux


def noise_aware_loss(
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta
) -> tuple[jax.Array, Aux]:
    """The noise-aware loss ℓ_na of docs/method.md §2.2: σ(−βh); symmetric, ℓ_na(h) + ℓ_na(−h) =
    1."""
    _check_beta(beta)
    aux = pair_statistics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta
    )
    return jax.nn.sigmoid(-beta * aux["margin"]), aux


def ropo_normaliser(alpha):
    """c = 4α/(1+α)², which makes the maximum ROPO gradient weight exactly 1 for α ≥ 1
    (docs/method.md §2.4); for α < 1 the weight peaks at w(−∞) = c < 1."""
    return 4.0 * alpha / (1.0 + alpha) ** 2


def check_ropo_alpha(alpha) -> None:
    """α must be > 0; α ≤ 2 warns, because only α > 2 down-weights confidently contradicted
    pairs (w(−∞) < w(0) iff α > 2, docs/method.md §2.4). The weight is monotone in the margin
    only for α ≤ 1, so the warning states the w(−∞) ≥ w(0) fact, not monotonicity."""
    check_hyperparam("alpha", alpha)
    if isinstance(alpha, numbers.Real) and alpha <= 2:
        warnings.warn(
            f"ropo alpha={alpha} <= 2: pairs the model confidently contradicts (likely flipped "
            "labels) are then weighted at least as much as undecided ones (w(-inf) >= w(0)), "
            "so they are NOT down-weighted; use alpha > 2 (paper: 6, 14, 30)",
            UserWarning,
            stacklevel=3,
        )


def ropo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta,
    alpha,
) -> tuple[jax.Array, Aux]:
    """ROPO, docs/method.md §2.4: c·[−log σ(βh) + α·σ(−βh)] with c = 4α/(1+α)²."""
    _check_beta(beta)
    check_ropo_alpha(alpha)
    aux = pair_statistics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta
    )
    z_B = beta * aux["margin"]
    loss_B = ropo_normaliser(alpha) * (jax.nn.softplus(-z_B) + alpha * jax.nn.sigmoid(-z_B))
    return loss_B, aux


def ropo_gradient_weight(margin, *, beta, alpha):
    """w(h) = −∂ℓ_ropo/∂(βh) = c·σ(−βh)·(1 + α·σ(βh)), docs/method.md §2.4.

    Its supremum over h is 1 for α ≥ 1 (at βh* = log((α−1)/(α+1))); for α < 1 it is c < 1.
    """
    z = beta * jnp.asarray(margin, jnp.float32)
    return ropo_normaliser(alpha) * jax.nn.sigmoid(-z) * (1.0 + alpha * jax.nn.sigmoid(z))


def cdpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta,
    label_smoothing,
) -> tuple[jax.Array, Aux]:
    """Conservative DPO, docs/method.md §2.2: −(1−ε)·log σ(βh) − ε·log σ(−βh) (TRL's ``sigmoid``
    with label smoothing)."""
    _check_beta(beta)
    check_hyperparam("label_smoothing", label_smoothing)
    aux = pair_statistics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta
    )
    z_B = beta * aux["margin"]
    loss_B = (1 - label_smoothing) * jax.nn.softplus(-z_B) + label_smoothing * jax.nn.softplus(z_B)
    return loss_B, aux


def rdpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta,
    flip_rate,
) -> tuple[jax.Array, Aux]:
    """Provably robust DPO (Chowdhury et al. 2024), docs/method.md §2.2:
    [−(1−ε)·log σ(βh) + ε·log σ(−βh)] / (1−2ε), ε the assumed flip rate (< 0.5)."""
    _check_beta(beta)
    check_hyperparam("flip_rate", flip_rate)
    aux = pair_statistics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta
    )
    z_B = beta * aux["margin"]
    loss_B = ((1 - flip_rate) * jax.nn.softplus(-z_B) - flip_rate * jax.nn.softplus(z_B)) / (
        1 - 2 * flip_rate
    )
    return loss_B, aux


def ipo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta,
    chosen_lengths=None,
    rejected_lengths=None,
) -> tuple[jax.Array, Aux]:
    """IPO, docs/method.md §2.2: (h − 1/(2β))², β playing IPO's τ.

    With ``chosen_lengths``/``rejected_lengths`` the log-ratios inside the loss are averaged per
    token (TRL's IPO does this); without them they are summed, as in the formula of
    docs/method.md §2.2. ``aux`` always reports the summed margin and rewards of docs/method.md §1
    (as TRL logs them); the per-token margin is ``aux["ipo/margin_per_token"]`` when lengths are
    given.
    """
    _check_beta(beta)
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("ipo: give both chosen_lengths and rejected_lengths, or neither")
    aux = pair_statistics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta
    )
    margin_B = aux["margin"]
    if chosen_lengths is not None:
        chosen_logratio_B = (policy_chosen_logps - ref_chosen_logps) / jnp.maximum(
            chosen_lengths, 1
        )
        rejected_logratio_B = (policy_rejected_logps - ref_rejected_logps) / jnp.maximum(
            rejected_lengths, 1
        )
        margin_B = chosen_logratio_B - rejected_logratio_B
        aux["ipo/margin_per_token"] = margin_B
    return (margin_B - 1.0 / (2.0 * beta)) ** 2, aux


def hinge_loss(
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta
) -> tuple[jax.Array, Aux]:
    """SLiC-HF style hinge, docs/method.md §2.2: max(0, 1 − βh)."""
    _check_beta(beta)
    aux = pair_statistics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta
    )
    return jax.nn.relu(1.0 - beta * aux["margin"]), aux


@jax.custom_jvp
def _holder_of_z(z_B, holder_gamma):
    """ℓ(z) = −σ(z)^γ·(1 + γ·σ(−z)), which equals −(1+γ)·σ(z)^γ + γ·σ(z)^(1+γ).

    σ(z)^γ = exp(γ·log σ(z)) with log σ from ``log_sigmoid``: finite for every finite z, and
    no power of a σ that rounded to 0. The value has no cancellation (every factor is positive).
    """
    sigma_pow_B = jnp.exp(holder_gamma * jax.nn.log_sigmoid(z_B))
    return -sigma_pow_B * (1.0 + holder_gamma * jax.nn.sigmoid(-z_B))


@_holder_of_z.defjvp
def _holder_of_z_jvp(primals, tangents):
    """The closed-form derivatives (docs/method.md §2.7). Autodiff through the value would sum
    two opposite terms whose difference, γ(1+γ)·σ^γ·σ(−z)², is below float32 resolution for
    z ≳ 17: the weight of confident pairs would come out as rounding noise of either sign."""
    z_B, holder_gamma = primals
    dz_B, dgamma = tangents
    log_sigma_B = jax.nn.log_sigmoid(z_B)
    sigma_pow_B = jnp.exp(holder_gamma * log_sigma_B)
    sigma_neg_B = jax.nn.sigmoid(-z_B)
    value_B = -sigma_pow_B * (1.0 + holder_gamma * sigma_neg_B)
    dz_coeff_B = -holder_gamma * (1.0 + holder_gamma) * sigma_pow_B * sigma_neg_B**2
    # ∂ℓ/∂γ = −σ^γ·[log σ·(1 + γ·σ(−z)) + σ(−z)], for whoever differentiates through γ.
    dgamma_coeff_B = -sigma_pow_B * (log_sigma_B * (1.0 + holder_gamma * sigma_neg_B) + sigma_neg_B)
    return value_B, dz_coeff_B * dz_B + dgamma_coeff_B * dgamma


def holder_dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta,
    gamma,
) -> tuple[jax.Array, Aux]:
    """Hölder-DPO (Fujisawa, Adachi & Osborne 2025), docs/method.md §2.7:
    −(1+γ)·σ(βh)^γ + γ·σ(βh)^(1+γ), γ = ``gamma`` > 0 (the registry's and config's knob
    ``holder_gamma``: simpo's ``gamma`` is another quantity); values in [−1, 0].

    Its gradient weight γ(1+γ)·σ(βh)^γ·σ(−βh)² vanishes as h → −∞ (redescending): a pair the
    model confidently contradicts stops pulling on it. Value and gradient are finite for every
    finite h, and the gradient is the closed form (``_holder_of_z``), exact in sign for every h.
    """
    _check_beta(beta)
    check_hyperparam("holder_gamma", gamma)
    aux = pair_statistics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta
    )
    z_B = beta * aux["margin"]
    # A float array, so that an integer γ (gamma=2) still has a float tangent.
    return _holder_of_z(z_B, jnp.asarray(gamma, z_B.dtype)), aux


def holder_dpo_registry_loss(*logps, beta, holder_gamma) -> tuple[jax.Array, Aux]:
    """``holder_dpo_loss`` under the registry's knob names (config ``loss.holder_gamma``)."""
    return holder_dpo_loss(*logps, beta=beta, gamma=holder_gamma)


def dpo_nll_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta,
    nll_weight,
    chosen_lengths,
) -> tuple[jax.Array, Aux]:
    """DPO + SFT regulariser ("RPO"), docs/method.md §2.2: dpo + λ·NLL(y_w)/|y_w|."""
    check_hyperparam("nll_weight", nll_weight)
    dpo_B, aux = dpo_loss(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta
    )
    nll_B = -policy_chosen_logps / jnp.maximum(chosen_lengths, 1)
    aux["nll/chosen"] = nll_B
    return dpo_B + nll_weight * nll_B, aux


def simpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps=None,
    ref_rejected_logps=None,
    *,
    beta,
    gamma,
    chosen_lengths,
    rejected_lengths,
) -> tuple[jax.Array, Aux]:
    """SimPO (reference-free), docs/method.md §2.2: −log σ(β/|y_w|·log π(y_w) − β/|y_l|·log π(y_l) −
    γ).

    The reference log-probs are ignored. aux's "margin" is the length-normalised log-prob
    difference (the quantity β multiplies) and its rewards are β·(average log-prob).
    """
    _check_beta(beta)
    check_hyperparam("gamma", gamma)
    chosen_avg_B = policy_chosen_logps / jnp.maximum(chosen_lengths, 1)
    rejected_avg_B = policy_rejected_logps / jnp.maximum(rejected_lengths, 1)
    zeros_B = jnp.zeros_like(chosen_avg_B)
    aux = pair_statistics(chosen_avg_B, rejected_avg_B, zeros_B, zeros_B, beta=beta)
    aux["logps/chosen"] = policy_chosen_logps
    aux["logps/rejected"] = policy_rejected_logps
    return jax.nn.softplus(-(beta * aux["margin"] - gamma)), aux


def dr_dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta,
    beta_prime,
    weights=None,
) -> tuple[jax.Array, Aux]:
    """Distributionally robustified DPO, docs/method.md §2.2: −β′·log mean_batch exp(−dpo_i/β′).

    A batch-level objective: every entry of the returned ``loss_B`` holds the batch value, so
    ``weighted_mean(loss_B, weights)`` returns it and its gradient exactly. ``weights`` (0 for
    padding or filtered pairs) weight the mean inside the log. The per-example DPO losses are in
    ``aux["dpo"]``. Under gradient accumulation the objective is taken per micro-batch.
    """
    check_hyperparam("beta_prime", beta_prime)
    dpo_B, aux = dpo_loss(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta
    )
    weights_B = jnp.ones_like(dpo_B) if weights is None else weights.astype(jnp.float32)
    total_weight = jnp.sum(weights_B)
    # log of the weighted mean of exp(−dpo/β′); zero weights become −inf logits and drop out.
    log_mean = jax.nn.logsumexp(-dpo_B / beta_prime + jnp.log(weights_B)) - jnp.log(total_weight)
    batch_loss = jnp.where(total_weight > 0, -beta_prime * log_mean, 0.0)
    aux["dpo"] = dpo_B
    return jnp.broadcast_to(batch_loss, dpo_B.shape), aux


def lcpo_e_step(margin_B, *, beta, eta):
    """E-step of latent-collective EM (docs/method.md §2.3): posterior that the label is correct,
    p = (1−η)σ(βh) / ((1−η)σ(βh) + ησ(−βh)), with the gradient stopped."""
    z_B = beta * margin_B
    # log-space for stability: p = σ(z + log((1−η)/η)).
    posterior_B = jax.nn.sigmoid(z_B + jnp.log1p(-eta) - jnp.log(eta))
    return jax.lax.stop_gradient(posterior_B)


def lcpo_m_step(posterior_N, weights_N=None):
    """M-step (docs/method.md §2.3): η ← 1 − mean(p) over a data set's posteriors.

    Meant to run once per epoch, but the training loop does not call it: during a run η stays at
    ``config.loss.eta``. It is a function to call yourself, on the posteriors ``lcpo_e_step``
    gives for every pair's margin, to re-estimate the flip rate.
    """
    return 1.0 - weighted_mean(jnp.asarray(posterior_N, jnp.float32), weights_N)


# Base losses lcpo_em can wrap: those whose inputs are only the four log-probs, so that
# ℓ(−h) is exactly the same function with chosen and rejected swapped.
LCPO_BASES = {
    "dpo": dpo_loss,
    "ropo": ropo_loss,
    "hinge": hinge_loss,
    "noise_aware": noise_aware_loss,
}


def lcpo_em_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta,
    eta,
    base: str = "dpo",
    **base_hyperparams,
) -> tuple[jax.Array, Aux]:
    """Latent-collective EM re-weighting (docs/method.md §2.2, §2.3): p·ℓ(h) + (1−p)·ℓ(−h) with p
    from the E-step.

    ℓ(−h) is the base loss with chosen and rejected swapped. η is the flip-rate estimate; the
    training loop keeps it fixed at ``config.loss.eta`` (``lcpo_m_step`` re-estimates it from
    posteriors when called).
    """
    check_hyperparam("eta", eta)
    if base not in LCPO_BASES:
        raise ValueError(f"lcpo_em base={base!r} is not one of {sorted(LCPO_BASES)}")
    base_fn = LCPO_BASES[base]
    forward_B, aux = base_fn(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta=beta,
        **base_hyperparams,
    )
    swapped_B, _ = base_fn(
        policy_rejected_logps,
        policy_chosen_logps,
        ref_rejected_logps,
        ref_chosen_logps,
        beta=beta,
        **base_hyperparams,
    )
    posterior_B = lcpo_e_step(aux["margin"], beta=beta, eta=eta)
    aux["lcpo/posterior"] = posterior_B
    return posterior_B * forward_B + (1.0 - posterior_B) * swapped_B, aux
