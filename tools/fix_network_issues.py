#!/usr/bin/env python3
"""Diagnose the network and the model home, and apply the safe fixes.

The seed's entry point, kept: it runs ``qwenhome doctor --fix`` with any
extra arguments (``--json``, ``--source URL``, ``--repo ORG/NAME``,
``--home DIR``). Run it from a checkout as ``python3 tools/fix_network_issues.py``;
it uses the project's ``.venv`` when there is one, else the ``src`` folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _venv_python() -> Path | None:
    for candidate in (ROOT / ".venv" / "bin" / "python", ROOT / ".venv" / "Scripts" / "python.exe"):
        if candidate.exists():
            return candidate
    return None


def main() -> int:
    venv = _venv_python()
    in_venv = venv is not None and Path(sys.prefix).resolve() == venv.parent.parent.resolve()
    if venv is not None and not in_venv:
        # Re-run under the project's environment, where the doctor's extras are installed.
        os.execv(str(venv), [str(venv), str(Path(__file__).resolve()), *sys.argv[1:]])
    src = ROOT / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.insert(0, str(src))
    try:
        from qwenhome.cli import main as qwenhome_main
    except ImportError as exc:
        print(f"error[missing-component]: cannot import qwenhome ({exc}) "
              "(hint: create the environment: python3 -m venv .venv && .venv/bin/pip install -e '.[doctor]')",
              file=sys.stderr)
        return 2
    return qwenhome_main(["doctor", "--fix", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
