"""Train state and the pure, jitted train steps (preference and SFT).

``preference_step(state, batch) -> (state, metrics)`` for any loss of the registry: policy
sequence log-probs from the batch's token rows (the LM head on response positions only, chunked
over positions), reference log-probs from the batch (cached) or from frozen reference
parameters (online), per-example weights (padding, ROPO filter weights, optional in-batch
filtering), gradient accumulation over a leading micro-batch axis with exact (sum, count)
reduction — k micro-batches of b give exactly the update of one batch of k·b — global-norm
clipping, a NaN/Inf guard, and donation of the state.

Metrics are returned as sums and counts (``metrics.finalize`` divides on the host), so means are
exact across micro-batches and hosts.

With LoRA (``ModelConfig.lora``, docs/lora.md) the state's parameters are the adapters only, so
gradients, the optimizer state and checkpoints cover them alone; the step's ``ref_params``
argument is then the frozen base, never differentiated nor donated: the model is the base with
the adapters (``models.lora.attach``), the reference (online mode) the base alone.

Shape key: K micro-batches, B pairs, R token rows, T length, C completion positions per row,
S sequence slots (2B).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ropo_jax import losses, models
from ropo_jax.inference.logps import sequence_logps
from ropo_jax.losses import filtering
from ropo_jax.models import ModelConfig
from ropo_jax.models import lora as lora_lib
from ropo_jax.parallel import sharding
from ropo_jax.training import metrics as metrics_lib

NAN_POLICIES = ("skip", "stop")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    params: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static options of a train step (hashable: part of the compiled function's identity)."""

    loss: str = "dpo"
    hyperparams: tuple[tuple[str, Any], ...] = ()  # loss knobs, as sorted (key, value) pairs
    logps_chunk_size: int = 256
    in_batch_filter_ratio: float = 0.0  # ROPO's filter_granularity=batch
    online_reference: bool = False
    nan_policy: str = "skip"
    # The batches' rows hold one right-padded sequence each (loader modes padded/bucketed, not
    # packed): lets a "cudnn" model use cuDNN's flash kernel (models.hidden_states).
    one_sequence_per_row: bool = False

    @property
    def loss_hyperparams(self) -> dict[str, Any]:
        return dict(self.hyperparams)


def init_state(model_config: ModelConfig, optimizer, rng, params=None, base=None) -> TrainState:
    """A fresh state (random parameters unless ``params`` given; with LoRA, fresh adapters for
    the ``base`` parameters, arrays or shapes). Pure: jit it with
    ``out_shardings=state_shardings(...)`` so nothing is materialised on a single device."""
    init_rng, state_rng = jax.random.split(rng)
    if params is None and model_config.lora is not None:
        if base is None:
            raise ValueError("init_state: LoRA adapters are initialised for a base; pass base")
        dtype = jnp.dtype(model_config.param_dtype)
        params = lora_lib.init_adapters(model_config.lora, base["layers"], init_rng, dtype)
    elif params is None:
        params = models.init_params(model_config, init_rng)
    # Raw key data (uint32), so the RNG checkpoints like any array.
    return TrainState(
        params, optimizer.init(params), jnp.zeros((), jnp.int32), jax.random.key_data(state_rng)
    )


def trainable_logical_axes(model_config: ModelConfig) -> dict:
    """The logical axes of the trained parameters: the model's, or with LoRA the adapters' (each
    following the weight it adapts, ``models.lora.logical_axes``)."""
    axes = models.param_logical_axes(model_config)
    if model_config.lora is None:
        return axes
    return lora_lib.logical_axes(model_config.lora, axes)


def state_shardings(model_config: ModelConfig, optimizer, mesh, abstract_state: TrainState):
    """NamedShardings for a TrainState: parameters and optimizer moments by logical axes."""
    param_shardings = sharding.tree_shardings(
        mesh, trainable_logical_axes(model_config), abstract_state.params
    )
    opt_shardings = optax.tree_map_params(
        optimizer,
        lambda _, s: s,
        abstract_state.opt_state,
        param_shardings,
        transform_non_params=lambda _: sharding.replicated(mesh),
    )
    replicated = sharding.replicated(mesh)
    return TrainState(param_shardings, opt_shardings, replicated, replicated)


def _model_params(model_config: ModelConfig, trainable, ref_params):
    """The parameters the forward pass runs: the trained ones, or with LoRA the frozen base
    (``ref_params``) with the trained adapters."""
    if model_config.lora is None:
        return trainable
    return lora_lib.attach(ref_params, trainable)


def _pair_logps(
    config: StepConfig, model_config, params, ref_params, batch, lora_rng=None
) -> losses.PairLogps:
    layout = dict(one_sequence_per_row=config.one_sequence_per_row)
    logps_S, _ = sequence_logps(
        model_config,
        _model_params(model_config, params, ref_params),
        batch,
        config.logps_chunk_size,
        lora_rng=lora_rng,
        **layout,
    )
    chosen_B, rejected_B = jnp.split(logps_S, 2)
    if config.online_reference:
        ref_S, _ = sequence_logps(
            model_config, ref_params, batch, config.logps_chunk_size, **layout
        )
        ref_chosen_B, ref_rejected_B = jnp.split(jax.lax.stop_gradient(ref_S), 2)
    else:
        ref_chosen_B = batch.get("ref_chosen_logps")
        ref_rejected_B = batch.get("ref_rejected_logps")
    return losses.PairLogps(
        chosen_B,
        rejected_B,
        ref_chosen_B,
        ref_rejected_B,
        batch["chosen_lengths"].astype(jnp.float32),
        batch["rejected_lengths"].astype(jnp.float32),
        batch["weight"],
    )


def _preference_micro_step(
    config: StepConfig, model_config, params, ref_params, batch, lora_rng=None
):
    """Σ w·loss over one micro-batch, its gradient, and metric sums."""

    def weighted_loss_sum(p):
        logps = _pair_logps(config, model_config, p, ref_params, batch, lora_rng)
        loss_B, aux = losses.preference_loss(config.loss, logps, **config.loss_hyperparams)
        weight_B = batch["weight"].astype(jnp.float32)
        if config.in_batch_filter_ratio > 0:
            weight_B = filtering.in_batch_weights(
                loss_B, weight_B, filter_ratio=config.in_batch_filter_ratio
            )
        safe_loss_B = jnp.where(weight_B > 0, loss_B, 0.0)
        return jnp.sum(weight_B * safe_loss_B), (aux, weight_B)

    (loss_sum, (aux, weight_B)), grads = jax.value_and_grad(weighted_loss_sum, has_aux=True)(params)
    real_B = (batch["weight"] > 0).astype(jnp.float32)
    sums = {"loss": loss_sum, "weight": jnp.sum(weight_B), "pairs": jnp.sum(real_B)}
    for key in metrics_lib.PAIR_MEAN_KEYS:
        sums[key] = jnp.sum(real_B * aux[key])
    sums["tokens"] = jnp.sum(batch["segment_ids"] > 0).astype(jnp.float32)
    sums["filtered_in_batch"] = jnp.sum(real_B * (weight_B == 0))
    return grads, sums


def _sft_micro_step(config: StepConfig, model_config, params, ref_params, batch, lora_rng=None):
    """Σ of response-token NLL over one micro-batch (SFT on the chosen/only response)."""

    def nll_sum(p):
        logps_S, counts_S = sequence_logps(
            model_config,
            _model_params(model_config, p, ref_params),  # ref_params: only LoRA's base
            batch,
            config.logps_chunk_size,
            one_sequence_per_row=config.one_sequence_per_row,
            lora_rng=lora_rng,
        )
        return -jnp.sum(logps_S), jnp.sum(counts_S)

    (loss_sum, token_count), grads = jax.value_and_grad(nll_sum, has_aux=True)(params)
    sums = {
        "loss": loss_sum,
        "weight": token_count,  # token-level mean NLL
        "pairs": jnp.sum(batch["weight"] > 0).astype(jnp.float32),
        "tokens": jnp.sum(batch["segment_ids"] > 0).astype(jnp.float32),
    }
    return grads, sums


def _accumulate(micro_step, params, batch_K):
    """Scans micro-batches, summing gradients and metric sums (exact for any k). With one
    micro-batch there is no scan, so no gradient-sized accumulator is allocated.
    ``micro_step(params, micro_batch, k)`` gets the micro-batch's index k."""
    num_micro = jax.tree.leaves(batch_K)[0].shape[0]
    if num_micro == 1:
        return micro_step(params, jax.tree.map(lambda x: x[0], batch_K), jnp.int32(0))

    def body(carry, inputs):
        micro_batch, k = inputs
        grads, sums = micro_step(params, micro_batch, k)
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

    first = jax.tree.map(lambda x: x[0], batch_K)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(micro_step, params, first, jnp.int32(0)))
    (grads, sums), _ = jax.lax.scan(body, zeros, (batch_K, jnp.arange(num_micro)))
    return grads, sums


def _apply(config: StepConfig, optimizer, state: TrainState, grads, sums):
    """Divides the gradient sum by the weight sum and updates, unless it is not finite."""
    denominator = jnp.maximum(sums["weight"], 1e-12)
    grads = jax.tree.map(lambda g: g / denominator, grads)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(grad_norm) & jnp.isfinite(sums["loss"])

    def update(operand):
        grads, opt_state, params = operand
        # The clipping in optim.make_optimizer reuses grad_norm (one pass over the gradients).
        updates, opt_state = optax.with_extra_args_support(optimizer).update(
            grads, opt_state, params, grad_norm=grad_norm
        )
        return optax.apply_updates(params, updates), opt_state

    operand = (grads, state.opt_state, state.params)
    if config.nan_policy == "skip":
        # A non-finite step keeps the old parameters and optimizer state (and is counted). A
        # cond, not a select: only the taken branch is materialised, so the guard costs no
        # second copy of the state (4 GiB per device for a 7B model on 8 devices).
        params, opt_state = jax.lax.cond(finite, update, lambda op: (op[2], op[1]), operand)
    else:
        params, opt_state = update(operand)
    new_state = TrainState(params, opt_state, state.step + 1, state.rng)
    metrics = dict(sums)
    metrics["grad_norm"] = grad_norm
    metrics["nonfinite"] = (~finite).astype(jnp.float32)
    return new_state, metrics


def _lora_rng(model_config: ModelConfig, state: TrainState, k):
    """The LoRA input-dropout key of micro-batch k of this step (None without dropout): from the
    state's RNG and step, so a resumed run draws what an uninterrupted one does."""
    if model_config.lora is None or model_config.lora.dropout == 0:
        return None
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    return jax.random.fold_in(step_key, k)


def _step(micro_step_fn, config: StepConfig, model_config, optimizer, state, batch_K, ref_params):
    micro = functools.partial(micro_step_fn, config, model_config, ref_params=ref_params)

    def micro_k(p, batch, k):
        return micro(p, batch=batch, lora_rng=_lora_rng(model_config, state, k))

    grads, sums = _accumulate(micro_k, state.params, batch_K)
    return _apply(config, optimizer, state, grads, sums)


def make_train_step(
    kind: str,
    config: StepConfig,
    model_config: ModelConfig,
    optimizer,
    *,
    state_sharding=None,
    batch_sharding=None,
    ref_params_sharding=None,
):
    """The jitted step ``(state, batch_K, ref_params) -> (state, metric sums)``.

    ``kind`` is "preference" or "sft"; ``batch_K`` holds a leading micro-batch axis (K = 1 for
    no accumulation). The state is donated. Shardings are optional (one device without them).
    ``ref_params``: the online reference's parameters (else None); with LoRA always the frozen
    base (the module docstring).
    """
    if kind not in ("preference", "sft"):
        raise ValueError(f"train step kind {kind!r} is not 'preference' or 'sft'")
    if config.nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy={config.nan_policy!r} is not one of {NAN_POLICIES}")
    if kind == "preference":
        losses.validate_hyperparams(config.loss, config.loss_hyperparams)
    micro = _preference_micro_step if kind == "preference" else _sft_micro_step
    fn = functools.partial(_step, micro, config, model_config, optimizer)
    jit_kwargs: dict[str, Any] = {"donate_argnums": (0,)}
    if state_sharding is not None:
        jit_kwargs["in_shardings"] = (state_sharding, batch_sharding, ref_params_sharding)
        jit_kwargs["out_shardings"] = (state_sharding, None)
    return jax.jit(fn, **jit_kwargs)
