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


def kill_once_written(command: list[str], target: str, *, cwd: str, env: dict) -> None:
    """Starts ``command`` and SIGKILLs it as soon as the path ``target`` exists (a checkpoint
    step directory): the hard stop a pre-empted job gets. Fails if the run ended on its own
    before it could be killed."""
    import signal
    import time

    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not os.path.isdir(target) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed_mid_run = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert killed_mid_run, "the run finished before it could be killed"
