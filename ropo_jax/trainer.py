"""The training loop of one stage (SFT, or preference training for some epochs): data iterator,
micro-batch accumulation, reference join, the jitted step, logging and checkpoints.

Resume is exact: a checkpoint holds the train state and the data iterator's position, and the
loop restarts at the next batch with the same state, so a killed-and-rerun stage ends with
bit-identical parameters. No host synchronisation happens inside the loop except at logging
steps (and every step with ``nan_policy="stop"``, which must look at each step's result).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import numpy as np
from absl import logging

from ropo_jax import batches as batches_lib
from ropo_jax import checkpoint as checkpoint_lib
from ropo_jax import metrics as metrics_lib
from ropo_jax import optim, processes, scoring, train
from ropo_jax.data.loader import make_loader
from ropo_jax.data.prepared import PreferenceData
from ropo_jax.errors import ConfigValueError
from ropo_jax.models import ModelConfig


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
    return_state: bool = False,
):
    """Trains ``init_params`` on ``data`` and returns the final parameters.

    ``reference``: cached (chosen_N, rejected_N) reference log-probs in stored orientation;
    ``ref_params`` for the online mode; ``example_weights`` [N] multiply the batch weights (the
    ROPO w-step); ``indices`` restrict the stage to those examples. ``on_epoch(params, final)`` is
    called at every epoch boundary (and the last step, ``final=True``) and returns a record
    written to the metrics as ``kind="dynamics"`` (``ropo_jax.dynamics``; an empty record is
    not written).
    ``init_opt_state``: start from this optimizer state (moments and schedule position, e.g.
    the previous ROPO round's) instead of a fresh one. Returns the final parameters, or the
    final TrainState with ``return_state``.
    """
    micro_size = stage.batch_size // stage.micro_batches
    if micro_size * stage.micro_batches != stage.batch_size:
        raise ConfigValueError(
            f"{stage.name}.batch_size={stage.batch_size} is not divisible by "
            f"micro_batches={stage.micro_batches}"
        )
    num_examples = len(data) if indices is None else len(indices)
    batches_per_epoch = num_examples // micro_size
    steps_per_epoch = batches_per_epoch / stage.micro_batches
    total_steps = math.floor(stage.epochs * steps_per_epoch)
    epoch_ends = {
        min(total_steps, math.floor(k * steps_per_epoch))
        for k in range(1, 1 + math.ceil(stage.epochs))
    }
    if total_steps < 1:
        raise ConfigValueError(
            f"{stage.name}: {num_examples} examples give no full update of batch_size="
            f"{stage.batch_size}; lower the batch size or add data"
        )
    schedule_steps = stage.schedule_steps or total_steps
    optimizer = optim.make_optimizer(
        learning_rate=stage.learning_rate,
        total_steps=schedule_steps,
        warmup_steps=int(stage.warmup_ratio * schedule_steps),
        schedule=stage.schedule,
        weight_decay=stage.weight_decay,
        max_grad_norm=stage.max_grad_norm,
    )
    rng = jax.random.key(stage.seed)

    def init_fn(p, opt_state=None):
        state = train.init_state(model_config, optimizer, rng, params=p)
        return state if opt_state is None else dataclasses.replace(state, opt_state=opt_state)

    abstract_state = jax.eval_shape(init_fn, init_params)
    state_sharding = None
    if mesh is not None:
        state_sharding = train.state_shardings(model_config, optimizer, mesh, abstract_state)
    checkpointer = checkpoint_lib.Checkpointer(
        os.path.join(workdir, "checkpoints", stage.name), keep=stage.keep_checkpoints
    )
    expect = {
        "model_config": checkpoint_lib.config_record(model_config),
        "stage": checkpoint_lib.config_record(stage),
    }
    iterator = make_loader(
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
    start_step, window = 0, None  # window: the sums since the last logged step
    if checkpointer.latest_step() is not None:
        state, record = checkpointer.restore(
            _abstract_with_shardings(abstract_state, state_sharding), expect=expect
        )
        iterator.set_state(record["iterator"])
        start_step = int(record["step"])
        window = record.get("metrics_window")
        writer.drop_after(stage.name, start_step)
        logging.info("%s: resumed at step %d of %d", stage.name, start_step, total_steps)
    else:
        state = jax.jit(init_fn, out_shardings=state_sharding)(init_params, init_opt_state)
    if start_step >= total_steps:
        checkpointer.close()
        return state if return_state else state.params
    # The loader's mode decides the row layout, so the step's attention can rely on it.
    step_config = dataclasses.replace(
        step_config, one_sequence_per_row=stage.batch_mode != "packed"
    )
    step_fn = train.make_train_step(
        stage.kind,
        step_config,
        model_config,
        optimizer,
        state_sharding=state_sharding,
    )
    pending, last_time = [], time.perf_counter()
    peak = metrics_lib.device_peak_flops()
    progress = processes.progress(
        total=total_steps, initial=start_step, desc=stage.name, unit="step"
    )
    for step in range(start_step, total_steps):
        host_batches = []
        for _ in range(stage.micro_batches):
            batch = next(iterator)
            if example_weights is not None:
                real = batch["example_index"] >= 0
                batch["weight"] = batch["weight"] * np.where(
                    real, example_weights[np.maximum(batch["example_index"], 0)], 0.0
                ).astype(np.float32)
            if reference is not None:
                batch = scoring.join_reference(batch, *reference)
            host_batches.append(batch)
        stacked = batches_lib.stack_micro_batches(host_batches, pad_id=data.pad_id)
        device_batch = batches_lib.put_batch(stacked, mesh, micro_axis=True)
        state, sums = step_fn(state, device_batch, ref_params)
        pending.append(sums)
        done = step + 1
        must_check = step_config.nan_policy == "stop" or done % stage.log_every == 0
        saving = done % stage.checkpoint_every == 0 or done == total_steps
        nonfinite_now = 0.0
        if must_check or saving:
            fetched = jax.device_get(pending)
            pending = []
            for sums_of_step in fetched:
                window = metrics_lib.accumulate(window, sums_of_step)
            nonfinite_now = sum(float(f["nonfinite"]) for f in fetched)
        if done % stage.log_every == 0 or done == total_steps:
            totals, window = window, None
            seconds = time.perf_counter() - last_time
            last_time = time.perf_counter()
            record = {"stage": stage.name, "step": done, **metrics_lib.finalize(totals)}
            record["nonfinite"] = float(totals["nonfinite"])
            tokens = float(totals["tokens"])
            record["tokens_per_s"] = tokens / seconds if seconds > 0 else None
            seq_len = stacked["tokens"].shape[-1]
            flops = metrics_lib.flops_per_token(model_config, seq_len) * tokens
            record["mfu"] = (
                flops / seconds / (peak * jax.device_count()) if peak and seconds > 0 else None
            )
            writer.write(record)
            progress.set_postfix(
                loss=f"{record['loss']:.4f}",
                acc=f"{record.get('rewards/accuracies', float('nan')):.2f}",
                tok_s=f"{record['tokens_per_s'] or 0:.0f}",
            )
        # nan_policy="stop" makes every step a check, so nonfinite_now is this step's count.
        if step_config.nan_policy == "stop" and nonfinite_now > 0:
            checkpointer.close()
            raise FloatingPointError(
                f"{stage.name}: non-finite loss or gradient at step {done}; the last good "
                f"checkpoint is in {checkpointer.directory} (nan_policy='stop')"
            )
        if on_epoch is not None and (done in epoch_ends or done == total_steps):
            record = on_epoch(state.params, final=done == total_steps)
            if record:  # an empty record: the hook measured nothing to log
                writer.write(
                    {
                        "stage": stage.name,
                        "kind": "dynamics",
                        "step": done,
                        "round_epoch": done / steps_per_epoch,
                        **record,
                    }
                )
        progress.update(1)
        if saving:
            checkpointer.save(
                done,
                state,
                {
                    "step": done,
                    "iterator": iterator.get_state(),
                    "metrics_window": window,
                    **expect,
                },
                force=True,
            )
    progress.close()
    checkpointer.close()
    return state if return_state else state.params
