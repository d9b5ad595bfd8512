"""The command-line entry point ends the process without the interpreter's
teardown, but keeps what a normal exit guarantees: exit code, flushed output,
``atexit`` callbacks, and non-daemon threads run to their end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)


def test_exit_now_flushes_runs_atexit_and_keeps_the_code() -> None:
    proc = _run("import atexit, sys\n"
                "from qwenhome.cli import exit_now\n"
                "atexit.register(lambda: print('atexit ran'))\n"
                "print('buffered', end=' ')\n"
                "sys.stderr.write('to stderr')\n"
                "exit_now(3)\n")
    assert proc.returncode == 3
    assert proc.stdout == "buffered atexit ran\n"
    assert proc.stderr == "to stderr"


def test_exit_now_waits_for_a_non_daemon_thread(tmp_path: Path) -> None:
    marker = tmp_path / "written-by-thread"
    proc = _run("import threading, time\n"
                "from qwenhome.cli import exit_now\n"
                f"def work():\n    time.sleep(0.3)\n    open({str(marker)!r}, 'w').write('done')\n"
                "threading.Thread(target=work).start()\n"
                "exit_now(0)\n")
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text() == "done"


def test_module_entry_point_exits_with_the_command_code(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "qwenhome", "path", "Org/Absent", "--home", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    assert proc.stderr.startswith("error[") and proc.stdout == ""
