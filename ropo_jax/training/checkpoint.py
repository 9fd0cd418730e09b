"""Checkpoints through Orbax (the only module that imports it).

A checkpoint holds the train state (parameters, optimizer state, step, RNG) and a JSON record:
the data-iterator state, the stage and round, and the model config, so that a resumed run
continues exactly as an uninterrupted one. Saves are atomic (Orbax writes to a temporary
directory and renames), asynchronous, and the last ``keep`` are kept. Restoring goes into
abstract sharded targets, so a checkpoint restores onto any mesh. A checkpoint of a differently
shaped model is refused with a message naming the fields that differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from ropo_jax.errors import UserError


class CheckpointMismatch(UserError, ValueError):
    """The checkpoint in a workdir belongs to another model or run configuration."""


class Checkpointer:
    def __init__(self, directory: str, *, keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "record")
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, record: dict[str, Any], *, force: bool = False) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)
            ),
            force=force,
        )

    def restore(self, abstract_state, *, expect: dict[str, Any] | None = None, step=None):
        """Restores (state, record) of ``step`` (default: latest) into ``abstract_state``'s
        shapes and shardings. ``expect`` maps record keys to the values this run has (e.g. the
        model config); any difference raises CheckpointMismatch before arrays are read."""
        step = self.latest_step() if step is None else step
        record = self._manager.restore(
            step, args=ocp.args.Composite(record=ocp.args.JsonRestore())
        )["record"]
        for key, wanted in (expect or {}).items():
            found = record.get(key)
            if found != wanted:
                diffs = _differences(found, wanted)
                raise CheckpointMismatch(
                    f"checkpoint {self.directory}/{step} was written for another {key} "
                    f"({diffs}); use a new --workdir, or the configuration that wrote it"
                )
        target = jax.tree.map(
            lambda x: ocp.utils.to_shape_dtype_struct(x) if hasattr(x, "shape") else x,
            abstract_state,
        )
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        )["state"]
        return restored, record

    def read_record(self, step: int) -> dict[str, Any]:
        """The JSON record of ``step`` (no arrays are read)."""
        args = ocp.args.Composite(record=ocp.args.JsonRestore())
        return self._manager.restore(step, args=args)["record"]

    def restore_params(self, abstract_params, *, step: int):
        """Only the parameters of ``step``'s train state (the optimizer state is not read),
        into ``abstract_params``' shapes, dtypes and shardings."""
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_params)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item={"params": target},
                    restore_args=ocp.checkpoint_utils.construct_restore_args({"params": target}),
                    partial_restore=True,
                )
            ),
        )["state"]
        return restored["params"]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _differences(found, wanted) -> str:
    if isinstance(found, dict) and isinstance(wanted, dict):
        keys = sorted(set(found) | set(wanted))
        diffs = [
            f"{k}: {found.get(k)!r} in checkpoint vs {wanted.get(k)!r} now"
            for k in keys
            if found.get(k) != wanted.get(k)
        ]
        return "; ".join(diffs[:5])
    return f"{found!r} in checkpoint vs {wanted!r} now"


def config_record(config) -> dict[str, Any]:
    """A frozen dataclass config as it reads back from the JSON record (for ``expect``)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
