"""Loss registry: config names → loss functions, with declared inputs and hyper-parameters.

``preference_loss(name, PairLogps(...), **hparams)`` is how the training engine calls any loss;
``validate_hyperparams`` turns an unknown name, a missing knob, an unexpected knob or an invalid
value into one clear ValueError before anything is compiled.

Shape key: B batch (pairs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

from ropo_jax.losses import pairwise

DEFAULT_BETA = 0.1  # docs/method.md §3.7: defaults for real runs.
DEFAULT_ALPHA = 14.0
# Hölder-DPO's γ (docs/method.md §2.7): a value of the paper's ablation grid {1, 2, 4, 6, 8}.
DEFAULT_HOLDER_GAMMA = 2.0


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """What a loss needs. Knobs in ``hyperparams`` without an entry in ``defaults`` are required."""

    name: str
    fn: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
    hyperparams: tuple[str, ...]
    defaults: Mapping[str, Any]
    needs_reference: bool = True
    # Names of PairLogps fields passed to ``fn`` as keyword arguments (besides the log-probs).
    extra_inputs: tuple[str, ...] = ()
    # True when the objective couples the examples of a batch (not a sum of per-example terms).
    batch_level: bool = False
    description: str = ""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PairLogps:
    """Sequence log-probabilities of a batch of pairs, [B] float32 each (docs/method.md §1).

    ``chosen_lengths``/``rejected_lengths`` are response token counts (for length-normalised
    losses); ``weights`` are per-pair weights (0 for padding or filtered pairs).
    """

    policy_chosen: jax.Array
    policy_rejected: jax.Array
    ref_chosen: jax.Array | None = None
    ref_rejected: jax.Array | None = None
    chosen_lengths: jax.Array | None = None
    rejected_lengths: jax.Array | None = None
    weights: jax.Array | None = None


_BETA = {"beta": DEFAULT_BETA}
LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("dpo", pairwise.dpo_loss, ("beta",), _BETA, description="−log σ(βh)"),
        LossSpec("noise_aware", pairwise.noise_aware_loss, ("beta",), _BETA, description="σ(−βh)"),
        LossSpec(
            "ropo",
            pairwise.ropo_loss,
            ("beta", "alpha"),
            {"beta": DEFAULT_BETA, "alpha": DEFAULT_ALPHA},
            description="c·[−log σ(βh) + α·σ(−βh)], c = 4α/(1+α)²",
        ),
        LossSpec(
            "cdpo",
            pairwise.cdpo_loss,
            ("beta", "label_smoothing"),
            _BETA,
            description="−(1−ε)·log σ(βh) − ε·log σ(−βh)",
        ),
        LossSpec(
            "rdpo",
            pairwise.rdpo_loss,
            ("beta", "flip_rate"),
            _BETA,
            description="[−(1−ε)·log σ(βh) + ε·log σ(−βh)] / (1−2ε)",
        ),
        LossSpec(
            "ipo",
            pairwise.ipo_loss,
            ("beta", "ipo_average"),
            {"beta": DEFAULT_BETA, "ipo_average": False},
            description="(h − 1/(2β))²; ipo_average=True averages log-ratios per token",
        ),
        LossSpec("hinge", pairwise.hinge_loss, ("beta",), _BETA, description="max(0, 1 − βh)"),
        LossSpec(
            "holder_dpo",
            pairwise.holder_dpo_registry_loss,
            ("beta", "holder_gamma"),
            {"beta": DEFAULT_BETA, "holder_gamma": DEFAULT_HOLDER_GAMMA},
            description="−(1+γ)·σ(βh)^γ + γ·σ(βh)^(1+γ), γ = holder_gamma; redescending",
        ),
        LossSpec(
            "dpo_nll",
            pairwise.dpo_nll_loss,
            ("beta", "nll_weight"),
            _BETA,
            extra_inputs=("chosen_lengths",),
            description="dpo + λ·NLL(y_w)/|y_w|",
        ),
        LossSpec(
            "simpo",
            pairwise.simpo_loss,
            ("beta", "gamma"),
            _BETA,
            needs_reference=False,
            extra_inputs=("chosen_lengths", "rejected_lengths"),
            description="−log σ(β·avg log π(y_w) − β·avg log π(y_l) − γ), reference-free",
        ),
        LossSpec(
            "dr_dpo",
            pairwise.dr_dpo_loss,
            ("beta", "beta_prime"),
            _BETA,
            extra_inputs=("weights",),
            batch_level=True,
            description="−β′·log mean_batch exp(−dpo_i/β′)",
        ),
        LossSpec(
            "lcpo_em",
            pairwise.lcpo_em_loss,
            ("beta", "eta", "base", "alpha"),
            {"beta": DEFAULT_BETA, "base": "dpo", "alpha": DEFAULT_ALPHA},
            description="p·ℓ(h) + (1−p)·ℓ(−h), p the EM posterior of a correct label",
        ),
    )
}


def get_loss(name: str) -> LossSpec:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def validate_hyperparams(name: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the loss's complete hyper-parameters (defaults filled in) or raises ValueError."""
    spec = get_loss(name)
    unexpected = sorted(set(hparams) - set(spec.hyperparams))
    if unexpected:
        raise ValueError(
            f"loss {name!r} does not take hyper-parameter(s) {unexpected}; "
            f"it takes {list(spec.hyperparams)}"
        )
    resolved = {**spec.defaults, **hparams}
    missing = [k for k in spec.hyperparams if k not in resolved]
    if missing:
        raise ValueError(
            f"loss {name!r} needs hyper-parameter(s) {missing} (no default: the value is a "
            f"modelling choice); set e.g. --config.loss.{missing[0]}=..."
        )
    for key, value in resolved.items():
        if key in pairwise.HYPERPARAM_RULES:
            pairwise.check_hyperparam(key, value)
    if name == "ropo" or (name == "lcpo_em" and resolved["base"] == "ropo"):
        pairwise.check_ropo_alpha(resolved["alpha"])
    if name == "lcpo_em" and resolved["base"] not in pairwise.LCPO_BASES:
        raise ValueError(
            f"lcpo_em base={resolved['base']!r} is not one of {sorted(pairwise.LCPO_BASES)}"
        )
    if name == "ipo" and not isinstance(resolved["ipo_average"], bool):
        raise ValueError(f"ipo_average must be True or False, got {resolved['ipo_average']!r}")
    return resolved


def hyperparams_from(name: str, mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Picks the knobs ``name`` takes from a larger mapping (e.g. a config) and validates them."""
    spec = get_loss(name)
    return validate_hyperparams(name, {k: mapping[k] for k in spec.hyperparams if k in mapping})


def preference_loss(name: str, logps: PairLogps, **hparams) -> tuple[jax.Array, dict]:
    """Per-example loss ``loss_B`` and diagnostics ``aux`` of the registered loss ``name``."""
    spec = get_loss(name)
    kwargs = validate_hyperparams(name, hparams)
    if spec.needs_reference and (logps.ref_chosen is None or logps.ref_rejected is None):
        raise ValueError(
            f"loss {name!r} needs reference log-probs (PairLogps.ref_chosen/ref_rejected): "
            "compute them with the reference model or use the cached reference"
        )
    if name == "ipo" and kwargs.pop("ipo_average"):
        kwargs.update(chosen_lengths=logps.chosen_lengths, rejected_lengths=logps.rejected_lengths)
        if logps.chosen_lengths is None or logps.rejected_lengths is None:
            raise ValueError("ipo with ipo_average=True needs PairLogps.chosen/rejected_lengths")
    if name == "lcpo_em" and kwargs["base"] != "ropo":
        kwargs.pop("alpha")
    for field in spec.extra_inputs:
        value = getattr(logps, field)
        if value is None and field != "weights":
            raise ValueError(f"loss {name!r} needs PairLogps.{field} (response token counts)")
        kwargs[field] = value
    return spec.fn(
        logps.policy_chosen, logps.policy_rejected, logps.ref_chosen, logps.ref_rejected, **kwargs
    )


def gradient_weight(name: str, margin_B, **hparams) -> jax.Array:
    """−∂ℓ/∂(βh) of the registered loss at margins h, by autodiff
    (docs/method.md §1 "Gradient weight", §2.2).

    The weight a loss gives a pair in the update direction ∇h: DPO's is σ(−βh); ROPO's closed
    form is ``ropo_gradient_weight``. Defined for losses of the four log-probs alone (not the
    length-normalised or batch-level ones).
    """
    spec = get_loss(name)
    if spec.extra_inputs or spec.batch_level or not spec.needs_reference:
        raise ValueError(f"gradient_weight is defined for per-example margin losses, not {name!r}")
    kwargs = validate_hyperparams(name, hparams)
    if name == "lcpo_em" and kwargs["base"] != "ropo":
        kwargs.pop("alpha")
    kwargs.pop("ipo_average", None)
    beta = kwargs["beta"]

    def total_loss(margin):
        zeros = jax.numpy.zeros_like(margin)
        loss_B, _ = spec.fn(margin, zeros, zeros, zeros, **kwargs)
        return jax.numpy.sum(loss_B)

    margin_B = jax.numpy.asarray(margin_B, jax.numpy.float32)
    return -jax.grad(total_loss)(margin_B) / beta
