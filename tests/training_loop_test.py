"""The training loop's pieces, in process: the step plan, a host batch, MFU over a logging
window, the NaN stop, the epoch hook, and the checkpointer closed however a stage ends.

Exact resume (a killed and re-run stage ends bit-identical to an uninterrupted one) is
tests/main_test.py's; here a stage interrupted in process resumes at its checkpoint.
"""

import jax
import numpy as np
import pytest

from ropo_jax import models
from ropo_jax.data.loader import make_loader
from ropo_jax.data.prepared import PreferenceData
from ropo_jax.errors import ConfigValueError
from ropo_jax.parallel import sharding
from ropo_jax.training import checkpoint as checkpoint_lib
from ropo_jax.training import loop
from ropo_jax.training import metrics as metrics_lib
from ropo_jax.training import step as train

CONFIG = models.ModelConfig(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1
)


def _data(lengths):
    """Pairs with prompts of 2 tokens and responses of ``lengths[i]`` tokens each."""
    rng = np.random.default_rng(0)
    prompts, chosen, rejected = [], [], []
    for n in lengths:
        prompts.append([1, int(rng.integers(3, 64))])
        chosen.append([*rng.integers(3, 64, n - 1).tolist(), 2])
        rejected.append([*rng.integers(3, 64, n - 1).tolist(), 2])
    ids = [str(i) for i in range(len(lengths))]
    return PreferenceData.from_token_lists(ids, prompts, chosen, rejected, manifest={"pad_id": 0})


def _reference(n):
    return np.zeros(n, np.float32), np.zeros(n, np.float32)


@pytest.fixture(scope="module")
def params():
    return models.init_params(CONFIG, jax.random.key(0))


def _run(tmp_path, params, data, name="s", step_config=None, **overrides):
    stage = loop.StageConfig(
        name=name, batch_size=4, learning_rate=1e-3, warmup_ratio=0.0, **overrides
    )
    writer = metrics_lib.MetricsWriter(str(tmp_path), tensorboard=False)
    return loop.run_stage(
        stage,
        step_config or train.StepConfig(),
        CONFIG,
        params,
        data,
        workdir=str(tmp_path),
        writer=writer,
        reference=_reference(len(data)),
    )


@pytest.fixture
def closes(monkeypatch):
    """The number of Checkpointer.close calls so far, as a one-element list."""
    calls = [0]
    original = checkpoint_lib.Checkpointer.close

    def close(self):
        calls[0] += 1
        original(self)

    monkeypatch.setattr(checkpoint_lib.Checkpointer, "close", close)
    return calls


def _steps_with(monkeypatch, change):
    """Wraps every train step the loop makes: ``change(call, state, sums)`` sees the 1-based
    call number and may alter the sums or raise."""
    make = train.make_train_step
    calls = [0]

    def wrapped_make(*args, **kwargs):
        step_fn = make(*args, **kwargs)

        def step(state, batch, ref_params):
            calls[0] += 1
            state, sums = step_fn(state, batch, ref_params)
            return state, change(calls[0], state, dict(sums))

        return step

    monkeypatch.setattr(train, "make_train_step", wrapped_make)
    return calls


def test_step_plan_counts_updates_and_epoch_ends():
    # 10 examples in micro-batches of 2: 5 micro-batches, 2.5 updates of 2 per epoch.
    stage = loop.StageConfig(name="s", batch_size=4, micro_batches=2, epochs=2.0)
    plan = loop.step_plan(stage, 10)
    assert (plan.micro_size, plan.steps_per_epoch, plan.total_steps) == (2, 2.5, 5)
    assert plan.epoch_ends == {2, 5}
    short = loop.step_plan(loop.StageConfig(name="s", batch_size=4, epochs=1.5), 8)
    assert (short.total_steps, short.epoch_ends) == (3, {2, 3})  # the half epoch ends at 3
    with pytest.raises(ConfigValueError, match=r"s\.batch_size=5 is not divisible"):
        loop.step_plan(loop.StageConfig(name="s", batch_size=5, micro_batches=2), 10)
    with pytest.raises(ConfigValueError, match="3 examples give no full update"):
        loop.step_plan(loop.StageConfig(name="s", batch_size=4), 3)


def test_host_batch_weights_examples_joins_the_reference_and_stacks():
    data = _data([3, 4, 5, 6, 7, 8])
    loader = make_loader(data, batch_size=4, shuffle=False, num_epochs=1, mode="padded")
    weights_N = np.array([0.5, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32)
    ref_chosen_N = np.arange(6, dtype=np.float32)
    batch = loop.host_batch(
        loader,
        2,
        pad_id=0,
        example_weights_N=weights_N,
        reference=(ref_chosen_N, -ref_chosen_N),
    )
    index_KB = batch["example_index"]
    assert index_KB.shape == (2, 4) and index_KB[1].tolist() == [4, 5, -1, -1]
    real_KB = index_KB >= 0
    np.testing.assert_array_equal(batch["weight"][real_KB], weights_N[index_KB[real_KB]])
    assert not batch["weight"][~real_KB].any()  # padding slots weigh nothing
    np.testing.assert_array_equal(batch["ref_chosen_logps"][real_KB], index_KB[real_KB])
    np.testing.assert_array_equal(batch["ref_rejected_logps"][real_KB], -index_KB[real_KB])


def test_mfu_counts_each_step_at_its_own_padded_length(tmp_path, params, monkeypatch):
    peak = 1e9
    monkeypatch.setattr(metrics_lib, "device_peak_flops", lambda: peak)
    make = loop.make_loader  # the loader with two bucket shapes: short pairs pad to 8 tokens
    monkeypatch.setattr(loop, "make_loader", lambda *a, **k: make(*a, bucket_boundaries=(8,), **k))
    steps = []  # (padded length, real tokens) of every update
    put = sharding.put_batch

    def spy(batch, mesh, *, micro_axis):
        steps.append((batch["tokens"].shape[-1], int((batch["segment_ids"] > 0).sum())))
        return put(batch, mesh, micro_axis=micro_axis)

    monkeypatch.setattr(sharding, "put_batch", spy)
    _run(tmp_path, params, _data([3, 3, 4, 4, 10, 11, 12, 12]), log_every=2)
    assert sorted(length for length, _ in steps) == [8, 14]
    (record,) = [r for r in metrics_lib.read_metrics(str(tmp_path)) if r["step"] == 2]
    seconds = record["tokens"] / record["tokens_per_s"]
    flops = sum(metrics_lib.flops_per_token(CONFIG, t) * n for t, n in steps)
    assert record["mfu"] == pytest.approx(flops / seconds / (peak * jax.device_count()), rel=1e-9)


def test_nan_stop_raises_keeps_the_last_good_checkpoint_and_closes(
    tmp_path, params, monkeypatch, closes
):
    def nan_at_step_2(call, state, sums):
        return {**sums, "nonfinite": np.float32(call == 2)}

    _steps_with(monkeypatch, nan_at_step_2)
    with pytest.raises(FloatingPointError, match=r"at step 2;.*nan_policy='stop'"):
        _run(
            tmp_path,
            params,
            _data([4] * 12),
            step_config=train.StepConfig(nan_policy="stop"),
            checkpoint_every=1,
            log_every=10,
        )
    assert closes[0] == 1
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path / "checkpoints" / "s"))
    assert checkpointer.latest_step() == 1
    checkpointer.close()


def test_an_interrupted_stage_closes_and_resumes_at_its_checkpoint(
    tmp_path, params, monkeypatch, closes
):
    def interrupt_at_step_4(call, state, sums):
        if call == 4:
            raise KeyboardInterrupt
        return sums

    calls = _steps_with(monkeypatch, interrupt_at_step_4)
    data = _data([4] * 16)  # 4 steps
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, params, data, checkpoint_every=2, log_every=1)
    assert closes[0] == 1
    _run(tmp_path, params, data, checkpoint_every=2, log_every=1)
    assert calls[0] == 6 and closes[0] == 2  # steps 3 and 4 again, from the step-2 checkpoint
    logged = [r["step"] for r in metrics_lib.read_metrics(str(tmp_path))]
    assert logged == [1, 2, 3, 4]  # the interrupted run's record of step 3 was replaced
    _run(tmp_path, params, data, checkpoint_every=2, log_every=1)  # already done: no step
    assert calls[0] == 6 and closes[0] == 3


def test_epoch_hook_runs_at_epoch_ends_and_marks_the_last_step_final(tmp_path, params):
    finals = []

    def on_epoch(p, *, final):
        finals.append(final)
        return {} if final else {"measured": 1.0}  # an empty record is not written

    stage = loop.StageConfig(name="s", batch_size=4, micro_batches=2, epochs=2.0, log_every=5)
    data = _data([4] * 10)  # 2.5 updates per epoch: epochs end after updates 2 and 5
    loop.run_stage(
        stage,
        train.StepConfig(),
        CONFIG,
        params,
        data,
        workdir=str(tmp_path),
        writer=metrics_lib.MetricsWriter(str(tmp_path), tensorboard=False),
        reference=_reference(len(data)),
        on_epoch=on_epoch,
    )
    assert finals == [False, True]
    dynamics = [r for r in metrics_lib.read_metrics(str(tmp_path)) if r.get("kind")]
    assert dynamics == [
        {"stage": "s", "kind": "dynamics", "step": 2, "round_epoch": 0.8, "measured": 1.0}
    ]


@pytest.mark.parametrize("mode,promise", [("padded", True), ("bucketed", True), ("packed", False)])
def test_the_step_is_told_the_loader_row_layout(tmp_path, params, monkeypatch, mode, promise):
    # cuDNN flash attention may only see rows of one right-padded sequence: the step's promise
    # must follow the loader mode (packed rows hold several sequences).
    seen = []

    def make_train_step(kind, step_config, *args, **kwargs):
        seen.append(step_config.one_sequence_per_row)
        raise RuntimeError("stop before compiling")

    monkeypatch.setattr(loop.train, "make_train_step", make_train_step)
    with pytest.raises(RuntimeError, match="stop before compiling"):
        _run(tmp_path, params, _data([4] * 8), batch_mode=mode)
    assert seen == [promise]
