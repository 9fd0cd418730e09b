"""Every experiment config builds, and its smoke variant runs end to end on CPU."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "experiments", "**", "*.py"), recursive=True)
    if not os.path.basename(p).startswith("_") and "/sweeps/" not in p
)
# experiments/smoke.py is itself the smoke variant (and runs in tests/main_test.py).
SMOKE_RUNS = [c for c in CONFIGS if c != os.path.join("experiments", "smoke.py")]


def _load(path):
    spec = importlib.util.spec_from_file_location("config_module", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds(path):
    module = _load(path)
    config = module.get_config(None)
    assert config.method and config.seed is not None
    smoke = module.get_config("smoke")
    assert smoke.task == "synthetic"  # smoke variants run on the synthetic task, on CPU


@pytest.mark.parametrize("path", SMOKE_RUNS)
def test_smoke_variant_runs(path, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    subprocess.run(
        [sys.executable, "-m", "ropo_jax.main", f"--config={path}:smoke", f"--workdir={tmp_path}"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert set(results) >= {"method", "noise", "seed", "eval", "noise_identification"}
