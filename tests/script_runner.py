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
