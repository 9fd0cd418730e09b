"""Command line: ``python -m ropo_jax.main --config=experiments/NAME.py[:ARG] --workdir=DIR``.

Writes ``config.json`` to the workdir and runs the experiment (``pipeline.run``); re-running the
same command resumes where it stopped. Multi-host: pass ``--coordinator_address``,
``--num_processes`` and ``--process_id`` (or set them through the environment JAX reads on TPU
pods / SLURM and pass ``--distributed``); only process 0 logs and writes run files.

Every mistake a user can fix ends the command with one line ``error: ...`` on stderr and exit
status 2: a mistyped or unparsable ``--config.KEY=VALUE`` or a missing/broken config file (at flag
parsing), a bad config value or input path (``config_validation.validate``, before the workdir
is touched), and any ``ropo_jax.errors.UserError`` of the run (bad data, a mismatched
checkpoint). Anything else is a bug and keeps its traceback; ``ROPO_JAX_TRACEBACK=1`` keeps the
traceback of user errors too.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import sys
import traceback

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from ropo_jax.errors import UserError

TRACEBACK_ENV = "ROPO_JAX_TRACEBACK"

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


def _exit_with(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


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
    from ropo_jax import config_validation

    try:
        config_validation.validate(config)
        _enable_compilation_cache(config.get("compilation_cache_dir", ""))
        from ropo_jax import pipeline

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
        _exit_with(str(error))
    if jax.process_index() == 0:
        print(json.dumps(results, indent=1))


# --- the command line: every flag mistake as one line -----------------------------------------

_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)(?:=(.*))?$", re.DOTALL)
_CONFIG_ARG = re.compile(r"^--?config(?:=(.*))?$", re.DOTALL)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (``app.run``'s ``flags_parser``): a mistake in the command line is one
    ``error:`` line and exit 2 instead of a traceback or absl's usage dump. An exception that
    cannot be traced to the command line is re-raised."""
    try:
        remaining = flags.FLAGS(argv)
    except Exception as error:
        line = None if os.environ.get(TRACEBACK_ENV) else _explain_flag_error(error, argv)
        if line is None:
            raise
        _exit_with(line)
    if not isinstance(flags.FLAGS["config"].value, ml_collections.ConfigDict):
        # ml_collections defers a missing file's error to the first use of the config.
        spec = _config_spec(argv) or ""
        loaded = _load_config(spec)
        _exit_with(loaded if isinstance(loaded, str) else f"--config={spec}: cannot be loaded")
    return remaining


def _config_spec(argv: list[str]) -> str | None:
    """The value of --config (``--config=X`` or ``--config X``)."""
    for i, arg in enumerate(argv):
        match = _CONFIG_ARG.match(arg)
        if match:
            if match.group(1) is not None:
                return match.group(1)
            return argv[i + 1] if i + 1 < len(argv) else None
    return None


def _load_config(spec: str) -> ml_collections.ConfigDict | str:
    """The config of ``--config=PATH[:ARG]``, or the one-line reason it cannot be loaded."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        return f"--config={spec}: no such file {path!r} (paths are relative to {os.getcwd()})"
    try:
        module_spec = importlib.util.spec_from_file_location("ropo_jax_user_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        config = module.get_config(*([arg] if arg else []))
    except Exception as error:  # the user's file: report it, whatever it raised
        return f"--config={spec}: {_where(error, path)}{type(error).__name__}: {_one_line(error)}"
    if not isinstance(config, ml_collections.ConfigDict):
        return f"--config={spec}: get_config() returned {type(config).__name__}, not a ConfigDict"
    return config


def _where(error: BaseException, path: str) -> str:
    """``file:line: `` of the failing line of the config file, when the error points there."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{error.filename}:{error.lineno}: "
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if os.path.abspath(f.filename) == os.path.abspath(path)]
    return f"{mine[-1].filename}:{mine[-1].lineno}: " if mine else ""


def _one_line(error: BaseException) -> str:
    text = str(error)
    # ml_collections appends the config file's traceback to its errors; the last line is the
    # original error.
    if "Traceback (most recent call last)" in text:
        text = text.strip().splitlines()[-1]
    return " ".join(text.split())


def _explain_flag_error(error: Exception, argv: list[str]) -> str | None:
    """The one-line cause of a failed flag parse, or None when it is not the command line's."""
    spec = _config_spec(argv)
    if spec is None:
        return "--config is required: --config=experiments/NAME.py[:ARG]"
    config = _load_config(spec)
    if isinstance(config, str):
        return config
    for arg in argv[1:]:
        match = _OVERRIDE.match(arg)
        if match:
            problem = _override_problem(config, match.group(1))
            if problem:
                return problem
    if not isinstance(error, flags.Error):
        return None
    bad_value = re.match(r"flag --(config\.[^=]+)=(.*?): (.*)", str(error), re.DOTALL)
    if bad_value:
        key, value, reason = bad_value.groups()
        current = _lookup(config, key.split(".", 1)[1])
        return (
            f"--{key}={value}: not a valid {type(current).__name__} like the config's "
            f"{current!r} ({_one_line(reason)})"
        )
    required = re.search(r"Flag --(\w+) must have a value other than None", str(error))
    if required:
        return f"--{required.group(1)} is required"
    return _one_line(error)


def _override_problem(config: ml_collections.ConfigDict, key: str) -> str | None:
    """Why ``--config.KEY`` names no key of ``config`` (with the closest keys), or None."""
    node, walked = config, []
    for part in key.split("."):
        where = ".".join(["config", *walked])
        if not isinstance(node, ml_collections.ConfigDict):
            return f"--config.{key}: {where} is a value ({node!r}), not a block of keys"
        if part not in node:
            guesses = _guesses(config, key) or [
                p for p in _key_paths(config) if p.rsplit(".", 1)[-1] == part
            ]
            if guesses:
                listed = " or ".join(f"--config.{g}" for g in guesses[:3])
                return f"--config.{key}: no such key; did you mean {listed}?"
            return f"--config.{key}: no such key; {where} has {', '.join(sorted(node))}"
        node, walked = node[part], [*walked, part]
    return None


def _guesses(config: ml_collections.ConfigDict, key: str) -> list[str]:
    """``key`` with each part replaced by the closest existing key, if every part has one."""
    node, fixed = config, []
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
            return []
        close = [part] if part in node else difflib.get_close_matches(part, list(node), 1, 0.6)
        if not close:
            return []
        node, fixed = node[close[0]], [*fixed, close[0]]
    return [".".join(fixed)]


def _lookup(config: ml_collections.ConfigDict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def _key_paths(node: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    paths = []
    for key in node:
        paths.append(f"{prefix}{key}")
        if isinstance(node[key], ml_collections.ConfigDict):
            paths.extend(_key_paths(node[key], f"{prefix}{key}."))
    return paths


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
