"""Test configuration: 8 fake CPU devices, float32 matmuls, and the `gpu` marker.

XLA_FLAGS must be set before JAX initialises its backends, so this runs at import time of the
test session, ahead of any test module importing jax.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
# Tests compare against float32 references; keep CPU matmuls at full precision.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

import jax  # noqa: E402
import pytest  # noqa: E402


def _has_accelerator() -> bool:
    return any(d.platform != "cpu" for d in jax.devices())


# The longest modules of the default run (docs/testing.md), longest first. Under
# `pytest -n 2 --dist loadfile --no-loadscope-reorder` (./scripts/test.sh) modules go to the
# workers in collection order, so starting these first keeps one of them from being the run's
# tail on one worker.
LONGEST_FIRST = (
    "real_model_pipeline_test.py",
    "multiprocess_test.py",
    "main_test.py",
    "lora_cli_test.py",
    "hf_pipeline_test.py",
    "experiments_test.py",
    "completion_head_test.py",
    "bench_test.py",
    "holder_full_test.py",
    "pipeline_test.py",
    "ropo_test.py",
)


def _module_rank(item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_module_rank)  # stable: the order within a module and among the rest is kept
    if _has_accelerator():
        return
    skip_gpu = pytest.mark.skip(reason="needs an accelerator (GPU/TPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
