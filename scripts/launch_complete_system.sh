#!/usr/bin/env bash
# The complete local Qwen system: API + web page at http://127.0.0.1:8000/.
#
#   ./scripts/launch_complete_system.sh --demo     offline demo: a tiny model built locally,
#                                                  served from a local mirror, pulled, launched
#   ./scripts/launch_complete_system.sh            pulls the configured model once
#                                                  (default Qwen/Qwen2.5-0.5B-Instruct), then launches
#
# Other options go to `qwenhome launch` (--model REPO[@REV], --host, --port,
# --engine auto|transformers|vllm, --home DIR). The first run creates .venv
# and installs qwenhome with its app, engine and images extras (chat and the
# Images panel); later runs start at once and work offline. PYTHON chooses the
# interpreter for the new .venv. The CLI is then .venv/bin/qwenhome (or
# `source .venv/bin/activate` and `qwenhome`).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY=${PYTHON:-python3}
stamp="$VENV/.qwenhome-installed"

if [ ! -x "$VENV/bin/python" ]; then
  echo "qwenhome: creating $VENV with $($PY --version 2>&1)" >&2
  "$PY" -m venv "$VENV"
fi
# Install on first use, and again when pyproject.toml changed since or a
# module is missing (a .venv made before the images extra was installed here).
# find_spec, not import: importing torch only to check it would cost seconds on every start.
EXTRAS="app,engine,images"
MODULES='"qwenhome", "fastapi", "uvicorn", "torch", "transformers", "diffusers", "accelerate", "PIL"'
installed() {
  "$VENV/bin/python" -c "import importlib.util as u, sys
missing = [m for m in ($MODULES) if u.find_spec(m) is None]
multipart = u.find_spec('python_multipart') or u.find_spec('multipart')
sys.exit(1 if missing or not multipart else 0)" 2>/dev/null
}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! installed; then
  echo "qwenhome: installing qwenhome[$EXTRAS] into $VENV (first run only)" >&2
  # --no-compile: byte-compiling all of torch up front costs minutes; imports compile what they use.
  "$VENV/bin/python" -m pip install -q --no-compile --disable-pip-version-check -e ".[$EXTRAS]"
  touch "$stamp"
  echo "qwenhome: installed; the CLI is $VENV/bin/qwenhome (or \`source $VENV/bin/activate\`, then \`qwenhome --help\`)" >&2
fi

# Bytecode: a start imports thousands of modules (torch, transformers, diffusers);
# without the bytecode cache each start compiles them again (a second start took
# 33 s instead of 17 s here). PYTHONDONTWRITEBYTECODE, set in some shells and
# containers, forbids that cache; for this .venv's processes it is kept under
# .venv/pycache instead, so no __pycache__ appears in anyone's source tree.
if [ -n "${PYTHONDONTWRITEBYTECODE:-}" ]; then
  unset PYTHONDONTWRITEBYTECODE
  export PYTHONPYCACHEPREFIX="$PWD/$VENV/pycache"
fi

# The one-home variables are applied by `qwenhome launch` to every child it
# starts, before any Hugging Face library is imported there.
exec "$VENV/bin/qwenhome" launch "$@"
