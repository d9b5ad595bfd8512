"""Ctrl+C while the CLI is still loading its modules ends like Ctrl+C later:
the error[interrupted] line and exit 130, not a KeyboardInterrupt traceback
from inside an import (a Ctrl+C in the first tenth of a second did that)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qwenhome.errors import EXIT_INTERRUPTED
from tests.support.cli import clean_env

# SIGINT arrives while qwenhome.cli imports argparse, as a Ctrl+C would.
SCRIPT = """
import builtins, os, signal
real = builtins.__import__
def hooked(name, *args, **kwargs):
    if name == "argparse":
        os.kill(os.getpid(), signal.SIGINT)
    return real(name, *args, **kwargs)
builtins.__import__ = hooked
from qwenhome.cli import main
"""


def test_ctrl_c_while_the_cli_loads_is_one_line_and_exit_130(qwen_home: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=clean_env(qwen_home), capture_output=True,
                          text=True, timeout=60, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == EXIT_INTERRUPTED, proc.stderr
    assert proc.stderr.strip().startswith("error[interrupted]: "), proc.stderr


def test_after_loading_ctrl_c_raises_keyboard_interrupt_as_usual(qwen_home: Path) -> None:
    """Once loaded (a test process, the app), SIGINT is Python's again."""
    script = "import signal, qwenhome.cli\nassert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
    proc = subprocess.run([sys.executable, "-c", script], env=clean_env(qwen_home), capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
