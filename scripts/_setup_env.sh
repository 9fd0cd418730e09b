# Sourced by quickstart.sh and test.sh: creates .venv if missing and installs the package.
# Usage: source scripts/_setup_env.sh REQUIREMENTS_FILE
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON_BIN="${PYTHON_BIN:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON_BIN --version)"
  "$PYTHON_BIN" -m venv .venv
fi
# Re-install only when the requirement files changed since the last successful install.
STAMP=.venv/.ropo_jax_installed
WANT="$(cat requirements.txt "$1" pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing $1 into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$1" -e .
  # The Mistral-7B SentencePiece tokenizer used by the data tests ships in this wheel; its
  # declared dependencies would downgrade numpy, so it is installed without them.
  .venv/bin/python -m pip install -q --no-deps mistral-common==1.13.1
  echo "$WANT" > "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
