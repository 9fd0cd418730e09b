"""Orbax checkpoints: round trip of the train state and record, keep-last-k, restoring onto
another mesh, and refusing a checkpoint written for another model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ropo_jax import models
from ropo_jax.parallel import sharding
from ropo_jax.training import checkpoint
from ropo_jax.training import step as train

CONFIG = models.ModelConfig(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
)


def _state(config=CONFIG, seed=0):
    optimizer = optax.adamw(1e-3)
    state = train.init_state(config, optimizer, jax.random.key(seed))
    return state, optimizer


def _abstract(state, shardings=None):
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )


def _assert_same(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_restores_state_and_record(tmp_path):
    state, _ = _state()
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
    record = {"step": 3, "iterator": {"position": 7}, "model_config": {"a": 1}}
    ckpt.save(3, state, record)
    ckpt.close()
    restored, got = checkpoint.Checkpointer(str(tmp_path)).restore(_abstract(state))
    assert got == record
    _assert_same(restored, state)


def test_keeps_only_the_last_k(tmp_path):
    state, _ = _state()
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, async_save=False)
    for step in (1, 2, 3, 4):
        ckpt.save(step, state, {"step": step})
    ckpt.close()
    kept = sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit())
    assert kept == [3, 4]
    assert checkpoint.Checkpointer(str(tmp_path)).latest_step() == 4


def test_restores_onto_another_mesh(tmp_path):
    state, optimizer = _state()  # written from one device, unsharded
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(1, state, {"step": 1})
    ckpt.close()
    mesh = sharding.make_mesh((2, 4, 1))
    shardings = train.state_shardings(CONFIG, optimizer, mesh, _abstract(state))
    restored, _ = checkpoint.Checkpointer(str(tmp_path)).restore(_abstract(state, shardings))
    _assert_same(restored, state)
    for leaf, want in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings), strict=True):
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim)
    # at least one parameter is really split across devices (no full replica per device)
    assert any(
        len(leaf.sharding.device_set) == 8 and not leaf.sharding.is_fully_replicated
        for leaf in jax.tree.leaves(restored.params)
    )


def test_another_models_checkpoint_is_refused_before_reading_arrays(tmp_path):
    """The mismatch is found in the JSON record alone: no restore of the train state is ever
    asked for (restoring 32-wide arrays into 48-wide targets could fail with an Orbax shape
    error instead, or read gigabytes first). The spy sees the state restore of a matching
    checkpoint, so its silence on the mismatch means something."""
    state, _ = _state()
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(1, state, {"model_config": checkpoint.config_record(CONFIG)})
    ckpt.close()

    def spied():
        reader = checkpoint.Checkpointer(str(tmp_path))
        items, restore = [], reader._manager.restore

        def spy(step, args=None, **kwargs):
            items.append(sorted(args.keys()))
            return restore(step, args=args, **kwargs)

        reader._manager.restore = spy
        return reader, items

    other = CONFIG.replace(hidden_size=48)
    other_state, _ = _state(other)
    reader, items = spied()
    with pytest.raises(checkpoint.CheckpointMismatch, match="hidden_size: 32 in checkpoint vs 48"):
        reader.restore(
            _abstract(other_state), expect={"model_config": checkpoint.config_record(other)}
        )
    assert items == [["record"]]

    reader, items = spied()
    restored, _ = reader.restore(
        _abstract(state), expect={"model_config": checkpoint.config_record(CONFIG)}
    )
    assert items == [["record"], ["state"]]
    _assert_same(restored, state)


def test_rng_and_step_survive_the_round_trip(tmp_path):
    state, _ = _state(seed=5)
    state = train.TrainState(state.params, state.opt_state, jnp.asarray(11, jnp.int32), state.rng)
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(11, state, {})
    ckpt.close()
    restored, _ = checkpoint.Checkpointer(str(tmp_path)).restore(_abstract(state))
    assert int(restored.step) == 11
    assert restored.rng.dtype == state.rng.dtype
    np.testing.assert_array_equal(np.asarray(restored.rng), np.asarray(state.rng))
