"""The training loop of one stage (SFT, or preference training for some epochs): data iterator,
micro-batch accumulation, reference join, the jitted step, logging and checkpoints.

Resume is exact: a checkpoint holds the train state and the data iterator's position, and the
loop restarts at the next batch with the same state, so a killed-and-rerun stage ends with
bit-identical parameters. No host synchronisation happens inside the loop except at logging
and checkpoint steps (and every step with ``nan_policy="stop"``, which must look at each step's
result). However a stage ends, its checkpointer is closed, so asynchronous saves complete.

With LoRA (``ModelConfig.lora``, docs/lora.md) a stage trains the adapters of its initial
parameters (fresh ones, ``b`` = 0, when they have none) over their frozen base: the train state,
its optimizer state and its checkpoints hold the adapters only, and the base is what the caller
passes in again on resume. What a stage hands out (its result, the epoch hook's parameters) are
the adapted parameters, base and adapters (``models.lora.attach``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from ropo_jax.data import batching
from ropo_jax.data.loader import make_loader
from ropo_jax.data.prepared import PreferenceData
from ropo_jax.errors import ConfigValueError
from ropo_jax.inference import scoring
from ropo_jax.models import ModelConfig
from ropo_jax.models import lora as lora_lib
from ropo_jax.parallel import processes, sharding
from ropo_jax.training import checkpoint as checkpoint_lib
from ropo_jax.training import metrics as metrics_lib
from ropo_jax.training import optim
from ropo_jax.training import step as train


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One training stage. Keys mirror the config file's ``sft.*`` / ``train.*`` blocks."""

    name: str  # "sft", "train", "round_1", ... (checkpoint sub-directory and metrics tag)
    kind: str = "preference"  # or "sft"
    epochs: float = 1.0
    batch_size: int = 32  # global pairs (or SFT examples) per update
    micro_batches: int = 1  # gradient accumulation steps per update
    learning_rate: float = 5e-7
    warmup_ratio: float = 0.1
    schedule: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_mode: str = "bucketed"
    max_length: int | None = None
    max_completion_tokens: int | None = None  # None: derived from the data (loader)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    # The learning-rate schedule's length in steps (warmup included); 0: this stage's steps. A
    # stage that continues another's optimizer state (``init_opt_state``) continues its
    # schedule too: the schedule counts steps in the optimizer state.
    schedule_steps: int = 0


def _abstract_with_shardings(abstract, shardings):
    if shardings is None:
        return abstract
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """How a stage walks its data. ``steps_per_epoch`` is fractional when a pass's
    micro-batches do not fill whole updates (the iterator runs on across passes, so no example
    is skipped); ``epoch_ends`` are the steps after which an epoch is complete, ``total_steps``
    among them (a fractional last epoch ends there)."""

    micro_size: int  # examples per micro-batch
    steps_per_epoch: float
    total_steps: int
    epoch_ends: frozenset[int]


def step_plan(stage: StageConfig, num_examples: int) -> StepPlan:
    """The plan of ``stage`` over ``num_examples`` examples. A batch that does not split into
    its micro-batches, or data too small for one update, is a config error naming the key."""
    micro_size = stage.batch_size // stage.micro_batches
    if micro_size * stage.micro_batches != stage.batch_size:
        raise ConfigValueError(
            f"{stage.name}.batch_size={stage.batch_size} is not divisible by "
            f"micro_batches={stage.micro_batches}"
        )
    steps_per_epoch = (num_examples // micro_size) / stage.micro_batches
    total_steps = math.floor(stage.epochs * steps_per_epoch)
    if total_steps < 1:
        raise ConfigValueError(
            f"{stage.name}: {num_examples} examples give no full update of batch_size="
            f"{stage.batch_size}; lower the batch size or add data"
        )
    epoch_ends = frozenset(
        min(total_steps, math.floor(k * steps_per_epoch))
        for k in range(1, 1 + math.ceil(stage.epochs))
    )
    return StepPlan(micro_size, steps_per_epoch, total_steps, epoch_ends)


def _stage_optimizer(stage: StageConfig, total_steps: int):
    """The stage's AdamW; its schedule spans ``schedule_steps`` (default: this stage's steps)."""
    schedule_steps = stage.schedule_steps or total_steps
    return optim.make_optimizer(
        learning_rate=stage.learning_rate,
        total_steps=schedule_steps,
        warmup_steps=int(stage.warmup_ratio * schedule_steps),
        schedule=stage.schedule,
        weight_decay=stage.weight_decay,
        max_grad_norm=stage.max_grad_norm,
    )


def _stage_loader(stage: StageConfig, data: PreferenceData, micro_size: int, indices):
    """An endless shuffled iterator of micro-batches: the step plan, not the loader, ends the
    stage, so a fractional epoch continues into the next pass's order."""
    return make_loader(
        data,
        batch_size=micro_size,
        seed=stage.seed,
        shuffle=True,
        num_epochs=None,
        mode=stage.batch_mode,
        max_length=stage.max_length,
        max_completion_tokens=stage.max_completion_tokens,
        indices=indices,
    )


def _init_fn(model_config: ModelConfig, optimizer, seed: int, base=None):
    """``init(params, opt_state=None)``: a fresh train state, with ``opt_state`` instead of a
    new optimizer state when given (a stage continuing another's moments and schedule). With
    LoRA ``params`` are the adapters, fresh ones for ``base`` when None."""
    rng = jax.random.key(seed)
    base_shapes = None if base is None else jax.eval_shape(lambda: base)

    def init(params, opt_state=None):
        state = train.init_state(model_config, optimizer, rng, params=params, base=base_shapes)
        return state if opt_state is None else dataclasses.replace(state, opt_state=opt_state)

    return init


@dataclasses.dataclass(frozen=True)
class _StageRun:
    """What a stage's steps read and write besides the train state; fixed for the stage."""

    config: StageConfig
    plan: StepPlan
    step_config: train.StepConfig
    model_config: ModelConfig
    writer: metrics_lib.MetricsWriter
    checkpointer: checkpoint_lib.Checkpointer
    iterator: Any
    expect: dict[str, Any]  # the record keys a checkpoint of this stage must match
    pad_id: int
    mesh: Any = None
    reference: tuple[np.ndarray, np.ndarray] | None = None
    ref_params: Any = None
    example_weights: np.ndarray | None = None
    on_epoch: Callable[..., dict] | None = None
    lora_base: Any = None  # with LoRA: the frozen base the adapters train over

    def model_params(self, trained):
        """The parameters the model runs with: the trained ones, or the base with them."""
        return trained if self.lora_base is None else lora_lib.attach(self.lora_base, trained)


def _start(
    run: _StageRun,
    init,
    abstract_state,
    state_sharding,
    init_params,
    init_opt_state,
    donate: bool = False,
):
    """(state, step, open logging window's sums) to start from: the stage's latest checkpoint
    if it has one — the iterator moves to the checkpoint's position and the metrics records
    past it are dropped, as they will be logged again — else a fresh state at step 0
    (``donate``: built in the buffers of ``init_params`` and ``init_opt_state``, no copy)."""
    checkpointer = run.checkpointer
    if checkpointer.latest_step() is None:
        donated = (0, 1) if donate else ()
        state = jax.jit(init, out_shardings=state_sharding, donate_argnums=donated)(
            init_params, init_opt_state
        )
        return state, 0, None
    state, record = checkpointer.restore(
        _abstract_with_shardings(abstract_state, state_sharding), expect=run.expect
    )
    run.iterator.set_state(record["iterator"])
    start_step = int(record["step"])
    run.writer.drop_after(run.config.name, start_step)
    logging.info("%s: resumed at step %d of %d", run.config.name, start_step, run.plan.total_steps)
    return state, start_step, record.get("metrics_window")


def host_batch(
    iterator,
    micro_batches: int,
    *,
    pad_id: int,
    example_weights_N: np.ndarray | None = None,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """One update's [K, ...] host arrays: K micro-batches from ``iterator``, each pair's weight
    multiplied by its ``example_weights_N`` entry (the w-step, docs/method.md §3.2; padding
    slots weigh 0), the cached reference log-probs ``(chosen_N, rejected_N)`` joined, and the
    micro-batches padded to one shape."""
    batches = []
    for _ in range(micro_batches):
        batch = next(iterator)
        if example_weights_N is not None:
            index_B = batch["example_index"]
            weight_B = np.where(index_B >= 0, example_weights_N[np.maximum(index_B, 0)], 0.0)
            batch = {**batch, "weight": batch["weight"] * weight_B.astype(np.float32)}
        if reference is not None:
            batch = scoring.join_reference(batch, *reference)
        batches.append(batch)
    return batching.stack_micro_batches(batches, pad_id=pad_id)


def window_record(
    stage_name: str, step: int, totals: dict[str, float], seconds: float, peak_flops
) -> dict[str, Any]:
    """The metrics record of a logging window: exact means and counts, tokens/s, and MFU — the
    window's model FLOPs (``model_flops``: each step's tokens at its own padded length) per
    second over the peak of every device (None without a known peak or elapsed time)."""
    record = {"stage": stage_name, "step": step, **metrics_lib.finalize(totals)}
    timed = seconds > 0
    record["tokens_per_s"] = float(totals["tokens"]) / seconds if timed else None
    record["mfu"] = None
    if timed and peak_flops:
        flops_per_s = float(totals.get("model_flops", 0.0)) / seconds
        record["mfu"] = flops_per_s / (peak_flops * jax.device_count())
    return record


@dataclasses.dataclass
class LogWindow:
    """The loop's running metrics between logged steps.

    ``sums``: the fetched steps' sums since the last logged step, each step's model FLOPs under
    ``model_flops``; a checkpoint carries them, so a resumed run logs what an uninterrupted one
    does. ``pending``: (device sums, padded length) of the steps not fetched yet — a fetch waits
    for the device, so it happens only at logging, checking and saving steps. ``started``: the
    ``time.perf_counter()`` the window's time counts from."""

    sums: dict[str, float] | None = None
    pending: list[tuple[Any, int]] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, sums, seq_len: int) -> None:
        self.pending.append((sums, seq_len))

    def fetch(self, model_config: ModelConfig) -> float:
        """Adds the pending steps' sums to the window; returns how many were not finite."""
        fetched = jax.device_get([sums for sums, _ in self.pending])
        nonfinite = 0.0
        for sums, (_, seq_len) in zip(fetched, self.pending, strict=True):
            flops = metrics_lib.flops_per_token(model_config, seq_len) * float(sums["tokens"])
            self.sums = metrics_lib.accumulate(self.sums, {**sums, "model_flops": flops})
            nonfinite += float(sums["nonfinite"])
        self.pending = []
        return nonfinite

    def close(self, stage_name: str, step: int, peak_flops) -> dict[str, Any]:
        """The window's record (``window_record``); a new, empty window starts now."""
        now = time.perf_counter()
        record = window_record(stage_name, step, self.sums, now - self.started, peak_flops)
        self.sums, self.started = None, now
        return record


def check_finite(stage_name: str, step: int, nonfinite: float, checkpoint_dir: str) -> None:
    """``nan_policy="stop"``: a step with a non-finite loss or gradient ends the stage before
    it is saved, so the latest checkpoint is the last good state."""
    if nonfinite > 0:
        raise FloatingPointError(
            f"{stage_name}: non-finite loss or gradient at step {step}; the last good "
            f"checkpoint is in {checkpoint_dir} (nan_policy='stop')"
        )


def _epoch_hook(run: _StageRun, params, done: int) -> None:
    """At an epoch end, ``on_epoch(params, final)``'s record goes to the metrics as
    ``kind="dynamics"`` (docs/method.md §5.3); ``final`` marks the stage's last step."""
    if run.on_epoch is None or done not in run.plan.epoch_ends:
        return
    record = run.on_epoch(params, final=done == run.plan.total_steps)
    if record:  # an empty record: the hook measured nothing to log
        run.writer.write(
            {
                "stage": run.config.name,
                "kind": "dynamics",
                "step": done,
                "round_epoch": done / run.plan.steps_per_epoch,
                **record,
            }
        )


def _save(run: _StageRun, done: int, state, window_sums) -> None:
    """A checkpoint after step ``done``: the state, the iterator's position (the next batch)
    and the open logging window, so a resumed stage continues exactly."""
    record = {
        "step": done,
        "iterator": run.iterator.get_state(),
        "metrics_window": window_sums,
        **run.expect,
    }
    run.checkpointer.save(done, state, record, force=True)


def _after_step(run: _StageRun, window: LogWindow, state, done: int, peak_flops, progress):
    """Step ``done``'s host work: fetch its sums if it logs, checks or saves; log; the NaN
    stop; the epoch hook; the checkpoint. Other steps leave the device running ahead."""
    stage, total_steps = run.config, run.plan.total_steps
    nan_stop = run.step_config.nan_policy == "stop"
    logs = done % stage.log_every == 0 or done == total_steps
    saves = done % stage.checkpoint_every == 0 or done == total_steps
    # nan_stop fetches every step, so the count is this step's alone.
    nonfinite = window.fetch(run.model_config) if nan_stop or logs or saves else 0.0
    if logs:
        record = window.close(stage.name, done, peak_flops)
        run.writer.write(record)
        progress.set_postfix(
            loss=f"{record['loss']:.4f}",
            acc=f"{record.get('rewards/accuracies', float('nan')):.2f}",
            tok_s=f"{record['tokens_per_s'] or 0:.0f}",
        )
    if nan_stop:
        check_finite(stage.name, done, nonfinite, run.checkpointer.directory)
    _epoch_hook(run, run.model_params(state.params), done)
    progress.update(1)
    if saves:
        _save(run, done, state, window.sums)


def _run_steps(run: _StageRun, state, step_fn, start_step: int, window_sums):
    """Steps ``start_step + 1`` … ``total_steps`` from ``state``; returns the final state."""
    stage = run.config
    window = LogWindow(sums=window_sums)
    peak_flops = metrics_lib.device_peak_flops()
    with processes.progress(
        total=run.plan.total_steps, initial=start_step, desc=stage.name, unit="step"
    ) as progress:
        for step in range(start_step, run.plan.total_steps):
            stacked = host_batch(
                run.iterator,
                stage.micro_batches,
                pad_id=run.pad_id,
                example_weights_N=run.example_weights,
                reference=run.reference,
            )
            device_batch = sharding.put_batch(stacked, run.mesh, micro_axis=True)
            state, sums = step_fn(state, device_batch, run.ref_params)
            window.add(sums, stacked["tokens"].shape[-1])
            _after_step(run, window, state, step + 1, peak_flops, progress)
    return state


def run_stage(
    stage: StageConfig,
    step_config: train.StepConfig,
    model_config: ModelConfig,
    init_params,
    data: PreferenceData,
    *,
    workdir: str,
    writer: metrics_lib.MetricsWriter,
    mesh=None,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    ref_params=None,
    example_weights: np.ndarray | None = None,
    indices: np.ndarray | None = None,
    on_epoch=None,
    init_opt_state=None,
    donate_init: bool = False,
    return_state: bool = False,
):
    """Trains ``init_params`` on ``data`` and returns the final parameters.

    ``reference``: cached (chosen_N, rejected_N) reference log-probs in stored orientation;
    ``ref_params`` for the online mode; ``example_weights`` [N] multiply the batch weights (the
    ROPO w-step); ``indices`` restrict the stage to those examples. ``on_epoch(params, final)`` is
    called at every epoch boundary (and the last step, ``final=True``) and returns a record
    written to the metrics as ``kind="dynamics"`` (``ropo_jax.evaluation.dynamics``; an empty
    record is not written).
    ``init_opt_state``: start from this optimizer state (moments and schedule position, e.g.
    the previous ROPO round's) instead of a fresh one. ``donate_init``: the caller hands
    ``init_params`` and ``init_opt_state`` over — the initial state is built in their buffers
    (they are deleted) instead of beside a copy, which would otherwise stay alive for the whole
    stage (one parameter copy; two more with an optimizer state); only for arrays the caller
    never reads again (with LoRA only the adapters are handed over, never the base). Returns
    the final parameters, or the final TrainState with ``return_state`` (with LoRA both hold
    the adapted parameters, base and adapters, as ``params``).

    With LoRA the base of ``init_params`` is frozen and is the reference of the online mode
    (``ref_params`` is then not read): the model with its adapters off.
    """
    plan = step_plan(stage, len(data) if indices is None else len(indices))
    optimizer = _stage_optimizer(stage, plan.total_steps)
    lora_base = None
    if model_config.lora is not None:
        lora_base, init_params = lora_lib.detach(init_params)  # the adapters (None: fresh)
        ref_params = lora_base
    init = _init_fn(model_config, optimizer, stage.seed, base=lora_base)
    abstract_state = jax.eval_shape(init, init_params)
    state_sharding = None
    if mesh is not None:
        state_sharding = train.state_shardings(model_config, optimizer, mesh, abstract_state)
    checkpointer = checkpoint_lib.Checkpointer(
        os.path.join(workdir, "checkpoints", stage.name), keep=stage.keep_checkpoints
    )
    try:  # closing waits for the asynchronous saves, however the stage ends
        run = _StageRun(
            config=stage,
            plan=plan,
            # The loader's mode decides the row layout, so the step's attention can rely on it.
            step_config=dataclasses.replace(
                step_config, one_sequence_per_row=stage.batch_mode != "packed"
            ),
            model_config=model_config,
            writer=writer,
            checkpointer=checkpointer,
            iterator=_stage_loader(stage, data, plan.micro_size, indices),
            expect={
                "model_config": model_config.record(),
                "stage": checkpoint_lib.config_record(stage),
            },
            pad_id=data.pad_id,
            mesh=mesh,
            reference=reference,
            ref_params=ref_params,
            example_weights=example_weights,
            on_epoch=on_epoch,
            lora_base=lora_base,
        )
        state, start_step, window_sums = _start(
            run, init, abstract_state, state_sharding, init_params, init_opt_state, donate_init
        )
        del init_params, init_opt_state  # this frame's references (donated ones are deleted)
        if start_step < plan.total_steps:
            step_fn = train.make_train_step(
                stage.kind, run.step_config, model_config, optimizer, state_sharding=state_sharding
            )
            state = _run_steps(run, state, step_fn, start_step, window_sums)
    finally:
        checkpointer.close()
    state = dataclasses.replace(state, params=run.model_params(state.params))
    return state if return_state else state.params
