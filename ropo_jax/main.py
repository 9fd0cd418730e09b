"""Command line: ``python -m ropo_jax.main --config=experiments/NAME.py[:ARG] --workdir=DIR``.

Writes ``config.json`` to the workdir and runs the experiment (``pipeline.run``); re-running the
same command resumes where it stopped. Multi-host: pass ``--coordinator_address``,
``--num_processes`` and ``--process_id`` (or set them through the environment JAX reads on TPU
pods / SLURM and pass ``--distributed``); only process 0 logs and writes run files.
"""

from __future__ import annotations

import json
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/NAME.py[:ARG]")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def _initialize_distributed() -> None:
    # Cross-process collectives on CPU hosts (local multi-process runs and tests); the setting
    # does not affect GPU or TPU backends.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if _COORDINATOR.value or (_NUM_PROCESSES.value or 1) > 1:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    elif _DISTRIBUTED.value:
        jax.distributed.initialize()


def _enable_compilation_cache(directory: str) -> None:
    """Persists compiled executables across processes; entries are keyed by the program, the
    devices and the compiler flags, so a changed step or mesh simply compiles anew."""
    if not directory:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    # The benchmark's steps compile in well under the 1 s default threshold, yet there are many.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv):
    del argv
    _initialize_distributed()
    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    _enable_compilation_cache(config.get("compilation_cache_dir", ""))
    workdir = _WORKDIR.value
    from ropo_jax import pipeline  # after distributed init: no JAX work at import
    from ropo_jax.data.errors import DataError

    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=1, sort_keys=True))
    logging.info(
        "process %d/%d, %d devices (%s)",
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
        jax.devices()[0].device_kind,
    )
    try:
        results = pipeline.run(config, workdir)
    except (ValueError, FileNotFoundError, DataError) as error:
        # User-caused problems (bad config or data) end with one message, not a traceback.
        if os.environ.get("ROPO_JAX_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if jax.process_index() == 0:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    app.run(main)
