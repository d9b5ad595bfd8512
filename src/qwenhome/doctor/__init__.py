"""The network and home doctor: what is wrong, in plain words, and the fix.

Public surface for the CLI (``qwenhome doctor [--fix] [--json] [--source URL]``)::

    report = run_doctor(settings, fix=False, repos=(), options=None)
    print(json.dumps(report.to_dict()) if as_json else render_report(report))
    sys.exit(report.exit_code)   # 0 when no check failed, 1 otherwise

``report.to_dict()`` is ``{"verdict", "ok", "checks": [{"id", "status", "code", "summary",
"fix", ...}], "fixes_applied": [{"id", "summary", "path"}]}``.
"""

from .model import DOCTOR_CODES, SHARED_CODES, Check, DoctorReport, FixApplied
from .options import DEFAULT_REPO, XET_HOSTS, DoctorOptions, DoctorTimeouts
from .render import render_report
from .runner import run_doctor

__all__ = [
    "DEFAULT_REPO",
    "DOCTOR_CODES",
    "SHARED_CODES",
    "XET_HOSTS",
    "Check",
    "DoctorOptions",
    "DoctorReport",
    "DoctorTimeouts",
    "FixApplied",
    "render_report",
    "run_doctor",
]
