"""LoRA (docs/lora.md), in process: the adapted model equals the base until trained and its
merge equals it after; the KV-cache sampler runs the adapters; the train step moves the
adapters only (gradients, optimizer state), never the base, and its reference is the base;
every loss trains; the adapters follow their base weights' sharding; a PEFT adapter exported
from our parameters loads in PEFT with the merged export's logits; config mistakes are one
line naming the key.

The command line (a transformers-saved checkpoint through SFT, ROPO rounds with rejection
sampling, export, PEFT, kill and resume) is tests/lora_cli_test.py's.

Shape key: B pairs, T length, V vocabulary.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hf_checkpoints import build_checkpoint
from train_step_test import _pairs

from ropo_jax import losses, models
from ropo_jax.config import defaults
from ropo_jax.config.validation import check_values
from ropo_jax.data import batching
from ropo_jax.errors import ConfigValueError
from ropo_jax.models import lora
from ropo_jax.parallel import sharding
from ropo_jax.training import step as train

LORA = models.LoraConfig(rank=4, alpha=8.0)
CONFIG = models.ModelConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    lora=LORA,
)
SEQ_LEN = 16
# Jitted: op by op, a forward pass compiles each operation on its own (seconds on a CPU).
forward = jax.jit(models.forward, static_argnums=0)
prefill = jax.jit(models.prefill, static_argnums=0)
decode_step = jax.jit(models.decode_step, static_argnums=0)


def _batch_K(n=4, seed=0):
    """One update's batch, [K=2 micro-batches, ...], with zero cached reference log-probs."""
    pairs = _pairs(2 * n, seed)
    micro = []
    for k in range(2):
        b = batching.collate(pairs[k * n : (k + 1) * n], num_pairs=n, seq_len=SEQ_LEN, pad_id=0)
        zeros = np.zeros(n, np.float32)
        micro.append({**b, "ref_chosen_logps": zeros, "ref_rejected_logps": zeros})
    return {k: jnp.asarray(np.stack([m[k] for m in micro])) for k in micro[0]}


@jax.jit
def _moved(adapters):
    """Adapters as training leaves them: ``b`` no longer zero (a fixed, cheap perturbation:
    random draws of every shape would cost a compile each)."""
    return jax.tree.map(lambda x: x + 0.05 * jnp.cos(jnp.arange(x.size).reshape(x.shape)), adapters)


def _trained_adapters(base):
    # Eager, as train.init_state draws them: the draw compiles once per process.
    return _moved(lora.init_adapters(LORA, base["layers"], jax.random.key(1)))


merge = jax.jit(lora.merge, static_argnums=0)


@pytest.fixture(scope="module")
def base():
    return models.init_params(CONFIG, jax.random.key(0))


def test_adapted_model_is_the_base_until_trained_and_merges_exactly(base):
    tokens_BT = jax.random.randint(jax.random.key(3), (2, 12), 3, 64)
    base_BTV = forward(CONFIG, base, tokens_BT)
    fresh = lora.init_adapters(LORA, base["layers"], jax.random.key(1))
    for pair in _pairs_of(fresh):
        assert not np.any(pair["b"]) and np.any(pair["a"])  # b = 0: a·b = 0 at step 0
    # Bit-identical: a zero adapter adds exact zeros.
    np.testing.assert_array_equal(forward(CONFIG, lora.attach(base, fresh), tokens_BT), base_BTV)
    adapted = lora.attach(base, _trained_adapters(base))
    adapted_BTV = forward(CONFIG, adapted, tokens_BT)
    assert np.abs(adapted_BTV - base_BTV).max() > 1e-2  # the adapters change the model
    merged = merge(LORA, adapted)
    assert lora.KEY not in merged and merged["layers"]["attn"]["q"].shape == (2, 32, 4, 8)
    # The merged kernels are W + (α/R)·a·b: one product, against the unmerged forward.
    # Tolerance: float32 matmuls in a different order, logits of magnitude ~1.
    np.testing.assert_allclose(forward(CONFIG, merged, tokens_BT), adapted_BTV, atol=2e-5, rtol=0)
    # Unrolled layers (the tiny presets') run the adapters as the scanned ones do.
    unrolled = CONFIG.replace(scan_layers=False)
    np.testing.assert_allclose(
        forward(unrolled, adapted, tokens_BT), adapted_BTV, atol=2e-5, rtol=0
    )


def test_kv_cache_decoding_runs_the_adapters(base):
    """The sampler's path (prefill, one-token steps) gives the adapted model's logits."""
    adapted = lora.attach(base, _trained_adapters(base))
    tokens_BT = jax.random.randint(jax.random.key(4), (2, 9), 3, 64)
    full_BTV = forward(CONFIG, adapted, tokens_BT)
    cache = models.init_cache(CONFIG, 2, 9)
    lengths_B = jnp.array([6, 6], jnp.int32)
    logits_BV, cache = prefill(CONFIG, adapted, tokens_BT[:, :6], cache, lengths_B=lengths_B)
    # Tolerance: float32, the cache path and the full forward sum in different orders.
    np.testing.assert_allclose(logits_BV, full_BTV[:, 5], atol=2e-5, rtol=0)
    for t in range(6, 9):
        logits_BV, cache = decode_step(CONFIG, adapted, tokens_BT[:, t], cache)
        np.testing.assert_allclose(logits_BV, full_BTV[:, t], atol=2e-5, rtol=0)


def test_lora_dropout_is_on_the_adapter_input_in_training_only(base):
    """``lora_rng`` (the train step's) drops adapter inputs; without it the pass is
    deterministic and dropout-free. The same key draws the same masks."""
    config = CONFIG.replace(lora=models.LoraConfig(rank=4, alpha=8.0, dropout=0.5))
    hidden = jax.jit(models.hidden_states, static_argnums=0)
    adapted = lora.attach(base, _trained_adapters(base))
    tokens_BT = jax.random.randint(jax.random.key(8), (2, 10), 3, 64)
    plain = hidden(config, adapted, tokens_BT)
    dropped = hidden(config, adapted, tokens_BT, lora_rng=jax.random.key(0))
    assert np.abs(dropped - plain).max() > 1e-3
    np.testing.assert_array_equal(
        hidden(config, adapted, tokens_BT, lora_rng=jax.random.key(0)), dropped
    )


# One compiled step for the tests below: LoRA, Adam, the cached reference.
OPTIMIZER = optax.adam(1e-2)
STEP = train.make_train_step("preference", train.StepConfig(), CONFIG, OPTIMIZER)


def test_step_trains_the_adapters_only_and_never_touches_the_base(base):
    state = train.init_state(CONFIG, OPTIMIZER, jax.random.key(1), base=base)
    adapters_size = sum(x.size for x in jax.tree.leaves(state.params))
    base_size = sum(x.size for x in jax.tree.leaves(base))
    # The state holds adapters (a: [L, *I, R], b: [L, R, *O]) and Adam's two moments of them.
    assert set(state.params) == {"layers"} and adapters_size < base_size / 4
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]
    assert sum(x.size for x in moments) == 2 * adapters_size
    base_before = jax.tree.map(np.array, base)
    for _ in range(2):
        state, sums = STEP(state, _batch_K(), base)
    assert float(sums["grad_norm"]) > 0 and np.isfinite(float(sums["loss"]))
    assert all(np.any(p["b"]) for p in _pairs_of(state.params))  # every adapter moved
    for before, after in zip(jax.tree.leaves(base_before), jax.tree.leaves(base), strict=True):
        np.testing.assert_array_equal(before, after)  # the frozen base, bit for bit


def _pairs_of(adapters):
    return jax.tree.leaves(adapters, is_leaf=lambda x: isinstance(x, dict) and "b" in x)


def test_the_online_reference_is_the_base_with_the_adapters_off(base):
    """With LoRA the step's reference is the base it closes over: in the online mode the
    reference log-probs behind its rewards, Σ logps − Σ rewards/β, are the base model's."""
    adapters = _trained_adapters(base)
    copies = jax.tree.map(jnp.copy, adapters)  # the step donates its state
    state = train.init_state(CONFIG, OPTIMIZER, jax.random.key(1), params=copies)
    step = train.make_train_step(
        "preference", train.StepConfig(online_reference=True), CONFIG, OPTIMIZER
    )
    batch_K = _batch_K()
    _, sums = step(state, batch_K, base)
    beta = losses.registry.DEFAULT_BETA
    logps = jax.jit(lambda p, b: train.sequence_logps(CONFIG, p, b, 8)[0])
    n = batch_K["weight"].shape[1]
    base_S = sum(logps(base, {k: v[k_] for k, v in batch_K.items()}) for k_ in range(2))
    for i, side in enumerate(("chosen", "rejected")):
        ref_sum = float(sums[f"logps/{side}"]) - float(sums[f"rewards/{side}"]) / beta
        # Tolerance: float32 sums of ~8 log-probs of magnitude ~30, divided by β = 0.1.
        np.testing.assert_allclose(ref_sum, float(base_S[i * n : (i + 1) * n].sum()), rtol=1e-4)
    # ... and not the policy's: the adapters moved the log-probs.
    assert abs(float(sums["logps/chosen"]) - float(base_S[:n].sum())) > 1e-2


@functools.partial(jax.jit, static_argnums=())
def _logps_and_pullback(adapters, base, batch, cotangent_S):
    """The policy's sequence log-probs [S] under base + adapters, and the adapters' gradient
    of ⟨cotangent, log-probs⟩: any loss of the log-probs pulls back through this one VJP."""

    def logps(a):
        return train.sequence_logps(CONFIG, lora.attach(base, a), batch, 8)[0]

    logps_S, pullback = jax.vjp(logps, adapters)
    return logps_S, pullback(cotangent_S)[0]


def _hyperparams(loss):
    knobs = dict(defaults.base_config().loss)
    knobs.update(label_smoothing=0.2, flip_rate=0.2)
    return losses.hyperparams_from(loss, knobs)


def test_every_loss_trains_the_adapters(base):
    """Every loss of the registry (every method's training loss; ropo_full and holder_full
    train with ropo's and holder_dpo's) gives a finite gradient that reaches every adapter
    matrix. The losses act on the log-probs only, so one compiled forward + VJP serves all;
    the train step's wiring of a loss is the same for every loss (the tests above, dpo)."""
    adapters = _trained_adapters(base)
    batch = {k: v[0] for k, v in _batch_K(seed=5).items()}
    n = batch["weight"].shape[0]
    zeros_S = jnp.zeros(2 * n, jnp.float32)
    policy_S, _ = _logps_and_pullback(adapters, base, batch, zeros_S)
    ref_S = policy_S - jax.random.normal(jax.random.key(9), policy_S.shape)  # nonzero margins

    def loss_sum(policy_S, name):
        pair = losses.PairLogps(
            policy_S[:n],
            policy_S[n:],
            ref_S[:n],
            ref_S[n:],
            batch["chosen_lengths"].astype(jnp.float32),
            batch["rejected_lengths"].astype(jnp.float32),
            batch["weight"],
        )
        loss_B, _ = losses.preference_loss(name, pair, **_hyperparams(name))
        return jnp.sum(batch["weight"] * loss_B)

    for name in losses.registry.LOSSES:
        cotangent_S = jax.grad(loss_sum)(policy_S, name)
        _, grads = _logps_and_pullback(adapters, base, batch, cotangent_S)
        for pair in _pairs_of(grads):
            for g in pair.values():
                assert np.all(np.isfinite(g)) and np.any(g), name


def test_adapters_follow_their_base_weights_sharding(base):
    mesh = sharding.make_mesh((2, 2, 2))
    abstract = jax.eval_shape(
        lambda: train.init_state(CONFIG, OPTIMIZER, jax.random.key(1), base=base)
    )
    shardings = train.state_shardings(CONFIG, OPTIMIZER, mesh, abstract)
    attn, mlp = shardings.params["layers"]["attn"], shardings.params["layers"]["mlp"]
    # q: [L, D, N, H] over (-, fsdp, tensor, -): a keeps D's fsdp, b the heads' tensor split.
    assert tuple(attn["q"]["a"].spec) == (None, "fsdp", None)
    assert tuple(attn["q"]["b"].spec) == (None, None, "tensor", None)
    assert tuple(attn["o"]["a"].spec) == (None, "tensor", None, None)  # [L, N, H, R]
    assert tuple(mlp["down"]["a"].spec) == (None, "tensor", None)  # [L, F, R]
    assert tuple(mlp["down"]["b"].spec) == (None, None, "fsdp")  # [L, R, D]
    # A sharded step gives the single-device step's update.
    placed = jax.device_put(
        base, sharding.tree_shardings(mesh, models.param_logical_axes(CONFIG), base)
    )
    batch_K = _batch_K(seed=7)
    init = train.init_state(CONFIG, OPTIMIZER, jax.random.key(1), base=base)
    single, _ = STEP(init, batch_K, base)
    init = train.init_state(CONFIG, OPTIMIZER, jax.random.key(1), base=base)
    with jax.set_mesh(mesh):
        step = train.make_train_step(
            "preference", train.StepConfig(), CONFIG, OPTIMIZER, state_sharding=shardings
        )
        sharded, _ = step(jax.device_put(init, shardings), batch_K, placed)
    assert sharded.params["layers"]["attn"]["q"]["b"].sharding == attn["q"]["b"]
    for x, y in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params), strict=True):
        # float32 in another reduction order; Adam's first update is ±lr where |g| ≫ eps.
        np.testing.assert_allclose(x, y, atol=1e-5)


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory):
    return build_checkpoint(str(tmp_path_factory.mktemp("lora_hf") / "llama"), "llama")


def test_peft_loads_the_exported_adapter_with_the_merged_models_logits(hf_llama, tmp_path):
    """Adapters on a transformers-saved Llama: the merged export (``save_hf`` merges) and the
    PEFT adapter directory agree in transformers + PEFT with each other and with our logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ropo_jax import export

    lora_config = models.LoraConfig(rank=4, alpha=6.0, targets=("q", "k", "v", "o", "down"))
    config, base = models.load_hf(hf_llama, lora=lora_config)
    adapters = _moved(lora.init_adapters(lora_config, base["layers"], jax.random.key(1)))
    adapted = lora.attach(base, adapters)
    models.save_hf(config, adapted, str(tmp_path / "merged"))
    export.export_adapter(config, adapters, str(tmp_path / "adapter"), base_model=hf_llama)
    tokens_BT = np.random.default_rng(0).integers(3, config.vocab_size, (2, 20))
    ours_BTV = np.asarray(forward(config, adapted, jnp.asarray(tokens_BT)))
    ids = torch.tensor(tokens_BT)
    with torch.no_grad():
        base_model = AutoModelForCausalLM.from_pretrained(hf_llama, dtype=torch.float32)
        peft_BTV = PeftModel.from_pretrained(base_model, str(tmp_path / "adapter"))(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
        merged_BTV = merged(ids).logits
    # Tolerances: float32 throughout; merged vs unmerged sums differ by rounding (~1e-7 of
    # logits of magnitude ~1), ours vs transformers by the port's parity (docs/models.md).
    np.testing.assert_allclose(peft_BTV.numpy(), merged_BTV.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours_BTV, merged_BTV.numpy(), atol=1e-5, rtol=0)
    assert np.abs(ours_BTV - np.asarray(forward(config, base, tokens_BT))).max() > 1e-3


@pytest.mark.parametrize(
    ("key", "value"),
    [("rank", -1), ("alpha", 0.0), ("dropout", 1.0), ("targets", ("q", "qkv"))],
)
def test_impossible_lora_settings_are_one_error_naming_the_key(key, value):
    config = defaults.base_config()
    config.model.lora[key] = value
    with pytest.raises(ConfigValueError, match=rf"^config\.model\.lora\.{key}="):
        check_values(config)
