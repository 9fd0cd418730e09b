"""The optax chain: schedules, the weight-decay mask, clipping and argument errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ropo_jax import models
from ropo_jax.data import batching
from ropo_jax.ropo.options import RopoConfig
from ropo_jax.training import optim
from ropo_jax.training import step as train

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


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_clipping_with_the_given_norm_equals_optax(scale):
    rng = np.random.default_rng(0)
    grads = {"a": jnp.asarray(rng.normal(size=(3, 4)) * scale), "b": jnp.asarray([scale])}
    want, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    clip = optim.clip_by_global_norm(1.0)
    for kwargs in ({}, {"grad_norm": optax.tree.norm(grads)}):
        got, state = clip.update(grads, clip.init(grads), **kwargs)
        assert state == optax.EmptyState()
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-6)


def test_the_train_step_takes_one_pass_over_the_gradients_for_their_norm():
    # The step's grad_norm metric and the optimizer's clipping share one global norm: clipping
    # adds no reduction to the compiled step (a second norm pass would add one per parameter).
    config = models.ModelConfig.preset("tiny")
    pairs = [(i, [1, 5, 6], [7, 8, 2], [9, 2], False) for i in range(2)]
    batch = batching.collate(pairs, num_pairs=2, seq_len=8, pad_id=0, completion_len=4)
    batch.update(
        ref_chosen_logps=np.zeros(2, np.float32), ref_rejected_logps=np.zeros(2, np.float32)
    )
    batch_K = jax.tree.map(lambda x: jnp.asarray(x)[None], batch)

    def scalar_reductions(max_grad_norm):
        optimizer = optim.make_optimizer(
            learning_rate=1e-6, total_steps=10, schedule="constant", max_grad_norm=max_grad_norm
        )
        state = jax.eval_shape(lambda: train.init_state(config, optimizer, jax.random.key(0)))
        step = train.make_train_step("preference", train.StepConfig(), config, optimizer)
        text = step.lower(state, batch_K, None).compile().as_text()
        return len(re.findall(r"= f32\[\] reduce\(", text))

    assert scalar_reductions(1.0) == scalar_reductions(None)


def _schedule_counts(opt_state):
    """Every optax step counter in an optimizer state (Adam's and the schedule's)."""
    leaves = jax.tree_util.tree_leaves_with_path(opt_state)
    return {int(v) for k, v in leaves if jax.tree_util.keystr(k).endswith(".count")}


def test_a_stage_continues_the_optimizer_state_it_is_given(tmp_path):
    """Two stages of 2 steps, the second started from the first's optimizer state, end where
    one stage of 4 steps does: Adam's moments and the schedule carry on (ROPO's rounds)."""
    from ropo_jax.data.loader import load_preference_data
    from ropo_jax.synthetic import dataset, prepare, task
    from ropo_jax.training import loop as trainer
    from ropo_jax.training import metrics
    from ropo_jax.training import step as train

    paths = prepare.prepare_synthetic(
        str(tmp_path / "data"),
        task.TaskConfig(),
        dataset.DataConfig(num_sft=8, num_train_pairs=16, num_test_pairs=4, num_eval_prompts=2),
        seed=0,
    )
    data, _ = load_preference_data(paths["sft"])
    config = models.ModelConfig.preset("tiny", vocab_size=int(data.manifest["vocab_size"]))
    params = models.init_params(config, jax.random.key(0))
    writer = metrics.MetricsWriter(str(tmp_path), tensorboard=False)
    common = dict(kind="sft", batch_size=4, learning_rate=1e-2, warmup_ratio=0.5, seed=0)

    def run(name, epochs, schedule_steps, params, opt_state=None):
        stage = trainer.StageConfig(
            name=name, epochs=epochs, schedule_steps=schedule_steps, **common
        )
        return trainer.run_stage(
            stage,
            train.StepConfig(),
            config,
            params,
            data,
            workdir=str(tmp_path / name),
            writer=writer,
            init_opt_state=opt_state,
            return_state=True,
        )

    whole = run("whole", 2.0, 0, params)
    first = run("first", 1.0, 4, params)
    second = run("second", 1.0, 4, first.params, first.opt_state)
    assert _schedule_counts(first.opt_state) == {2}
    assert _schedule_counts(second.opt_state) == _schedule_counts(whole.opt_state) == {4}
    # Same batches? Each stage restarts its data order, so compare with a restart of the
    # optimizer instead: continuing changes the second stage's result.
    restarted = run("restarted", 1.0, 0, first.params)
    differs = jax.tree.map(
        lambda a, b: float(jnp.abs(a - b).max()), second.params, restarted.params
    )
    assert max(jax.tree.leaves(differs)) > 0


def test_one_schedule_spans_every_round():
    from ropo_jax.ropo import framework as ropo
    from ropo_jax.training import loop as trainer

    stage = trainer.StageConfig(name="round", batch_size=8, micro_batches=2, epochs=1.0)
    base = RopoConfig(num_rounds=3, filter_ratio=0.2)
    # 100 pairs, micro-batches of 4: 25 micro-batches = 12 steps a round.
    assert ropo.schedule_steps(stage, 100, base) == 36
    # With rejection sampling a later round can hold up to 20 more pairs: 30 micro → 15 steps.
    with_rs = RopoConfig(num_rounds=3, filter_ratio=0.2, rs_enabled=True)
    assert ropo.schedule_steps(stage, 100, with_rs) == 12 + 2 * 15
