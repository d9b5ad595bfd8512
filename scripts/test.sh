#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: creates .venv, installs the
# package with its dev extras, installs the system packages some tests use,
# then lint, type check and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'

# System packages used by tests (browser, peers for interop). Best effort:
# tests that need a missing one skip with a clear reason.
bash scripts/system-deps.sh || echo "warning: some system packages could not be installed; dependent tests will skip" >&2

.venv/bin/ruff check src tests bench tools scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
