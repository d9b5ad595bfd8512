"""The verdict line, then the human table: one row per check (verdict, check, cause), the fix under
every row that is not a pass, and the fixes ``--fix`` applied."""

from __future__ import annotations

import textwrap

from .model import DoctorReport

_LABEL = {"pass": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def render_report(report: DoctorReport, width: int = 100) -> str:
    counts = {s: sum(1 for c in report.checks if c.status == s) for s in ("pass", "warn", "fail", "skip")}
    head = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [report.verdict, f"qwenhome doctor: {head} ({report.elapsed:.1f} s)", ""]
    id_width = min(34, max((len(c.id) for c in report.checks), default=10))
    indent = " " * (4 + 2 + id_width + 2)
    body_width = max(40, width - len(indent))
    for c in report.checks:
        cause = c.summary + (f" [{c.code}]" if c.code else "")
        wrapped = textwrap.wrap(cause, body_width, break_on_hyphens=False) or [""]
        name = c.id if len(c.id) <= id_width else c.id[: id_width - 1] + "…"
        lines.append(f"{_LABEL[c.status]:<4}  {name:<{id_width}}  {wrapped[0]}")
        lines += [indent + w for w in wrapped[1:]]
        if c.fix and c.status in ("warn", "fail"):
            fix = textwrap.wrap("fix: " + c.fix, body_width, break_on_hyphens=False, break_long_words=False)
            lines += [indent + w for w in fix]
    if report.fixes_applied:
        lines += ["", "fixes applied:"]
        lines += [f"  {f.id}: {f.summary} ({f.path})" for f in report.fixes_applied]
    lines += ["", "result: " + ("ok" if report.ok else "problems found (see FAIL rows)")]
    return "\n".join(lines)
