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

A LoRA run's checkpoints hold its adapters only: the export reads the stage's frozen base
again (``export_info.json`` records where it comes from) and writes the merged model, or with
``--adapter_only`` the adapters as a PEFT adapter directory (``export_adapter``; docs/lora.md).

The directory is assembled beside ``DIR`` and renamed into place, so ``DIR`` is either the
previous export or the complete new one. The tokenizer and chat template of a run come from
``W/export_info.json``, which the pipeline writes at the start of every run
(:func:`write_export_info`). Every process calls :func:`export_model` (fetching sharded
parameters is a collective); only process 0 writes.
"""

from ropo_jax.export.adapter import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    adapter_config,
    export_adapter,
)
from ropo_jax.export.checkpoints import (
    Restored,
    available_checkpoints,
    default_stage,
    read_model_config,
    resolve_checkpoint,
    restore_params,
)
from ropo_jax.export.info import (
    CHECKPOINTS,
    DTYPES,
    EXPORT_INFO,
    EXPORT_RECORD,
    ExportError,
    read_export_info,
    write_export_info,
)
from ropo_jax.export.model_dir import (
    export_model,
    is_exported,
    load_hf_tokenizer,
    with_token_ids,
)

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "CHECKPOINTS",
    "DTYPES",
    "EXPORT_INFO",
    "EXPORT_RECORD",
    "ExportError",
    "Restored",
    "adapter_config",
    "available_checkpoints",
    "default_stage",
    "export_adapter",
    "export_model",
    "is_exported",
    "load_hf_tokenizer",
    "read_export_info",
    "read_model_config",
    "resolve_checkpoint",
    "restore_params",
    "with_token_ids",
    "write_export_info",
]
