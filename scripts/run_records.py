"""A finished run's *record*: what the repository keeps of it under ``results/SWEEP/RUN/``.

- ``results.json``: the run's results, as the run wrote them;
- ``config.json``: its whole configuration;
- ``provenance.json``: how it was obtained — the command, the git commit (and whether the tree
  had uncommitted changes), the versions of the packages that decide the numbers, the machine,
  the wall time of the command and the run's per-stage seconds and devices
  (``WORKDIR/stage_times.json``).

A record is a few KB; checkpoints, models and logs stay in the run directory. Written by
``scripts/run_sweep.py --records``; ``results.json`` is written last, so a directory holding it
is a complete record.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "transformers")


def exists(record_dir: str) -> bool:
    return os.path.isfile(os.path.join(record_dir, "results.json"))


def git_commit() -> dict:
    def git(*args):
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None else bool(status)
    return {"commit": git("rev-parse", "HEAD"), "dirty": dirty}


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:  # the CPU's model name, where Linux says it
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def _relative(argv: list[str]) -> str:
    """The command as a user re-runs it from the repository root (no absolute interpreter)."""
    if argv and "python" in os.path.basename(argv[0]):
        argv = ["python", *argv[1:]]
    return shlex.join(argv)


def write(record_dir: str, workdir: str, command: list[str], *, wall_seconds: float | None) -> None:
    """Copies the finished run ``workdir``'s results and config into ``record_dir`` with its
    provenance; ``wall_seconds`` None: the run finished before and its time is unknown here."""
    os.makedirs(record_dir, exist_ok=True)
    shutil.copyfile(os.path.join(workdir, "config.json"), os.path.join(record_dir, "config.json"))
    stage_times = {}
    stage_path = os.path.join(workdir, "stage_times.json")
    if os.path.isfile(stage_path):
        with open(stage_path) as f:
            stage_times = json.load(f)
    provenance = {
        "command": _relative(command),
        "git": git_commit(),
        "packages": package_versions(),
        "machine": machine(),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_seconds": None if wall_seconds is None else round(wall_seconds, 2),
        **stage_times,
    }
    with open(os.path.join(record_dir, "provenance.json"), "w") as f:
        json.dump(provenance, f, indent=1, sort_keys=True)
    # Last: a directory with results.json is a complete record (``exists``).
    tmp = os.path.join(record_dir, "results.json.tmp")
    shutil.copyfile(os.path.join(workdir, "results.json"), tmp)
    os.replace(tmp, os.path.join(record_dir, "results.json"))
