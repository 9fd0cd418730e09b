"""The optax chain: schedules, the weight-decay mask, clipping and argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropo_jax import models, optim

CONFIG = models.ModelConfig(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
)


def test_warmup_then_cosine_and_linear():
    lr = optim.learning_rate_schedule(1.0, 10, warmup_steps=4, schedule="cosine")
    np.testing.assert_allclose([float(lr(s)) for s in (0, 2, 4)], [0.0, 0.5, 1.0], atol=1e-6)
    assert float(lr(10)) == pytest.approx(0.0, abs=1e-6)
    assert float(lr(7)) == pytest.approx(0.5, abs=1e-6)  # cosine midpoint of 6 decay steps
    linear = optim.learning_rate_schedule(1.0, 10, warmup_steps=0, schedule="linear")
    assert float(linear(5)) == pytest.approx(0.5, abs=1e-6)
    constant = optim.learning_rate_schedule(1.0, 10, schedule="constant")
    assert float(constant(9)) == 1.0


def test_bad_schedule_names_the_key():
    with pytest.raises(ValueError, match=r"optim\.schedule='step'"):
        optim.learning_rate_schedule(1.0, 10, schedule="step")
    with pytest.raises(ValueError, match="total_steps=0"):
        optim.learning_rate_schedule(1.0, 0)


def test_weight_decay_skips_norms_and_biases():
    params = models.init_params(CONFIG, jax.random.key(0))
    mask = optim.decay_mask(params)
    flat = jax.tree_util.tree_leaves_with_path(mask)
    names = {jax.tree_util.keystr(path): keep for path, keep in flat}
    norms = [k for k in names if "norm" in k]
    assert norms and not any(names[k] for k in norms)
    assert any(keep for k, keep in names.items() if "norm" not in k)
    # with zero gradients only decayed parameters move
    opt = optim.make_optimizer(learning_rate=0.1, total_steps=10, weight_decay=0.5)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    for (path, u), keep in zip(
        jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(mask), strict=True
    ):
        assert bool(jnp.any(u != 0)) == keep, jax.tree_util.keystr(path)


def _two_updates(optimizer, first_scale):
    params = {"w": jnp.ones((4,))}
    state = optimizer.init(params)
    _, state = optimizer.update({"w": jnp.full((4,), first_scale)}, state, params)
    update, _ = optimizer.update({"w": jnp.ones((4,))}, state, params)
    return np.asarray(update["w"])


@pytest.mark.parametrize("max_grad_norm", [1.0, None])
def test_gradients_are_clipped_to_the_global_norm(max_grad_norm):
    # With clipping to norm 1, gradients 100·1 and 1 (norms 200 and 2) both become 0.5·1, so the
    # second Adam update is the same as after a first gradient of 1; without clipping it is not.
    optimizer = optim.make_optimizer(
        learning_rate=1.0, total_steps=2, schedule="constant", max_grad_norm=max_grad_norm
    )
    same = np.allclose(_two_updates(optimizer, 100.0), _two_updates(optimizer, 1.0), rtol=1e-6)
    assert same == (max_grad_norm is not None)
