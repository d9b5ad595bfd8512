"""An ordinary pull writes nothing outside the home: a real ``qwenhome pull``
subprocess under strace, every file-changing system call of every thread
and child checked against the home."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import clean_env
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo

STRACE = shutil.which("strace")
# Every call that can create, change or remove a file system entry.
CALLS = ("open,openat,openat2,creat,mkdir,mkdirat,mknod,mknodat,rename,renameat,renameat2,link,linkat,"
         "symlink,symlinkat,unlink,unlinkat,rmdir,truncate,chmod,fchmodat,chown,lchown,fchownat,utimensat,"
         "utimes,setxattr,lsetxattr,removexattr,lremovexattr")
WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND")
CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\)\s+= (?P<ret>-?\d+)(?:<(?P<fd_path>[^>]*)>)?")
PATH_ARG = re.compile(r'(?:(?:AT_FDCWD|\d+)<(?P<dir>[^>]*)>,\s*)?"(?P<path>(?:[^"\\]|\\.)*)"')
HARMLESS = ("/dev/null", "/dev/tty")


def written_paths(trace_dir: Path, cwd: Path) -> list[str]:
    """Absolute paths that successful file-changing calls touched, from ``strace -ff -y`` output."""
    out = []
    for trace in trace_dir.iterdir():
        for line in trace.read_text(errors="replace").splitlines():
            m = CALL.match(line)
            if m is None or int(m["ret"]) < 0:
                continue
            name, args = m["name"], m["args"]
            if name in ("open", "openat", "openat2", "creat"):
                if name == "creat" or WRITE_FLAGS.search(args):
                    out.append(m["fd_path"] or "?")
                continue
            paths = [(a["dir"], a["path"]) for a in PATH_ARG.finditer(args)]
            if name in ("symlink", "symlinkat"):
                paths = paths[1:]  # the first is the link's text, not a place
            for folder, path in paths:
                out.append(str(Path(folder or cwd) / path))
    return out


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_an_ordinary_pull_writes_only_inside_the_home(
        tmp_path: Path, qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    # No .pyc files: the interpreter's caching of its own code is not the pull's doing.
    env = clean_env(qwen_home, mirror.url, {"PYTHONDONTWRITEBYTECODE": "1"})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cmd = [str(STRACE), "-ff", "-qq", "-y", "-s", "4096", "-e", "signal=none", "-e", f"trace={CALLS}",
           "-o", str(traces / "t"), sys.executable, "-m", "qwenhome", "pull", "Org/Small"]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    written = written_paths(traces, cwd)
    home = str(qwen_home) + "/"
    inside = [p for p in written if p.startswith(home)]
    blobs = {p for p in inside if "/blobs/" in p}
    assert len(blobs) >= len({f.etag for f in small_repo.files.values()}), "the trace sees the pull's own writes"
    outside = sorted({p for p in written if not p.startswith(home) and p not in HARMLESS})
    assert outside == [], f"written outside the home {qwen_home}: {outside}"
