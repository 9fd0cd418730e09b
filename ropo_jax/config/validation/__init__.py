"""Every config error before any work: ``validate(config)`` checks a whole experiment ConfigDict
in one cheap pass (no JAX compile, no data read beyond small ``manifest.json`` / ``config.json``
files) and raises :class:`~ropo_jax.errors.ConfigValueError` with one line that names the key,
the bad value and the fix. ``python -m ropo_jax.main`` calls it before it touches the workdir.
It reads the ConfigDict only to check it: the run itself gets its settings from ``pipeline.py``
(``ropo_jax.config.defaults`` says who reads what).

The checks, in order (docs/training.md "Config checks"):

1. values: the type and range of every key of ``configs.base_config()`` and of the synthetic
   task's block, block by block from the rule tables below, plus the rules between keys of one
   block (``micro_batches`` divides ``batch_size``; the rejection-sampling selection rule;
   the noise rate a noise kind accepts; the loss hyper-parameters of ``method``);
2. layout: ``mesh.shape`` against the device count, and batch sizes against the processes;
3. inputs (``check_files=True``): the files and directories the run reads, the prepared data
   sets' manifests, the model directory's ``config.json`` and weights, and their agreement
   (one tokenizer, a vocabulary the model covers, enough examples for one update).


Modules: ``rules`` (the tables), ``values`` (checks 1-2), ``inputs`` (check 3). Mistakes on the
command line itself, before a config exists, are ``ropo_jax.config.flags``'s.
"""

from __future__ import annotations

import ml_collections

from ropo_jax.config.validation.inputs import check_inputs
from ropo_jax.config.validation.values import check_batch_layout, check_values, mesh_sizes


def validate(
    config: ml_collections.ConfigDict,
    *,
    device_count: int | None = None,
    process_count: int | None = None,
    check_files: bool = True,
) -> None:
    """Raises ConfigValueError (one line: key, bad value, fix) for the first problem found.

    ``device_count``/``process_count`` default to JAX's (the backend is initialised, nothing is
    compiled); ``check_files=False`` checks values and layout only (a config whose paths are
    given later).
    """
    check_values(config)
    if device_count is None or process_count is None:
        import jax

        device_count = jax.device_count() if device_count is None else device_count
        process_count = jax.process_count() if process_count is None else process_count
    sizes = mesh_sizes(config.mesh.shape, device_count)
    check_batch_layout(config, sizes, process_count)
    if check_files:
        check_inputs(config)


__all__ = ["check_inputs", "check_values", "mesh_sizes", "validate"]
