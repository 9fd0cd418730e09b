"""Mistakes on the command line itself, before a config exists: ``parse_flags`` is
``python -m ropo_jax.main``'s absl flag parser (``app.run(..., flags_parser=parse_flags)``), so a
mistyped ``--config.KEY`` (with the closest keys), a value that does not parse as the key's type
or a missing or failing config file ends in one ``error:`` line and exit 2 instead of a traceback
or absl's usage dump."""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sys
import traceback

import ml_collections
from absl import flags

TRACEBACK_ENV = "ROPO_JAX_TRACEBACK"  # set: user errors keep their traceback (debugging)


def exit_with(message: str) -> None:
    """The end of a command a user can fix: one line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)(?:=(.*))?$", re.DOTALL)
_CONFIG_ARG = re.compile(r"^--?config(?:=(.*))?$", re.DOTALL)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (``app.run``'s ``flags_parser``): a mistake in the command line is one
    ``error:`` line and exit 2 instead of a traceback or absl's usage dump. An exception that
    cannot be traced to the command line is re-raised."""
    try:
        remaining = flags.FLAGS(argv)
    except Exception as error:
        line = None if os.environ.get(TRACEBACK_ENV) else _explain_flag_error(error, argv)
        if line is None:
            raise
        exit_with(line)
    if not isinstance(flags.FLAGS["config"].value, ml_collections.ConfigDict):
        # ml_collections defers a missing file's error to the first use of the config.
        spec = _config_spec(argv) or ""
        loaded = _load_config(spec)
        exit_with(loaded if isinstance(loaded, str) else f"--config={spec}: cannot be loaded")
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
