"""LoRA adapters as a PEFT adapter directory (docs/lora.md): ``adapter_config.json`` and
``adapter_model.safetensors``, which ``peft.PeftModel.from_pretrained(base, DIR)`` loads on the
base model the config names, with ``export.json`` (the provenance) written last. PEFT is not
needed to write it.

PEFT's tensors per adapted Linear of layer i: ``base_model.model.model.layers.{i}.<module>.lora_A
.weight`` [R, in] and ``...lora_B.weight`` [out, R], so that the Linear computes
``x·Wᵀ + (α/R)·x·Aᵀ·Bᵀ``. Ours are ``a`` [*I, R] and ``b`` [R, *O] (``models.lora``), with the
input and output axes in the order of Hugging Face's flattened ones (``models.hf_convert``), so
``A = a.reshape(-1, R).T`` and ``B = b.reshape(R, -1).T``.

Shape key: R rank, I input axes, O output axes.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

from ropo_jax.export.info import EXPORT_RECORD, _write_json_atomic
from ropo_jax.export.model_dir import _check_replaceable, _json_value, _move_into_place
from ropo_jax.parallel import processes

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model.model.layers.{i}."


def adapter_config(lora, *, base_model: str | None) -> dict[str, Any]:
    """PEFT's ``LoraConfig`` as JSON for ``lora`` (a ``models.LoraConfig``); the keys PEFT
    leaves out take its defaults."""
    from ropo_jax.models.lora import TARGETS

    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": sorted(TARGETS[t].hf_module.split(".")[-1] for t in lora.targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def adapter_tensors(lora, adapters: dict, num_layers: int, dtype=None) -> dict[str, np.ndarray]:
    """PEFT's tensors (module docstring) of our adapters, fetched to the host (gathered across
    hosts when sharded there); ``dtype``: the saved dtype (default: the adapters')."""
    import jax.numpy as jnp

    from ropo_jax.models.lora import TARGETS

    tensors = {}
    for name in lora.targets:
        target = TARGETS[name]
        pair = adapters["layers"][target.path[0]][target.path[1]]
        a_host = np.asarray(processes.fetch(pair["a"]))  # [L, *I, R]
        b_host = np.asarray(processes.fetch(pair["b"]))  # [L, R, *O]
        saved = np.dtype(jnp.dtype(dtype or a_host.dtype))
        for i in range(num_layers):
            prefix = PREFIX.format(i=i) + target.hf_module
            a_IR = a_host[i].reshape(-1, lora.rank)
            b_RO = b_host[i].reshape(lora.rank, -1)
            tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a_IR.T.astype(saved))
            tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b_RO.T.astype(saved))
    return tensors


def export_adapter(
    model_config,
    adapters: dict,
    output_dir: str,
    *,
    base_model: str | None,
    dtype=None,
    provenance: dict[str, Any] | None = None,
) -> str:
    """Writes the PEFT adapter directory of ``adapters`` (trained for ``model_config``, whose
    ``lora`` holds rank, α, dropout and targets) and returns its path. ``base_model``: the
    base it applies to (``base_model_name_or_path``; None when the base exists only inside the
    run, a preset's random weights). Assembled beside ``output_dir`` and renamed into place;
    every process calls this (the fetches may be collectives), process 0 writes."""
    from safetensors.numpy import save_file

    lora = model_config.lora
    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    tmp = os.path.join(parent, f".{name}.export-tmp")
    _check_replaceable(output_dir)
    tensors = adapter_tensors(lora, adapters, model_config.num_layers, dtype)
    if processes.is_writer():
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        with open(os.path.join(tmp, ADAPTER_CONFIG), "w") as f:
            json.dump(adapter_config(lora, base_model=base_model), f, indent=2)
        save_file(tensors, os.path.join(tmp, ADAPTER_WEIGHTS), metadata={"format": "pt"})
        _write_json_atomic(os.path.join(tmp, EXPORT_RECORD), _json_value(provenance or {}))
        _move_into_place(tmp, output_dir)
    processes.barrier("ropo_jax.export.export_adapter")
    return output_dir
