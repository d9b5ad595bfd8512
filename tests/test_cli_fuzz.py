"""Property-based fuzzing of the command line: whatever the arguments, the real
CLI ends in bounded time with a documented exit code, never a traceback, and a
failure says why on one ``error[code]`` line (or argparse's usage error, exit 2).

Argument lists are built from the real subcommands and options (the common
ones before or after the command), with values drawn from huge, negative and
non-finite numbers, odd and unicode strings, repository ids with traversal,
and paths that are files, folders, missing or unwritable. Most examples run
in-process through :func:`qwenhome.cli.main`; a sample runs as processes,
including ``mirror serve`` (stopped with Ctrl+C once it listens) and ``launch``.

Nothing reaches the network: every source is a closed 127.0.0.1 port or
malformed (no generated host name is ever resolved), the doctor runs with
``--offline``, ``launch`` always gets a busy or invalid port or an address it
cannot bind (past the bind it would start the model: out of scope here), and
every home, HOME and output path is inside a temp folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qwenhome.cli import main
from tests.support.cli import clean_env
from tests.support.repos import GeneratedRepo, make_repo, make_store_repo

EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 7, 8, 130}
ERROR_LINE = re.compile(r"^error\[([a-z0-9]+(?:-[a-z0-9]+)*)\]: .", re.MULTILINE)
IN_PROCESS_BOUND = 20.0  # seconds one in-process run may take (the machine may be loaded)
PROCESS_BOUND = 30.0
REPO = "Org/Fuzz"


# -- the world every example runs in ---------------------------------------------------

# Placeholders in generated arguments, filled in per run: the strategies do not
# depend on the fixture, so examples can be written out (@example).
DEAD, BUSY = "{dead}", "{busy}"  # a closed 127.0.0.1 port's URL; a 127.0.0.1 port in use
# Paths relative to the working folder ROOT/a/b/cwd: all inside ROOT.
HOME = "../../../home"
PATHS = [
    "../../../file.txt", "../../../empty", "../../../junk.tar", "../../../folder", "../../../unwritable",
    "../../../missing", "../../../missing/deeper", "../../../file.txt/below-a-file",
    "../../../\u00fcn\u00efc\u00f8de \u540d", "../../../out.tar", "../../../out.tar.gz", "../../../repos",
    HOME, f"{HOME}/hub", "../../../ok.tar", "../new.tar", "", ".", "..", "rel/new.tar", "-", " ", "x\u202ey",
]


@dataclass
class World:
    root: Path
    cwd: Path
    repo: GeneratedRepo
    dead_url: str
    busy_port: int

    @property
    def home(self) -> Path:
        return self.root / "home"

    def fill(self, args: list[str]) -> list[str]:
        return [a.replace(DEAD, self.dead_url).replace(BUSY, str(self.busy_port)) for a in args]

    def restore(self) -> None:
        """Put the repository back (an example may have run ``rm`` or ``gc``)."""
        if not (self.home / "hub" / "models--Org--Fuzz" / "refs" / "main").is_file():
            make_store_repo(self.home / "hub", self.repo, commit="f" * 40)

    def outside(self) -> set[str]:
        """What the folder holding the fuzz folder contains: nothing may appear there."""
        return set(os.listdir(self.root.parent))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when the block ends: connections are refused


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("fuzz")
    repo = make_repo(root / "repos", REPO, {"config.json": b'{"model_type": "qwen2"}\n', "weights.bin": 70_000,
                                           "sub/notes.txt": 300})
    cwd = root / "a" / "b" / "cwd"
    cwd.mkdir(parents=True)
    (root / "file.txt").write_text("not a folder\n")
    (root / "empty").write_bytes(b"")
    (root / "junk.tar").write_bytes(os.urandom(3000))
    (root / "folder").mkdir()
    (root / "\u00fcn\u00efc\u00f8de \u540d").mkdir()
    unwritable = root / "unwritable"
    unwritable.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        w = World(root, cwd, repo, f"http://127.0.0.1:{_closed_port()}", busy.getsockname()[1])
        w.restore()
        env = {"HOME": str(root / "user"), "QWEN_HOME": str(w.home), "HF_ENDPOINT": w.dead_url, "NO_PROXY": "*",
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        with pytest.MonkeyPatch.context() as mp:
            for name in list(os.environ):
                if name.startswith(("HF_", "HUGGING", "QWEN", "MODELSCOPE", "XDG_", "TRANSFORMERS")) or \
                        name.lower().endswith("_proxy"):
                    mp.delenv(name)
            for name, value in env.items():
                mp.setenv(name, value)
            mp.chdir(cwd)
            assert _run_in_process(["export", REPO, "-o", str(root / "ok.tar")])[0] == 0
            unwritable.chmod(0o500)  # (as root it is writable all the same)
            try:
                yield w
            finally:
                unwritable.chmod(0o700)


# -- argument lists from the real commands -------------------------------------------

HUGE = "9" * 5000
NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["0", "1", "-1", "128", "129", "65535", "65536", "99999", "-5", HUGE, "-" + HUGE, "nan", "inf",
                     "-inf", "1e400", "1e3", "0x10", "1_000", " 5", "\u0663", "", "abc", "7.5", "-0.0"]),
)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)  # (utf-8: no surrogates)
GOOD_REPOS = [REPO, f"{REPO}@main", f"{REPO}@{'f' * 40}", "Org/Absent", "datasets/Org/Fuzz"]
REPOS = st.one_of(
    st.sampled_from([f"{REPO}@v9", "../../etc/passwd", "Org/../../x", "Org/Fuzz/../../..", "%2e%2e/x",
                     f"{REPO}@../../x", "Org/Fuzz@", "@main", "Org", "Org/", "/Org/Fuzz", "Org\\Fuzz",
                     "\u03a9rg/\u00d1ame", "Org/\u540d\u524d", "Org/Fuzz\u202e", "Org/" + "n" * 300, "spaces/Org/N",
                     "Org/N@refs/pr/1", "-rf", "Org/.hidden", "Org/..", "C:/x/y"]),
    TEXT,
)
# Only 127.0.0.1 or malformed: a generated host name would be resolved.
SOURCES = st.one_of(
    st.sampled_from([f"modelscope:{DEAD}", f"hf:{DEAD}", "ftp://x", "http://", "modelscope:", "http://127.0.0.1:0",
                     f"{DEAD}/sub/../..", ""]),
    TEXT.filter(lambda s: ":" not in s),
)


def _hosts(may_serve: bool) -> st.SearchStrategy[str]:
    # Resolved from /etc/hosts, or numeric, or refused before any lookup: an
    # empty label ("no..such.host") cannot be put in a DNS query, and --host
    # refuses blanks and 254+ characters. No other name: it would be looked up.
    hosts = ["127.0.0.1", "localhost", "no..such.host", "198.51.100.7", "", " ", "a b", "x" * 300, "\t"]
    if may_serve:
        hosts.append("::1")  # (not where the busy port is taken: a mirror there starts)
    return st.sampled_from(hosts)


def mostly(usual: st.SearchStrategy[str], odd: st.SearchStrategy[str], p: float = 0.6) -> st.SearchStrategy[str]:
    """``usual`` with probability ``p``, else ``odd``: enough valid values to get
    past the first check, enough odd ones to find the next."""
    return st.integers(0, 99).flatmap(lambda x: usual if x < p * 100 else odd)


def _port_number(text: str) -> bool:
    """Whether ``text`` parses as a port number (0 included: any free port)."""
    try:
        return 0 <= int(text) <= 65535
    except ValueError:
        return False


# A port that is in use or no port at all: the command cannot start serving.
NO_SERVING_PORT = mostly(st.just(BUSY), NUMBERS.filter(lambda n: not _port_number(n)))
COMMANDS = ["pull", "path", "ls", "verify", "rm", "gc", "env", "sources", "adopt", "export", "import", "doctor",
            "mirror serve", "launch"]


@st.composite
def argv(draw: st.DrawFn, command: str | None = None, *, may_serve: bool = False) -> list[str]:
    """Arguments for ``command`` (any when None). ``launch`` never gets a port it
    could bind (past the bind it would start the model); ``mirror serve`` gets
    one only when ``may_serve`` (a process, stopped with Ctrl+C once it listens)."""
    path = mostly(st.sampled_from(["../../../out.tar", "../../../ok.tar", "../../../repos"]), st.sampled_from(PATHS),
                  p=0.3)
    repos = mostly(st.sampled_from(GOOD_REPOS), REPOS)
    numbers = mostly(st.integers(0, 200).map(str), NUMBERS, p=0.4)
    cmd = command or draw(st.sampled_from(COMMANDS))
    options: list[list[str]] = []
    positionals: list[str] = []

    def maybe(flag: str, value: st.SearchStrategy[str] | None = None, p: float = 0.5) -> None:
        if draw(st.integers(0, 99)) < p * 100:
            options.append([flag] if value is None else [flag, draw(value)])

    if cmd == "pull":
        positionals += draw(st.lists(repos, min_size=0, max_size=3))
        maybe("--include", mostly(st.sampled_from(["*.json", "sub/*", "*"]), TEXT))
        maybe("--exclude", mostly(st.sampled_from(["*.bin", "sub/"]), TEXT))
        maybe("--connections", numbers)
    elif cmd in ("path", "rm"):
        positionals.append(draw(repos))
    elif cmd == "verify":
        if draw(st.booleans()):
            positionals.append(draw(repos))
        maybe("--repair")
    elif cmd == "gc":
        maybe("--partial-age", numbers)
    elif cmd == "env":
        maybe("--shell", st.sampled_from(["bash", "zsh", "fish", "powershell", "cmd", "", "BASH"]))
    elif cmd == "sources":
        maybe("--probe")
        maybe("--repo", repos)
    elif cmd == "adopt":
        positionals += draw(st.lists(path, max_size=2))
        maybe("--as", repos)
        maybe("--dry-run")
        maybe("--no-verify")
    elif cmd == "export":
        positionals.append(draw(repos))
        maybe("-o", path, p=0.9)
    elif cmd == "import":
        positionals += draw(st.lists(path, max_size=2))
    elif cmd == "doctor":
        options.append(["--offline"])  # never a packet: see the module docstring
        maybe("--fix")
        maybe("--repo", repos)
    elif cmd == "mirror serve":
        maybe("--host", _hosts(may_serve))
        options.append(["--port", draw(mostly(st.sampled_from(["0", BUSY]), NUMBERS) if may_serve else NO_SERVING_PORT)])
        maybe("--token", mostly(st.just("tok-123"), TEXT), p=0.3)
        maybe("--token-file", path, p=0.15)
        maybe("--repos", path, p=0.15)
        maybe("--pull-through", p=0.3)
    elif cmd == "launch":
        maybe("--host", _hosts(may_serve=False))
        options.append(["--port", draw(NO_SERVING_PORT)])
        maybe("--model", repos)
        maybe("--engine", st.sampled_from(["auto", "transformers", "vllm", "tensorrt"]))
        maybe("--vllm-arg", TEXT)
    common = []
    homes = mostly(st.just(HOME), st.sampled_from(PATHS))
    sources = mostly(st.just(DEAD), SOURCES, p=0.7)
    for flag, value in (("--home", homes), ("--json", None), ("--source", sources), ("--offline", None)):
        if draw(st.integers(0, 99)) < 30:
            common.append([flag] if value is None else [flag, draw(value)])
    before = [c for c in common if draw(st.booleans())]
    after = [c for c in common if c not in before]
    if cmd == "launch" and not any(c[0] == "--offline" for c in common):
        after.append(["--offline"])
    body = options + after
    body = draw(st.permutations(body)) if body else body
    out = [x for c in before for x in c] + cmd.split() + positionals + [x for c in body for x in c]
    if draw(st.integers(0, 99)) < 3:  # an option no command has
        out.insert(draw(st.integers(0, len(out))), draw(st.sampled_from(["--nope", "-x", "--home=", "--"])))
    return out


# -- running the real CLI -------------------------------------------------------------

def _run_in_process(args: list[str]) -> tuple[int, str, str]:
    """``main(args)`` with its output captured, bounded in time; SystemExit is an exit code."""
    out, err = io.StringIO(), io.StringIO()
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                result["rc"] = main(args)
        except SystemExit as exc:
            result["rc"] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # what a user would see as a traceback
            result["exc"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(IN_PROCESS_BOUND)
    assert not t.is_alive(), f"qwenhome {args!r} still running after {IN_PROCESS_BOUND} s"
    if "exc" in result:
        raise AssertionError(f"qwenhome {args!r} raised {result['exc']!r}") from result["exc"]
    return int(result["rc"]), out.getvalue(), err.getvalue()


def _run_process(world: World, args: list[str]) -> tuple[int, str, str]:
    """``python -m qwenhome args``, bounded in time; a server that says where it
    listens is then stopped with Ctrl+C (SIGINT), and must end with 0."""
    env = clean_env(world.home, world.dead_url, {"HOME": str(world.root / "user")})
    proc = subprocess.Popen([sys.executable, "-m", "qwenhome", *args], env=env, cwd=world.cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    listening = threading.Event()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if '"listening"' in line or "mirror serving" in line:
                listening.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    err_box: list[str] = []
    err_reader = threading.Thread(target=lambda: err_box.append(proc.stderr.read() if proc.stderr else ""),
                                  daemon=True)
    err_reader.start()
    deadline = PROCESS_BOUND
    while proc.poll() is None and not listening.is_set() and deadline > 0:
        listening.wait(0.05)
        deadline -= 0.05
    stopped = False
    if proc.poll() is None:
        if not listening.is_set():
            proc.kill()
            proc.wait()
            raise AssertionError(f"qwenhome {args!r} still running after {PROCESS_BOUND} s")
        proc.send_signal(signal.SIGINT)
        stopped = True
    try:
        rc = proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"qwenhome {args!r} ignored Ctrl+C") from None
    reader.join(5)
    err_reader.join(5)
    text_out, text_err = "".join(out), "".join(err_box)
    if stopped:
        assert rc == 0, (args, rc, text_err)
    return rc, text_out, text_err


def check_outcome(args: list[str], rc: int, out: str, err: str) -> None:
    assert "Traceback" not in err and "Traceback" not in out, (args, err)
    assert rc in EXIT_CODES, (args, rc, err)
    if rc == 0:
        return
    line = ERROR_LINE.search(err)
    if line:
        if "--json" in args and '"error"' in out:  # the same error on stdout, as JSON
            assert f'"code": "{line.group(1)}"' in out, (args, out, err)
        return
    command = next((a for a in args if a in ("doctor", "verify", "adopt")), None)
    # Reports whose verdict is the exit code: a failed doctor check (1), bad blobs (6).
    assert (command, rc) in {("doctor", 1), ("verify", 6), ("adopt", 6)} and out, (args, rc, out, err)


FUZZ = settings(max_examples=15, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much, HealthCheck.data_too_large])


@pytest.mark.parametrize("command", COMMANDS)
@FUZZ
@given(data=st.data())
def test_any_arguments_in_process_end_with_a_documented_outcome(world: World, command: str,
                                                                 data: st.DataObject) -> None:
    world.restore()
    args = world.fill(data.draw(argv(command), label="argv"))
    before = world.outside()
    rc, out, err = _run_in_process(args)
    check_outcome(args, rc, out, err)
    assert world.outside() == before, f"qwenhome {args!r} wrote beside the fuzz folder"


@settings(max_examples=8, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much])
@given(args=st.sampled_from(["mirror serve", "launch", "mirror serve", None]).flatmap(
    lambda c: argv(c, may_serve=True)))
@example(args=["mirror", "serve", "--port", "0"])  # starts; stopped with Ctrl+C
@example(args=["--json", "mirror", "serve", "--port", "0", "--host", "::1", "--pull-through", "--source", DEAD])
@example(args=["mirror", "serve", "--port", BUSY, "--token", "tok"])
@example(args=["launch", "--port", BUSY, "--offline"])
def test_any_arguments_as_processes_end_with_a_documented_outcome(world: World, args: list[str]) -> None:
    world.restore()
    args = world.fill(args)
    before = world.outside()
    rc, out, err = _run_process(world, args)
    check_outcome(args, rc, out, err)
    assert world.outside() == before, f"qwenhome {args!r} wrote beside the fuzz folder"
