"""The pure train steps: learning, exact accumulation, sharding, cached vs online reference,
the NaN guard, SFT and in-batch filtering.

Shape key: K micro-batches, B pairs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ropo_jax import models
from ropo_jax.data import batching
from ropo_jax.parallel import sharding
from ropo_jax.training import step as train

CONFIG = models.ModelConfig(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
)
SEQ_LEN = 16


def _pairs(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        prompt = [1, *rng.integers(3, 64, rng.integers(2, 5)).tolist()]
        chosen = [*rng.integers(3, 64, rng.integers(2, 6)).tolist(), 2]
        rejected = [*rng.integers(3, 64, rng.integers(2, 6)).tolist(), 2]
        out.append((i, prompt, chosen, rejected, False))
    return out


def _batch(pairs, num_pairs=None):
    return batching.collate(pairs, num_pairs=num_pairs or len(pairs), seq_len=SEQ_LEN, pad_id=0)


@pytest.fixture(scope="module")
def ref_params():
    return models.init_params(CONFIG, jax.random.key(0))


_ref_logps = jax.jit(lambda p, b: train.sequence_logps(CONFIG, p, b, 8)[0], static_argnums=())


def _with_ref(batch, params):
    logps = np.asarray(_ref_logps(params, {k: jnp.asarray(v) for k, v in batch.items()}))
    b = len(batch["weight"])
    return {**batch, "ref_chosen_logps": logps[:b], "ref_rejected_logps": logps[b:]}


def _stack(*batches):
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def _state(params, optimizer):
    return train.init_state(CONFIG, optimizer, jax.random.key(1), params=params)


def _step(kind="preference", optimizer=None, **config):
    optimizer = optimizer or optax.adam(1e-2)
    return (
        train.make_train_step(kind, train.StepConfig(**config), CONFIG, optimizer),
        optimizer,
    )


def _copy(tree):
    return jax.tree.map(jnp.array, tree)


def test_overfitting_a_fixed_batch_drives_the_loss_down(ref_params):
    batch = _stack(_with_ref(_batch(_pairs(8)), ref_params))
    step, opt = _step(loss="dpo", hyperparams=(("beta", 0.5),))
    state = _state(_copy(ref_params), opt)
    history = []
    for _ in range(25):
        state, sums = step(state, batch, None)
        history.append(float(sums["loss"] / sums["weight"]))
    assert history[0] == pytest.approx(np.log(2), abs=1e-5)  # policy = reference at step 0
    assert history[-1] < 0.1 * history[0]
    assert int(state.step) == 25


def test_accumulation_equals_one_large_batch(ref_params):
    pairs = _pairs(8, seed=1)
    large = _stack(_with_ref(_batch(pairs), ref_params))
    small = _stack(
        _with_ref(_batch(pairs[:4]), ref_params), _with_ref(_batch(pairs[4:]), ref_params)
    )
    sgd = optax.sgd(0.5)  # linear in the gradient: any accumulation error shows up directly
    step, _ = _step(optimizer=sgd, loss="ropo")
    state_large, sums_large = step(_state(_copy(ref_params), sgd), large, None)
    # Perturb the policy so the margins are not all zero, then compare the next update.
    state_small, sums_small = step(_state(_copy(ref_params), sgd), small, None)
    state_large, sums_large = step(state_large, large, None)
    state_small, sums_small = step(state_small, small, None)
    for key in ("loss", "weight", "rewards/margins", "pairs"):
        np.testing.assert_allclose(sums_small[key], sums_large[key], rtol=1e-5, atol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        state_small.params,
        state_large.params,
    )


def test_sharded_step_equals_single_device(ref_params):
    batch = _stack(_with_ref(_batch(_pairs(8, seed=2)), ref_params))
    # SGD with momentum: an optimizer state to shard, and an update linear in the gradient (Adam's
    # first steps move every weight by ±lr whatever the gradient's size, so summation-order
    # noise in near-zero gradients would show up as lr-sized differences).
    opt = optax.sgd(0.5, momentum=0.9)
    single, _ = _step(optimizer=opt, loss="dpo")
    state_single = _state(_copy(ref_params), opt)
    mesh = sharding.make_mesh((2, 2, 2))
    state_sharding = train.state_shardings(CONFIG, opt, mesh, state_single)
    batch_sharding = jax.tree.map(
        lambda x: jax.sharding.NamedSharding(
            mesh,
            sharding.logical_to_spec((None, "batch") + (None,) * (x.ndim - 2), mesh, shape=x.shape),
        ),
        batch,
    )
    sharded = train.make_train_step(
        "preference",
        train.StepConfig(loss="dpo"),
        CONFIG,
        opt,
        state_sharding=state_sharding,
        batch_sharding=batch_sharding,
    )
    state_sharded = jax.device_put(_state(_copy(ref_params), opt), state_sharding)
    for _ in range(2):
        state_single, _ = single(state_single, batch, None)
        with jax.set_mesh(mesh):
            state_sharded, _ = sharded(state_sharded, batch, None)
    gate = state_sharded.params["layers"]["mlp"]["gate"]
    assert len(gate.sharding.device_set) == 8
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        state_sharded.params,
        state_single.params,
    )


def test_cached_reference_equals_online_reference(ref_params):
    batch = _batch(_pairs(8, seed=3))
    cached_batch = _stack(_with_ref(batch, ref_params))
    online_batch = _stack(batch)
    opt = optax.sgd(0.1)
    cached, _ = _step(optimizer=opt, loss="ropo")
    online, _ = _step(optimizer=opt, loss="ropo", online_reference=True)
    s_cached, s_online = _state(_copy(ref_params), opt), _state(_copy(ref_params), opt)
    for _ in range(3):
        s_cached, m_cached = cached(s_cached, cached_batch, None)
        s_online, m_online = online(s_online, online_batch, ref_params)
        np.testing.assert_allclose(m_cached["loss"], m_online["loss"], rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        s_cached.params,
        s_online.params,
    )


def test_nan_guard_skips_the_update_and_counts_it(ref_params):
    batch = _with_ref(_batch(_pairs(4, seed=4)), ref_params)
    batch["ref_chosen_logps"] = batch["ref_chosen_logps"].copy()
    batch["ref_chosen_logps"][1] = np.nan
    step, opt = _step(loss="dpo")
    before = _copy(ref_params)
    state, sums = step(_state(before, opt), _stack(batch), None)
    assert float(sums["nonfinite"]) == 1.0
    jax.tree.map(np.testing.assert_array_equal, state.params, ref_params)
    assert int(state.step) == 1  # the step is counted, the update is not applied
    # A padding pair with a NaN never poisons the update (weight 0 blocks it).
    padded = _with_ref(_batch(_pairs(3, seed=4), num_pairs=4), ref_params)
    padded["ref_chosen_logps"] = padded["ref_chosen_logps"].copy()
    padded["ref_chosen_logps"][3] = np.nan
    state, sums = step(_state(_copy(ref_params), opt), _stack(padded), None)
    assert float(sums["nonfinite"]) == 0.0 and float(sums["pairs"]) == 3.0


def test_sft_step_lowers_the_response_nll(ref_params):
    sft_batch = batching.collate(
        _pairs(8, seed=5), num_pairs=8, seq_len=SEQ_LEN, pad_id=0, sft=True
    )
    step, opt = _step(kind="sft")
    state = _state(_copy(ref_params), opt)
    first = None
    for _ in range(15):
        state, sums = step(state, _stack(sft_batch), None)
        first = first or float(sums["loss"] / sums["weight"])
    last = float(sums["loss"] / sums["weight"])
    assert float(sums["weight"]) == float(sft_batch["loss_mask"].sum())  # per-token mean
    assert last < 0.5 * first


def test_in_batch_filtering_drops_the_highest_losses(ref_params):
    batch = _stack(_with_ref(_batch(_pairs(8, seed=6)), ref_params))
    step, opt = _step(loss="ropo", in_batch_filter_ratio=0.25)
    state = _state(_copy(ref_params), opt)
    state, _ = step(state, batch, None)  # move away from policy = reference (all losses tie)
    _, sums = step(state, batch, None)
    assert float(sums["filtered_in_batch"]) == 2.0
    assert float(sums["weight"]) == 6.0


def test_bad_step_configs_fail_clearly():
    with pytest.raises(ValueError, match="unknown loss 'dpoo'"):
        _step(loss="dpoo")
    with pytest.raises(ValueError, match="nan_policy='ignore'"):
        _step(nan_policy="ignore")
    with pytest.raises(ValueError, match="needs hyper-parameter"):
        _step(loss="rdpo")
