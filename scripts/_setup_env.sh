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
WANT="$(cat requirements.txt "$1" pyproject.toml scripts/_setup_env.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing $1 into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$1" -e .
  # The data tests use the real Mistral-7B SentencePiece model that ships inside the
  # mistral-common wheel. Only that file is taken: the package itself, installed without its
  # dependencies (they would downgrade numpy), would be a broken import that transformers'
  # AutoTokenizer tries for every Mistral model directory.
  .venv/bin/python -m pip uninstall -q -y mistral-common tiktoken 2>/dev/null || true
  WHEELS="$(mktemp -d)"
  .venv/bin/python -m pip download -q --no-deps -d "$WHEELS" mistral-common==1.13.1
  .venv/bin/python - "$WHEELS" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "mistral_common-*.whl"))[0]
target = os.path.join(".venv", "share", "ropo_jax", "mistral_tokenizer.model.v1")
os.makedirs(os.path.dirname(target), exist_ok=True)
with zipfile.ZipFile(wheel) as z, open(target, "wb") as f:
    f.write(z.read("mistral_common/data/tokenizer.model.v1"))
PY
  rm -rf "$WHEELS"
  echo "$WANT" > "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
