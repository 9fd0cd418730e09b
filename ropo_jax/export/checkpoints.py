"""The parameters of a stored Orbax checkpoint of a run (``WORKDIR/checkpoints/<stage>/<step>``),
without its optimizer state, and the ModelConfig it was written for. A LoRA run's checkpoints
hold its adapters only; ``lora_base`` reads the frozen base they train over again."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax

from ropo_jax.export.info import (
    _ROUND,
    CHECKPOINTS,
    ExportError,
    read_export_info,
)


class Restored(NamedTuple):
    model_config: Any  # models.ModelConfig
    params: Any  # the trained parameters: with LoRA (model_config.lora) the adapters only
    stage: str
    step: int


def _steps(stage_dir: str) -> list[int]:
    """The finished Orbax steps of a stage directory (unfinished saves have a suffix)."""
    if not os.path.isdir(stage_dir):
        return []
    return sorted(int(n) for n in os.listdir(stage_dir) if n.isdigit())


def available_checkpoints(workdir: str) -> dict[str, list[int]]:
    """``{stage name: [steps]}`` of the stages of ``workdir`` that saved a checkpoint."""
    if not os.path.isdir(workdir):
        raise ExportError(f"workdir {workdir} does not exist")
    root = os.path.join(workdir, CHECKPOINTS)
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    found = {name: _steps(os.path.join(root, name)) for name in names}
    return {name: steps for name, steps in found.items() if steps}


def _describe(found: dict[str, list[int]]) -> str:
    if not found:
        return "no stage has saved a checkpoint yet"
    return "checkpoints: " + ", ".join(f"{name} (steps {steps})" for name, steps in found.items())


def default_stage(found: dict[str, list[int]]) -> str | None:
    """The last preference round with a checkpoint, else ``sft``, else None."""
    rounds = [(int(m.group(1)), n) for n in found if (m := _ROUND.fullmatch(n))]
    if rounds:
        return max(rounds)[1]
    return "sft" if "sft" in found else None


def resolve_checkpoint(
    workdir: str, *, stage: str | None = None, step: int | None = None
) -> tuple[str, int]:
    """The (stage, step) to export; raises ExportError naming the checkpoints that exist."""
    found = available_checkpoints(workdir)
    where = os.path.join(workdir, CHECKPOINTS)
    if stage is None:
        stage = default_stage(found)
        if stage is None:
            raise ExportError(f"{where}: no preference round or sft checkpoint; {_describe(found)}")
    elif stage not in found:
        raise ExportError(f"{where}: no checkpoint of stage {stage!r}; {_describe(found)}")
    if step is None:
        return stage, found[stage][-1]
    if step not in found[stage]:
        raise ExportError(
            f"{where}/{stage}: no checkpoint of step {step}; steps {found[stage]} are kept"
        )
    return stage, step


def read_model_config(workdir: str, stage: str, step: int):
    """The ModelConfig in the record of a checkpoint (no arrays are read)."""
    from ropo_jax import models
    from ropo_jax.training import checkpoint as checkpoint_lib

    directory = os.path.join(workdir, CHECKPOINTS, stage)
    checkpointer = checkpoint_lib.Checkpointer(directory, async_save=False)
    try:
        record = checkpointer.read_record(step)
    finally:
        checkpointer.close()
    if "model_config" not in record:
        raise ExportError(f"{directory}/{step}: the checkpoint record has no model_config")
    return models.ModelConfig.from_record(record["model_config"])


def restore_params(
    workdir: str, *, stage: str | None = None, step: int | None = None, mesh=None
) -> Restored:
    """Only the parameters (and the ModelConfig of the record) of the checkpoint
    ``WORKDIR/checkpoints/<stage>/<step>`` (defaults: see :func:`resolve_checkpoint`); the
    optimizer state is not read. With ``mesh`` the parameters land in their shardings (logical
    axes), otherwise on the default device."""
    from ropo_jax import models
    from ropo_jax.models import lora as lora_lib
    from ropo_jax.parallel import sharding as sharding_lib
    from ropo_jax.training import checkpoint as checkpoint_lib

    stage, step = resolve_checkpoint(workdir, stage=stage, step=step)
    config = read_model_config(workdir, stage, step)
    checkpointer = checkpoint_lib.Checkpointer(
        os.path.join(workdir, CHECKPOINTS, stage), async_save=False
    )
    try:
        abstract = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
        axes = models.param_logical_axes(config)
        if config.lora is not None:  # the checkpoint holds the adapters of these weights
            layers, dtype = abstract["layers"], config.param_dtype
            abstract = jax.eval_shape(
                lambda: lora_lib.init_adapters(config.lora, layers, jax.random.key(0), dtype)
            )
            axes = lora_lib.logical_axes(config.lora, axes)
        if mesh is not None:
            shardings = sharding_lib.tree_shardings(mesh, axes, abstract)
        else:
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            shardings = jax.tree.map(lambda _: device, abstract)
        abstract = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
        )
        params = checkpointer.restore_params(abstract, step=step)
    finally:
        checkpointer.close()
    return Restored(config, params, stage, step)


def lora_base_source(workdir: str, stage: str) -> dict:
    """Where the frozen base of a LoRA stage comes from, as the run recorded it in
    ``export_info.json``: ``{"hf_path": absolute DIR}`` or ``{"init_seed": S}`` (SFT trains
    over the initial model, the preference rounds over WORKDIR/sft_model after SFT)."""
    bases = read_export_info(workdir).get("lora_base_models")
    if not bases:
        raise ExportError(
            f"{workdir}/export_info.json does not record the LoRA base of the run; re-run the "
            "experiment command once to write it"
        )
    source = dict(bases["sft" if stage == "sft" else "preference"])
    if "hf_path" in source:
        source["hf_path"] = os.path.abspath(os.path.join(workdir, source["hf_path"]))
        if not os.path.isdir(source["hf_path"]):
            raise ExportError(f"the LoRA base {source['hf_path']} of stage {stage} is missing")
    return source


def lora_base(workdir: str, stage: str, config, *, mesh=None):
    """The frozen base parameters a LoRA stage trained over, as the run held them (in their
    checkpoint's dtype, random ones in the compute dtype: ``models.lora.base_dtype``), in their
    shardings on ``mesh``."""
    from ropo_jax import models
    from ropo_jax.models import lora as lora_lib
    from ropo_jax.parallel import sharding as sharding_lib

    source = lora_base_source(workdir, stage)
    if "hf_path" in source:
        path = source["hf_path"]
        dtype = lora_lib.base_dtype(config.dtype, models.stored_dtype(path))
        return models.load_hf(path, dtype=dtype, mesh=mesh)[1]
    dtype = lora_lib.base_dtype(config.dtype)
    # A preset's random weights, drawn as the run drew them (pipeline.build_model).
    weights_config = config.replace(param_dtype=dtype, lora=None)
    params = models.init_params(weights_config, jax.random.key(source["init_seed"]))
    if mesh is None:
        return params
    axes = models.param_logical_axes(weights_config)
    return jax.device_put(params, sharding_lib.tree_shardings(mesh, axes, params))
