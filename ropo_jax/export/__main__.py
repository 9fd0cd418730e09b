"""``python -m ropo_jax.export --workdir=W --output=DIR [--round=T | --stage=sft] [--step=S]
[--dtype=bfloat16] [--max_shard_gb=2] [--adapter_only]``: one stored checkpoint of a run as a
Hugging Face model directory, or a LoRA run's adapters as a PEFT adapter directory (see the
package docstring)."""

from __future__ import annotations

import os

from ropo_jax.config.flags import TRACEBACK_ENV, exit_with
from ropo_jax.errors import UserError
from ropo_jax.export.adapter import export_adapter
from ropo_jax.export.checkpoints import (
    lora_base,
    lora_base_source,
    read_model_config,
    resolve_checkpoint,
    restore_params,
)
from ropo_jax.export.info import (
    CHECKPOINTS,
    DTYPES,
    EXPORT_INFO,
    ExportError,
    read_export_info,
)
from ropo_jax.export.model_dir import (
    export_model,
    is_exported,
)
from ropo_jax.parallel import processes


def stage_from_flags(round_: int | None, stage: str | None) -> str | None:
    if round_ is not None and stage is not None:
        raise ExportError("pass --round or --stage, not both")
    if round_ is not None:
        if round_ < 1:
            raise ExportError(f"--round={round_}: preference rounds are numbered from 1")
        return f"round_{round_}"
    return stage


def _read_chat_template(path: str | None) -> str | None:
    if not path:
        return None
    if not os.path.isfile(path):
        raise ExportError(f"chat template {path} (recorded in {EXPORT_INFO}) not found")
    with open(path, encoding="utf-8") as f:
        return f.read()


def run_export(
    workdir: str,
    output_dir: str,
    *,
    stage: str | None = None,
    step: int | None = None,
    dtype: str | None = None,
    max_shard_bytes: int = 2 * 1024**3,
    adapter_only: bool = False,
) -> str:
    """The command line's work: restore, export (unless this export is there), a summary.
    ``adapter_only``: a LoRA checkpoint's adapters as a PEFT adapter directory."""
    from ropo_jax.models import lora as lora_lib
    from ropo_jax.parallel import sharding as sharding_lib

    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype={dtype}: choose one of {DTYPES}")
    if not os.path.isdir(workdir):
        raise ExportError(f"workdir {workdir} does not exist")
    info = read_export_info(workdir)
    if adapter_only:  # the adapters and their base's name: no tokenizer needed
        stage, step = resolve_checkpoint(workdir, stage=stage, step=step)
        config = read_model_config(workdir, stage, step)
        return _export_adapter_only(workdir, output_dir, stage, step, config, dtype)
    if not info.get("tokenizer"):
        raise ExportError(
            f"{os.path.join(workdir, EXPORT_INFO)} records no tokenizer (the run had no "
            "data.tokenizer); an export needs one"
        )
    chat_template = _read_chat_template(info.get("chat_template"))
    stage, step = resolve_checkpoint(workdir, stage=stage, step=step)
    config = read_model_config(workdir, stage, step)
    saved_dtype = dtype or config.param_dtype
    provenance = {
        "workdir": os.path.abspath(workdir),
        "source": os.path.join(CHECKPOINTS, stage),
        "stage": stage,
        "step": step,
        "dtype": saved_dtype,
        "tokenizer": info["tokenizer"],
        "chat_template": info.get("chat_template"),
    }
    summary = (
        f"{config.architecture} model of {stage} step {step} "
        f"({config.num_params():,} parameters, {saved_dtype})"
    )
    if is_exported(output_dir, provenance):
        return f"{os.path.abspath(output_dir)}: already exported ({summary})"
    mesh = sharding_lib.make_mesh((1, -1, 1))
    restored = restore_params(workdir, stage=stage, step=step, mesh=mesh)
    params = restored.params
    if config.lora is not None:  # merged into the base the adapters trained over
        params = lora_lib.attach(lora_base(workdir, stage, config, mesh=mesh), params)
    export_model(
        restored.model_config,
        params,
        output_dir,
        tokenizer_dir=info["tokenizer"],
        chat_template=chat_template,
        dtype=saved_dtype,
        max_shard_bytes=max_shard_bytes,
        provenance=provenance,
    )
    return f"exported {summary} to {os.path.abspath(output_dir)}"


def _export_adapter_only(workdir, output_dir, stage, step, config, dtype) -> str:
    """``--adapter_only``: the adapters of a LoRA checkpoint as a PEFT adapter directory whose
    ``adapter_config.json`` names the stage's base model."""
    from ropo_jax.parallel import sharding as sharding_lib

    if config.lora is None:
        raise ExportError(
            f"--adapter_only: stage {stage} was trained without LoRA (model.lora.rank=0); "
            "export the whole model without --adapter_only"
        )
    base_model = lora_base_source(workdir, stage).get("hf_path")
    provenance = {
        "workdir": os.path.abspath(workdir),
        "source": os.path.join(CHECKPOINTS, stage),
        "stage": stage,
        "step": step,
        "dtype": dtype or config.param_dtype,
        "adapter_only": True,
        "base_model": base_model,
    }
    targets = ", ".join(config.lora.targets)
    on = base_model or "the run's random base"
    summary = f"LoRA adapter of {stage} step {step} (rank {config.lora.rank}, {targets}) on {on}"
    if is_exported(output_dir, provenance):
        return f"{os.path.abspath(output_dir)}: already exported ({summary})"
    mesh = sharding_lib.make_mesh((1, -1, 1))
    restored = restore_params(workdir, stage=stage, step=step, mesh=mesh)
    export_adapter(
        config,
        restored.params,
        output_dir,
        base_model=base_model,
        dtype=dtype,
        provenance=provenance,
    )
    return f"exported {summary} to {os.path.abspath(output_dir)}"


def cli() -> None:
    """``python -m ropo_jax.export``: the flags, then ``run_export`` (one line on error, exit 2)."""
    from absl import app, flags

    workdir = flags.DEFINE_string("workdir", None, "Run directory (its checkpoints/).")
    output = flags.DEFINE_string("output", None, "The model directory to write.")
    round_ = flags.DEFINE_integer("round", None, "Export preference round T (stage round_T).")
    stage = flags.DEFINE_string("stage", None, "Export this stage (e.g. sft).")
    step = flags.DEFINE_integer("step", None, "A step of the stage (default: its latest).")
    dtype = flags.DEFINE_string(
        "dtype", None, f"Saved dtype, one of {DTYPES} (default: as trained)."
    )
    max_shard_gb = flags.DEFINE_float("max_shard_gb", 2.0, "Largest safetensors file, in GiB.")
    adapter_only = flags.DEFINE_bool(
        "adapter_only",
        False,
        "A LoRA run: write the adapters as a PEFT adapter directory instead of the merged model.",
    )
    flags.mark_flags_as_required(["workdir", "output"])

    def main(argv) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments {argv[1:]}")
        try:
            summary = run_export(
                workdir.value,
                output.value,
                stage=stage_from_flags(round_.value, stage.value),
                step=step.value,
                dtype=dtype.value,
                max_shard_bytes=int(max_shard_gb.value * 1024**3),
                adapter_only=adapter_only.value,
            )
        except UserError as error:
            if os.environ.get(TRACEBACK_ENV):
                raise
            exit_with(str(error))
        if processes.is_writer():
            print(summary)

    app.run(main)


if __name__ == "__main__":
    cli()
