"""Runs a project script in a fresh Python process, from the repository root, as a user would."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*args: str, env: dict | None = None, timeout: int = 300):
    """``python ARGS…`` in ROOT; raises CalledProcessError on a non-zero exit (output captured)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )


def run_module(module: str, *args: str, env: dict | None = None, timeout: int = 300):
    """``python -m MODULE ARGS…`` in ROOT, output captured; the caller checks the exit code."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def main_command(workdir, *overrides: str, config: str = "experiments/smoke.py") -> list[str]:
    """The argv of ``python -m ropo_jax.main --config=CONFIG --workdir=WORKDIR OVERRIDES…``."""
    return [
        sys.executable,
        "-m",
        "ropo_jax.main",
        f"--config={config}",
        f"--workdir={workdir}",
        *overrides,
    ]
