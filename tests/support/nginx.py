"""nginx started by a test: a caching reverse proxy on 127.0.0.1 built from
``docs/nginx-mirror.conf`` (the very file users copy), everything in a temp dir.

    with CachingProxy(mirror.url, tmp_path) as proxy:
        hf.snapshot_download(..., endpoint=proxy.url)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

DOC_CONF = Path(__file__).resolve().parents[2] / "docs" / "nginx-mirror.conf"

_MAIN = """
{user}
worker_processes 2;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format cache '$request_method $uri "$http_range" $status $upstream_cache_status $body_bytes_sent';
    access_log {tmp}/access.log cache;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{site}
}}
"""


def find_nginx() -> str | None:
    """The nginx binary (Debian installs it in /usr/sbin, often not on PATH)."""
    exe = shutil.which("nginx")
    if exe is None and os.access("/usr/sbin/nginx", os.X_OK):
        exe = "/usr/sbin/nginx"
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site_conf(upstream: str, port: int, cache_dir: Path) -> str:
    """``docs/nginx-mirror.conf`` pointed at ``upstream``, listening on 127.0.0.1:``port``."""
    text = DOC_CONF.read_text(encoding="utf-8")
    parts = urlsplit(upstream)
    for old, new in (("/var/cache/nginx/qwenhome", str(cache_dir)),
                     ("server 127.0.0.1:8090;", f"server {parts.hostname}:{parts.port};"),
                     ("listen 8091;", f"listen 127.0.0.1:{port};")):
        assert old in text, f"{DOC_CONF} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


class CachingProxy:
    """nginx (``daemon off``, logs and pid in ``tmp``) in front of ``upstream``."""

    def __init__(self, upstream: str, tmp: Path, exe: str | None = None) -> None:
        self.exe = exe or find_nginx()
        if self.exe is None:
            raise FileNotFoundError("nginx is not installed")
        self.tmp = tmp
        self.port = _free_port()
        tmp.mkdir(parents=True, exist_ok=True)
        self.conf = tmp / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""  # workers must reach the temp dir
        self.conf.write_text(_MAIN.format(user=user, tmp=tmp,
                                          site=site_conf(upstream, self.port, tmp / "cache")))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CachingProxy:
        self.proc = subprocess.Popen([self.exe or "nginx", "-c", str(self.conf), "-p", str(self.tmp),
                                      "-e", str(self.tmp / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen: {self.error_log()}")

    def error_log(self) -> str:
        try:
            return (self.tmp / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def access_log(self) -> list[str]:
        try:
            return (self.tmp / "access.log").read_text(errors="replace").splitlines()
        except OSError:
            return []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> CachingProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
