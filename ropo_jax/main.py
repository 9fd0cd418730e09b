"""Command line: ``python -m ropo_jax.main --config=experiments/NAME.py[:ARG] --workdir=DIR``.

Parses the config, checks it (``config_validation.validate``), writes ``config.json`` to the
workdir and runs the experiment (``pipeline.run``, the only module below this one that reads the
ConfigDict; see ``ropo_jax.config.defaults``); re-running the same command resumes where it stopped.
Multi-host: pass ``--coordinator_address``, ``--num_processes`` and ``--process_id`` (or set
them through the environment JAX reads on TPU pods / SLURM and pass ``--distributed``); only
process 0 logs and writes run files.

Every mistake a user can fix ends the command with one line ``error: ...`` on stderr and exit
status 2: a mistyped or unparsable ``--config.KEY=VALUE`` or a missing/broken config file (at flag
parsing), a bad config value or input path (``config_validation.validate``, before the workdir
is touched), and any ``ropo_jax.errors.UserError`` of the run (bad data, a mismatched
checkpoint). Anything else is a bug and keeps its traceback; ``ROPO_JAX_TRACEBACK=1`` keeps the
traceback of user errors too.
"""

from __future__ import annotations

import json
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ropo_jax.config.flags import TRACEBACK_ENV, exit_with, parse_flags
from ropo_jax.errors import UserError

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
    workdir = _WORKDIR.value
    # After distributed init (the checks count devices and processes) and before the workdir is
    # touched: a refused command creates nothing and leaves a resumable run's config.json as it
    # was. Imported here, as pipeline is: no JAX work before distributed init.
    from ropo_jax.config import validation as config_validation

    try:
        config_validation.validate(config)
        _enable_compilation_cache(config.get("compilation_cache_dir", ""))
        from ropo_jax.run import pipeline

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
        results = pipeline.run(config, workdir)
    except UserError as error:
        if os.environ.get(TRACEBACK_ENV):
            raise
        exit_with(str(error))
    if jax.process_index() == 0:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
