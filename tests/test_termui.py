"""Terminal rendering of pull progress."""

from __future__ import annotations

import io

from qwenhome.progress import FILE_DONE, FILE_START, PROGRESS, START, ProgressEvent
from qwenhome.termui import ProgressView, human_size, table


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tty_view_draws_total_and_per_file_bars_and_forgets_finished_files() -> None:
    out = Tty()
    view = ProgressView(out)
    view(ProgressEvent(START, "Org/Big", None, 0, 2000, files_total=2, message="abc from hf"))
    view(ProgressEvent(FILE_START, "Org/Big", "model.safetensors", 0, 1000))
    view(ProgressEvent(PROGRESS, "Org/Big", "model.safetensors", 500, 1000))
    view(ProgressEvent(PROGRESS, "Org/Big", None, 500, 2000, 100.0, 0, 2))
    text = out.getvalue()
    assert "pulling Org/Big" in text and "25.0%" in text and "50.0%" in text and "model.safetensors" in text
    view(ProgressEvent(FILE_DONE, "Org/Big", "model.safetensors", 1000, 1000))
    view(ProgressEvent(PROGRESS, "Org/Big", "model.safetensors", 900, 1000))  # late, stale
    view(ProgressEvent(PROGRESS, "Org/Big", None, 1000, 2000, 100.0, 1, 2))
    last = out.getvalue().rsplit("\x1b[J", 1)[-1]
    assert "model.safetensors" not in last, "a finished file leaves the display"
    assert "ETA 0:10" in last


def test_pipe_view_prints_plain_lines() -> None:
    out = io.StringIO()
    view = ProgressView(out, clock=lambda: 100.0)
    view(ProgressEvent(FILE_DONE, "Org/Big", "config.json", 3, 3))
    assert out.getvalue() == "  done config.json (3 B)\n"


def test_sizes_and_tables() -> None:
    assert human_size(999) == "999 B" and human_size(1500) == "1.5 KB" and human_size(2.5e9) == "2.5 GB"
    assert table([["a", "bb"]], ["X", "YYY"]).splitlines() == ["X  YYY", "-  ---", "a  bb"]
