"""What every export shares: file names, the error a user can fix, and the run metadata
(``WORKDIR/export_info.json``: the tokenizer and chat template an export of the run uses)."""

from __future__ import annotations

import json
import os
import re

from ropo_jax.errors import UserError
from ropo_jax.parallel import processes

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
    workdir: str,
    *,
    tokenizer_dir: str | None,
    chat_template_path: str | None,
    base_models: dict[str, dict] | None = None,
) -> None:
    """Records the run's tokenizer directory and chat template file (absolute paths) in
    ``WORKDIR/export_info.json`` for a later export, and with LoRA where each stage's frozen
    base comes from (``base_models``: ``{"sft" | "preference": {"hf_path": DIR} or
    {"init_seed": S}}``, a relative DIR under the workdir). Only process 0 writes."""
    if not processes.is_writer():
        return
    info = {
        "tokenizer": os.path.abspath(tokenizer_dir) if tokenizer_dir else None,
        "chat_template": os.path.abspath(chat_template_path) if chat_template_path else None,
    }
    if base_models is not None:
        info["lora_base_models"] = base_models
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
