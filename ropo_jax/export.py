"""Export a trained policy as a Hugging Face model directory.

``python -m ropo_jax.export --workdir=W --output=DIR [--round=T | --stage=sft] [--step=S]
[--dtype=bfloat16]`` restores the parameters of a checkpoint in ``W/checkpoints/<stage>/<step>``
(default: the last preference round that saved one, else ``sft``; the latest step) and writes
``DIR`` so that ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` and
``AutoTokenizer.from_pretrained(DIR)`` load it as it is:

- ``config.json`` (``LlamaForCausalLM`` / ``MistralForCausalLM``) and safetensors, streamed
  tensor by tensor by ``models.save_hf`` (sharded with ``model.safetensors.index.json`` above
  ``max_shard_bytes``);
- ``generation_config.json`` with the BOS/EOS/PAD ids;
- the run's tokenizer (re-saved by transformers) with the run's chat template, if it had one;
- ``export.json``: the provenance (stage, step, dtype, ...), written last.

The directory is assembled beside ``DIR`` and renamed into place, so ``DIR`` is either the
previous export or the complete new one. The tokenizer and chat template of a run come from
``W/export_info.json``, which the pipeline writes at the start of every run
(:func:`write_export_info`). Every process calls :func:`export_model` (fetching sharded
parameters is a collective); only process 0 writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from typing import Any, NamedTuple

import jax
from absl import logging

from ropo_jax.errors import UserError

EXPORT_RECORD = "export.json"
EXPORT_INFO = "export_info.json"
CHECKPOINTS = "checkpoints"
_ROUND = re.compile(r"round_(\d+)")
DTYPES = ("float32", "bfloat16", "float16")


class ExportError(UserError, ValueError):
    """A missing workdir, stage, step or run file; the message names what exists."""


# --------------------------------------------------------------------------- run metadata.


def _write_json_atomic(path: str, value) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def write_export_info(
    workdir: str, *, tokenizer_dir: str | None, chat_template_path: str | None
) -> None:
    """Records the run's tokenizer directory and chat template file (absolute paths) in
    ``WORKDIR/export_info.json`` for a later export. Only process 0 writes."""
    if jax.process_index() != 0:
        return
    info = {
        "tokenizer": os.path.abspath(tokenizer_dir) if tokenizer_dir else None,
        "chat_template": os.path.abspath(chat_template_path) if chat_template_path else None,
    }
    os.makedirs(workdir, exist_ok=True)
    _write_json_atomic(os.path.join(workdir, EXPORT_INFO), info)


def read_export_info(workdir: str) -> dict[str, str | None]:
    """``{"tokenizer": dir or None, "chat_template": file or None}`` of a run."""
    path = os.path.join(workdir, EXPORT_INFO)
    if not os.path.isfile(path):
        raise ExportError(
            f"{path} not found: it records the run's tokenizer and chat template (written when "
            "a run starts); re-run the experiment command once to write it"
        )
    with open(path) as f:
        return json.load(f)


# --------------------------------------------------------------------------- checkpoints.


class Restored(NamedTuple):
    model_config: Any  # models.ModelConfig
    params: Any
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
    from ropo_jax import checkpoint as checkpoint_lib
    from ropo_jax import models

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
    from ropo_jax import checkpoint as checkpoint_lib
    from ropo_jax import models
    from ropo_jax import sharding as sharding_lib

    stage, step = resolve_checkpoint(workdir, stage=stage, step=step)
    config = read_model_config(workdir, stage, step)
    checkpointer = checkpoint_lib.Checkpointer(
        os.path.join(workdir, CHECKPOINTS, stage), async_save=False
    )
    try:
        abstract = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
        if mesh is not None:
            shardings = sharding_lib.tree_shardings(
                mesh, models.param_logical_axes(config), abstract
            )
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


# --------------------------------------------------------------------------- export.


def _tokenizer_directory(tokenizer_dir: str) -> str:
    if not os.path.exists(tokenizer_dir):
        raise ExportError(f"tokenizer {tokenizer_dir} not found")
    return tokenizer_dir if os.path.isdir(tokenizer_dir) else os.path.dirname(tokenizer_dir)


def load_hf_tokenizer(tokenizer_dir: str, model_config, *, chat_template: str | None = None):
    """The run's tokenizer as transformers loads it, checked against this project's reading of
    the same files (transformers can build an empty tokenizer without complaint) and against
    the model's vocabulary; ``chat_template`` (text) replaces the tokenizer's own."""
    from transformers import AutoTokenizer

    from ropo_jax.data.tokenizer import load_tokenizer

    directory = _tokenizer_directory(tokenizer_dir)
    ours = load_tokenizer(tokenizer_dir)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if len(tokenizer) != ours.vocab_size:
        raise ExportError(
            f"{directory}: transformers reads a tokenizer of {len(tokenizer)} tokens but it has "
            f"{ours.vocab_size}; add a tokenizer.json (or a tokenizer_config.json naming the "
            "tokenizer class) that transformers loads"
        )
    if len(tokenizer) > model_config.vocab_size:
        raise ExportError(
            f"{directory}: the tokenizer has {len(tokenizer)} tokens but the model embeds "
            f"{model_config.vocab_size}; export with the run's own tokenizer"
        )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def with_token_ids(model_config, tokenizer):
    """The model's BOS/EOS/PAD ids, each filled from the tokenizer where the model has none
    (PAD: the tokenizer's, else EOS)."""
    if tokenizer is None:
        return model_config
    bos = model_config.bos_token_id
    eos = model_config.eos_token_id
    if eos is not None and tokenizer.eos_token_id is not None and eos != tokenizer.eos_token_id:
        logging.warning(
            "the model's eos_token_id=%s differs from the tokenizer's %s; config.json keeps the "
            "model's",
            eos,
            tokenizer.eos_token_id,
        )
    bos = tokenizer.bos_token_id if bos is None else bos
    eos = tokenizer.eos_token_id if eos is None else eos
    pad = model_config.pad_token_id
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return model_config.replace(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)


def _generation_config(model_config):
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=model_config.bos_token_id,
        eos_token_id=model_config.eos_token_id,
        pad_token_id=model_config.pad_token_id,
    )


def _json_value(value):
    return json.loads(json.dumps(value))


def is_exported(output_dir: str, provenance: dict[str, Any]) -> bool:
    """True when ``output_dir`` holds a finished export of exactly ``provenance``."""
    path = os.path.join(output_dir, EXPORT_RECORD)
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            return json.load(f) == _json_value(provenance)
    except json.JSONDecodeError:
        return False


def _check_replaceable(output_dir: str) -> None:
    """An existing ``output_dir`` is replaced only when it is empty or an earlier export."""
    if not os.path.exists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise ExportError(f"{output_dir} exists and is not a directory")
    if os.listdir(output_dir) and not os.path.isfile(os.path.join(output_dir, EXPORT_RECORD)):
        raise ExportError(
            f"{output_dir} exists and is not an export (no {EXPORT_RECORD}); choose "
            "another directory or remove it"
        )


def _move_into_place(tmp: str, output_dir: str) -> None:
    old = None
    if os.path.exists(output_dir):
        old = f"{tmp}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(output_dir, old)
    os.rename(tmp, output_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(
    model_config,
    params,
    output_dir: str,
    *,
    tokenizer_dir: str | None,
    chat_template: str | None = None,
    dtype=None,
    max_shard_bytes: int = 2 * 1024**3,
    provenance: dict[str, Any] | None = None,
) -> str:
    """Writes a transformers model directory (see the module docstring) and returns its path.

    ``tokenizer_dir``: the run's tokenizer (None: no tokenizer files); ``chat_template``: the
    template text, replacing the tokenizer's; ``dtype``: the saved dtype (default: the
    parameters'); ``provenance``: the JSON-serialisable content of ``export.json``. All
    processes must call this; only process 0 writes.
    """
    from ropo_jax import models

    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    tmp = os.path.join(parent, f".{name}.export-tmp")
    writer = jax.process_index() == 0
    # Every process reads the tokenizer: a bad one fails everywhere, not only where it writes.
    tokenizer = None
    if tokenizer_dir:
        tokenizer = load_hf_tokenizer(tokenizer_dir, model_config, chat_template=chat_template)
    elif chat_template is not None:
        raise ExportError("a chat template needs a tokenizer to carry it; pass tokenizer_dir")
    model_config = with_token_ids(model_config, tokenizer)
    _check_replaceable(output_dir)
    if writer:
        shutil.rmtree(tmp, ignore_errors=True)  # a crashed export's leftovers
        os.makedirs(tmp)
    models.save_hf(model_config, params, tmp, dtype=dtype, max_shard_bytes=max_shard_bytes)
    if writer:
        _generation_config(model_config).save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _write_json_atomic(os.path.join(tmp, EXPORT_RECORD), _json_value(provenance or {}))
        _move_into_place(tmp, output_dir)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("ropo_jax.export.export_model")
    return output_dir


# --------------------------------------------------------------------------- command line.


def _stage_from_flags(round_: int | None, stage: str | None) -> str | None:
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
) -> str:
    """The command line's work: restore, export (unless this export is there), a summary."""
    from ropo_jax import sharding as sharding_lib

    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype={dtype}: choose one of {DTYPES}")
    if not os.path.isdir(workdir):
        raise ExportError(f"workdir {workdir} does not exist")
    info = read_export_info(workdir)
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
    export_model(
        restored.model_config,
        restored.params,
        output_dir,
        tokenizer_dir=info["tokenizer"],
        chat_template=chat_template,
        dtype=saved_dtype,
        max_shard_bytes=max_shard_bytes,
        provenance=provenance,
    )
    return f"exported {summary} to {os.path.abspath(output_dir)}"


def cli() -> None:
    """``python -m ropo_jax.export``: flags are defined here, not at import, so the pipeline
    (whose command line has its own --workdir) can import this module."""
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
    flags.mark_flags_as_required(["workdir", "output"])

    def main(argv) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments {argv[1:]}")
        try:
            summary = run_export(
                workdir.value,
                output.value,
                stage=_stage_from_flags(round_.value, stage.value),
                step=step.value,
                dtype=dtype.value,
                max_shard_bytes=int(max_shard_gb.value * 1024**3),
            )
        except UserError as error:
            if os.environ.get("ROPO_JAX_TRACEBACK"):
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        if jax.process_index() == 0:
            print(summary)

    app.run(main)


if __name__ == "__main__":
    cli()
