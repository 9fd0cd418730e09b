"""``scoring.params_hash``: the reference cache key, computed where the parameters live."""

import jax
import jax.numpy as jnp

from ropo_jax import models, scoring, sharding


def _params():
    config = models.ModelConfig.preset("tiny", vocab_size=64)
    return config, models.init_params(config, jax.random.key(0))


def test_hash_is_the_same_on_any_mesh():
    config, params = _params()
    axes = models.param_logical_axes(config)
    expected = scoring.params_hash(params)
    for shape in ((1, 8, 1), (2, 2, 2), (8, 1, 1)):
        mesh = sharding.make_mesh(shape)
        placed = jax.device_put(params, sharding.tree_shardings(mesh, axes, params))
        assert scoring.params_hash(placed) == expected, shape


def test_hash_sees_small_changes():
    """A sign flip, a swap of two weights and a dtype change each change the key (a plain
    weighted sum of the bits would miss the first two)."""
    _, params = _params()
    embedding = params["embed"]["embedding"]
    flipped = {**params, "embed": {"embedding": embedding.at[0, 0].multiply(-1.0)}}
    swapped_values = embedding.at[0, 0].set(embedding[0, 1]).at[0, 1].set(embedding[0, 0])
    swapped = {**params, "embed": {"embedding": swapped_values}}
    bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    keys = {scoring.params_hash(p) for p in (params, flipped, swapped, bf16)}
    assert len(keys) == 4
