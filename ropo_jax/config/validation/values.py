"""Checks 1 and 2 of ``validate``: every key's type and range, the rules between keys of one
block, and the mesh and batch layout against the devices and processes. Reads no file.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from ropo_jax.config.validation.rules import (
    BLOCK_RULES,
    BOOL,
    SYNTHETIC_DATA_RULES,
    SYNTHETIC_TASK_RULES,
    UNIFORM_RATE_KINDS,
    block_of,
    check,
    check_block,
    fail,
    integer,
    is_int,
    is_real,
    one_of,
    suggest,
    value_of,
)
from ropo_jax.instructions.dataset import DataConfig as InstructionsConfig
from ropo_jax.losses import registry
from ropo_jax.losses.pairwise import HYPERPARAM_RULES, LCPO_BASES
from ropo_jax.models.config import PRESETS
from ropo_jax.ropo.options import FRAMEWORK_FILTER_RATIO, FRAMEWORK_METHODS
from ropo_jax.synthetic.dataset import DataConfig
from ropo_jax.synthetic.task import TaskConfig

# --- 1. values --------------------------------------------------------------------------------


def _check_stages(config) -> None:
    for block in ("sft", "train"):
        size = value_of(config, f"{block}.batch_size")
        micro = value_of(config, f"{block}.micro_batches")
        if size % micro:
            fail(
                f"config.{block}.micro_batches={micro}: must divide config.{block}.batch_size="
                f"{size} (each update is micro_batches steps of batch_size / micro_batches)"
            )
    if config.method == "sft" and not config.sft.enabled:
        fail("config.method='sft' needs config.sft.enabled=True (SFT is the whole run)")


def _check_noise(config) -> None:
    kind, rate = config.noise.kind, config.noise.rate
    if kind in UNIFORM_RATE_KINDS and not rate < 0.5:
        fail(
            f"config.noise.rate={rate!r}: {kind} noise needs a rate in [0, 0.5): at 0.5 the "
            "labels carry no signal and above it most of them are inverted; use a rate < 0.5"
        )
    if kind == "none" and rate != 0:
        fail(
            f"config.noise.rate={rate!r} has no effect with config.noise.kind='none'; set "
            "--config.noise.kind=symmetric (or another kind) or leave the rate at 0"
        )
    if config.noise.exact and kind == "bradley_terry":
        fail(
            "config.noise.exact=True fixes the number of flips of a noise model with one flip "
            "probability; bradley_terry's differs per pair: set --config.noise.exact=False"
        )


def _check_loss(config) -> None:
    """The knobs the method's loss takes (pipeline.loss_hyperparams): ``sft`` is scored with
    dpo's, a framework method trains with its loss's (``ropo_full`` ropo's, ``holder_full``
    holder_dpo's); a negative label_smoothing/flip_rate means the noise rate. Then the loss
    registry's own check of the whole set (``hyperparams_from``)."""
    method = config.method
    loss = {**FRAMEWORK_METHODS, "sft": "dpo"}.get(method, method)
    knobs = dict(block_of(config, "loss"))
    for key in ("label_smoothing", "flip_rate"):
        if is_real(knobs.get(key)) and knobs[key] < 0:
            knobs[key] = min(float(config.noise.rate), 0.49)
    for key in registry.LOSSES[loss].hyperparams:
        if key not in knobs:
            continue
        value = knobs[key]
        if key == "ipo_average":
            check("loss.ipo_average", value, BOOL)
        elif key == "base":  # lcpo_em's base loss
            check("loss.base", value, one_of(sorted(LCPO_BASES)))
        elif key in HYPERPARAM_RULES:
            ok, requirement = HYPERPARAM_RULES[key]
            if not (is_real(value) and ok(float(value))):
                fail(f"config.loss.{key}={config.loss[key]!r}: {requirement} (method {method!r})")
    try:
        registry.hyperparams_from(loss, knobs)
    except ValueError as error:
        fail(f"config.loss (method {method!r}): {error}")


def _check_ropo(config) -> None:
    """What RopoConfig.__post_init__ checks, before SFT and scoring rather than after; a
    framework method's required ρ (``holder_full``: "holder"); Hölder's γ where ρ = "holder"
    reads it but the loss does not take it."""
    method, ratio = config.method, config.ropo.filter_ratio
    required = FRAMEWORK_FILTER_RATIO.get(method)
    if required is not None and ratio != required:
        fail(
            f"config.ropo.filter_ratio={ratio!r}: method {method!r} filters the pairs Hölder-DPO "
            f"flags, ⌊N·ε̂⌋ of them: set --config.ropo.filter_ratio={required}"
        )
    gamma = config.loss.get("holder_gamma", registry.DEFAULT_HOLDER_GAMMA)
    ok, requirement = HYPERPARAM_RULES["holder_gamma"]
    if ratio == "holder" and not (is_real(gamma) and ok(float(gamma))):
        fail(
            f"config.loss.holder_gamma={gamma!r}: {requirement} (Hölder's ε̂ of "
            "ropo.filter_ratio='holder')"
        )
    rs = config.ropo.rs
    if rs.selection == "best_vs_worst_original" and not rs.include_original:
        fail(
            "config.ropo.rs.selection='best_vs_worst_original' needs the original responses "
            "among the candidates: set --config.ropo.rs.include_original=True"
        )


def _check_model_values(config) -> None:
    m = config.model
    if not m.hf_path and m.preset not in PRESETS:
        fail(
            f"config.model.preset={m.preset!r}: must be one of {', '.join(sorted(PRESETS))} "
            f"(or set config.model.hf_path){suggest(m.preset, PRESETS)}"
        )


def _check_synthetic(config) -> None:
    if config.task != "synthetic":
        return
    if "synthetic" not in config:
        fail(
            "config.synthetic is missing: task='synthetic' needs the block of "
            "experiments/synthetic.py (data_seed, task, data)"
        )
    check("synthetic.data_seed", value_of(config, "synthetic.data_seed"), integer(0))
    for block, fields, rules in (
        ("synthetic.task", TaskConfig, SYNTHETIC_TASK_RULES),
        ("synthetic.data", DataConfig, SYNTHETIC_DATA_RULES),
    ):
        node = block_of(config, block)
        known = [f.name for f in dataclasses.fields(fields)]
        for key in node:
            if key not in known:
                fail(f"config.{block}.{key}: no such key{suggest(key, known)}")
            check(f"{block}.{key}", node[key], rules[key])
    try:
        task = TaskConfig(**dict(config.synthetic.task))
    except ValueError as error:  # the task's own consistency checks
        fail(f"config.synthetic.task: {error}")
    if task.max_length < task.min_length:
        fail(
            f"config.synthetic.task.max_length={task.max_length}: must be >= "
            f"config.synthetic.task.min_length={task.min_length}"
        )


def _check_instructions(config) -> None:
    if config.task != "instructions":
        return
    if "instructions" not in config:
        fail(
            "config.instructions is missing: task='instructions' needs the block of "
            "experiments/real_model.py"
        )
    known = [f.name for f in dataclasses.fields(InstructionsConfig)]
    for key in config.instructions:
        if key not in known:
            fail(f"config.instructions.{key}: no such key{suggest(key, known)}")
    try:
        InstructionsConfig(**dict(config.instructions))
    except (TypeError, ValueError) as error:  # the block's own consistency checks
        fail(f"config.instructions: {error}")
    if not config.model.hf_path:
        fail(
            "config.model.hf_path is empty: task='instructions' samples its candidates from "
            "a checkpoint; set it to a Hugging Face model directory"
        )


def check_values(config: ml_collections.ConfigDict) -> None:
    """Types and ranges of every key, and the rules between keys; reads nothing."""
    for block, rules in BLOCK_RULES.items():
        check_block(config, block, rules)
    _check_stages(config)
    _check_noise(config)
    _check_loss(config)
    _check_ropo(config)
    _check_model_values(config)
    _check_synthetic(config)
    _check_instructions(config)


# --- 2. layout --------------------------------------------------------------------------------


def mesh_sizes(shape, device_count: int) -> tuple[int, int, int]:
    """The (data, fsdp, tensor) sizes of ``config.mesh.shape`` on ``device_count`` devices, as
    sharding.make_mesh builds them; a ConfigValueError if it cannot."""
    fix = "set one axis to -1 to take the rest, e.g. --config.mesh.shape='(-1,1,1)'"
    if not (
        isinstance(shape, tuple | list)
        and len(shape) == 3
        and all(is_int(s) and (s >= 1 or s == -1) for s in shape)
    ):
        fail(
            f"config.mesh.shape={shape!r}: must be 3 sizes (data, fsdp, tensor), each >= 1 or "
            f"-1; {fix}"
        )
    if list(shape).count(-1) > 1:
        fail(f"config.mesh.shape={tuple(shape)}: at most one axis may be -1 ('the rest')")
    known = math.prod(s for s in shape if s != -1)
    fits = device_count % known == 0 if -1 in shape else known == device_count
    if not fits:
        fail(
            f"config.mesh.shape={tuple(shape)} does not fit the {device_count} device(s): the "
            f"fixed axes (product {known}) must "
            f"{'divide' if -1 in shape else 'equal'} the device count; {fix}"
        )
    return tuple(device_count // known if s == -1 else s for s in shape)


def check_batch_layout(config, sizes: tuple[int, int, int], process_count: int) -> None:
    """Each process loads an equal share of every (micro-)batch (data.loader.BatchPlan). On one
    process nothing else is needed: batches.put_batch replicates a batch dimension the
    (data, fsdp) axes do not divide. Across processes every process's rows must land on its
    own devices, so the per-micro-batch size must divide over data × fsdp as well."""
    batch_ways = sizes[0] * sizes[1]
    per_step = [
        ("train.batch_size", config.train.batch_size // config.train.micro_batches),
        ("eval.batch_size", config.eval.batch_size),  # scoring, evaluation, RS candidates
    ]
    if config.sft.enabled:
        per_step.append(("sft.batch_size", config.sft.batch_size // config.sft.micro_batches))
    for key, size in per_step:
        what = "per micro-batch" if key != "eval.batch_size" else "per batch"
        if size % process_count:
            fail(
                f"config.{key}: {size} examples {what} do not split evenly over the "
                f"{process_count} processes; use a multiple of {process_count}"
            )
        if process_count > 1 and size % batch_ways:
            fail(
                f"config.{key}: {size} examples {what} do not split over the data x fsdp = "
                f"{batch_ways} devices of config.mesh.shape={tuple(config.mesh.shape)}; use a "
                f"multiple of {batch_ways}"
            )
