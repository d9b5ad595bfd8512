"""What the benchmarks that start nginx share: finding it, and the http-block
settings of a throughput test (no access log, sendfile, long keep-alive,
temporary folders under a scratch folder)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def find_nginx() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def main_settings(tmp: Path, workers: int, connections: int) -> str:
    """The lines before the http block: foreground, pid and error log in
    ``tmp``; as root, workers run as root too (they must read what root's
    tests wrote)."""
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""{user}
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections {connections}; }}"""


def http_settings(tmp: Path) -> str:
    temp = "\n".join(f"    {kind}_temp_path {tmp}/{kind.split('_')[0]};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60;
{temp}"""
