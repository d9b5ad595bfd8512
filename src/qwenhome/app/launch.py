"""``qwenhome launch``: the complete system from one home.

Order of work (each step says what it does on stderr):

1. the model: already in the home -> nothing to do (works offline, instant);
   missing -> pulled with visible progress (``--demo``: built once, served
   from a local mirror, pulled through the real pull path);
2. a quick doctor runs: before a pull, with the network (none with
   ``--offline`` or ``HF_HUB_OFFLINE=1``); else alongside the start, on the
   home only, since the served models need no host; never fatal;
3. the API server (and with vLLM, ``vllm serve <snapshot>``) start as child
   processes whose environment carries the one-home variables and
   ``HF_HUB_OFFLINE=1`` from their first instruction, so no Hugging Face
   library in them can look elsewhere or reach the network;
4. children are supervised: a crash is shown with its reason and restarted
   with backoff, up to a limit; Ctrl+C or SIGTERM stops everything.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from ..config import Settings
from ..errors import EXIT_OK, QwenhomeError, UsageError
from ..listen import bind_error
from ..repo.ref import RepoRef
from ..store.cache import Store
from .supervisor import Child, RestartPolicy

DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
READY_TIMEOUT = 900.0
DOCTOR_LINES = 2  # a large model on a slow disk can take minutes to load


class Stop(Exception):
    """SIGTERM, turned into an exception so the same clean-up runs as for Ctrl+C."""


def _writer(out: TextIO) -> Callable[[str], None]:
    def say(msg: str) -> None:
        out.write(f"qwenhome: {msg}\n")
        out.flush()

    return say


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except (OSError, OverflowError, ValueError) as exc:  # (UnicodeError is a ValueError)
            raise bind_error(host, port, exc) from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def local_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def ensure_demo_images(settings: Settings, say: Callable[[str], None]) -> None:
    """The demo's tiny image model, in the home like the chat model, when the
    images extra is installed; the server then mounts the image panel."""
    from ..images.app import available
    from ..termui import ProgressView

    if not available():
        say("images: not installed (pip install 'qwenhome[images]' adds the image panel)")
        return
    from ..images.demo import ensure_demo_image_model

    view = ProgressView()
    try:
        ensure_demo_image_model(settings, on_event=view, say=say)
    finally:
        view.close()


def resolve_model(
    settings: Settings, model: str | None, demo: bool, say: Callable[[str], None]
) -> tuple[RepoRef, Path, bool]:
    """The model's snapshot in the home: used as is when present, else pulled
    (after a quick doctor, when the network is needed). The flag says whether
    the doctor ran already."""
    from ..errors import NotCachedError
    from ..termui import ProgressView

    if demo:
        from ..demo.flow import DEMO_REPO, ensure_demo_model

        if model and RepoRef.parse(model).repo_id != DEMO_REPO:
            raise UsageError("--demo serves its own model; drop --model", code="usage")
        view = ProgressView()
        try:
            snap = ensure_demo_model(settings, on_event=view, say=say)
        finally:
            view.close()
        ensure_demo_images(settings, say)
        return RepoRef.parse(DEMO_REPO), snap, False
    ref = RepoRef.parse(model or DEFAULT_MODEL)
    store = Store(settings.hub_cache, settings.state_dir)
    try:
        return ref, store.snapshot_path(ref), False
    except NotCachedError:
        pass
    from ..pull import pull

    say(f"{ref} is not in the home ({settings.hub_cache}); pulling it once")
    # The network matters now: show what the doctor finds before the transfer.
    quick_doctor(settings, ref.repo_id, say, network=not settings.offline_forced).join()
    view = ProgressView()
    cancel = threading.Event()
    try:
        result = pull(settings, ref, on_event=view, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()  # transfer threads stop; what is on disk resumes next time
        raise
    finally:
        view.close()
    return ref, result.snapshot, True


def quick_doctor(settings: Settings, repo: str, say: Callable[[str], None], *, network: bool) -> threading.Thread:
    """Run the doctor with short time-outs in the background; show what it finds.
    ``network=False``: the home's checks only, not one packet sent."""

    def run() -> None:
        try:
            from ..doctor import DoctorOptions, DoctorTimeouts, run_doctor

            opts = DoctorOptions(timeouts=DoctorTimeouts(dns=1.0, connect=1.0, read=1.5, total=3.0))
            report = run_doctor(settings, repo=repo, options=opts, network=network)
        except Exception as exc:  # the doctor must never stop the launch
            say(f"doctor could not run: {exc}")
            return
        say(f"doctor: {report.verdict}")
        findings = [c for c in report.checks if c.status in ("warn", "fail") and c.summary not in report.verdict]
        # The model is in the home by now, so these only matter for later pulls:
        # the first few lines, and where to see the rest.
        for c in findings[:DOCTOR_LINES]:
            say(f"doctor {c.status} [{c.code}]: {c.summary}" + (f" — fix: {c.fix}" if c.fix else ""))
        if len(findings) > DOCTOR_LINES:
            say(f"doctor: {len(findings) - DOCTOR_LINES} more finding(s); `qwenhome doctor` or the page's Doctor panel shows all")

    t = threading.Thread(target=run, name="qwenhome-quick-doctor", daemon=True)
    t.start()
    return t


def wait_ready(url: str, children: Sequence[Child], timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """Poll ``/health`` until the engine is ready; fail early if a child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in children:
            if not c.alive():
                code = c.proc.poll() if c.proc else None
                raise QwenhomeError(
                    f"{c.name} stopped while starting: {'' if code is None else c.exit_reason(code)}",
                    code="server-start-failed",
                )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2.0) as resp:
                body: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 503 while loading: the body says why
            try:
                body = json.loads(exc.read())
            except (OSError, ValueError):
                body = {}
        except (OSError, ValueError):
            body = {}
        if body.get("status") in ("ready", "error"):
            return body
        time.sleep(0.1)
    raise QwenhomeError(f"the server at {url} was not ready after {timeout:.0f} s", code="server-start-failed")


@contextlib.contextmanager
def _sigterm_as_stop() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_sig: int, _frame: Any) -> None:
        raise Stop()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def choose_engine(engine: str, base_env: Mapping[str, str]) -> str:
    if engine != "auto":
        return engine
    from .vllm_engine import vllm_available

    return "vllm" if vllm_available() and shutil.which("vllm", path=base_env.get("PATH")) else "transformers"


def server_command(settings: Settings, ref: RepoRef, snap: Path, host: str, port: int,
                   engine: str, engine_url: str | None, sources: Sequence[str],
                   allowed_hosts: Sequence[str] = (), max_body_mib: float | None = None) -> list[str]:
    argv = [sys.executable, "-m", "qwenhome.app.serve", "--home", str(settings.home), "--model", ref.repo_id,
            "--snapshot", str(snap), "--host", host, "--port", str(port), "--engine", engine]
    if engine_url:
        argv += ["--engine-url", engine_url]
    for s in sources:
        argv += ["--source", s]
    for name in allowed_hosts:
        argv += ["--allowed-host", name]
    if max_body_mib is not None:
        argv += ["--max-body-mib", repr(max_body_mib)]
    if not settings.offline_forced:
        argv.append("--online")
    return argv


def run_launch(
    settings: Settings,
    *,
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    engine: str = "auto",
    demo: bool = False,
    base_env: Mapping[str, str] | None = None,
    vllm_args: Sequence[str] = (),
    policy: RestartPolicy | None = None,
    out: TextIO | None = None,
    ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    allowed_hosts: Sequence[str] = (),
    max_body_mib: float | None = None,
    sources: Sequence[str] = (),
) -> int:
    """Launch the complete system and block until stopped; returns an exit code.

    ``base_env`` is the environment children inherit (the CLI passes
    ``os.environ``); the one-home variables are applied on top. ``ready`` is
    called with the page's URL once the engine is ready; setting ``stop``
    shuts down as Ctrl+C does. ``allowed_hosts`` are host names the API
    answers to besides this machine's own (``--allowed-host``);
    ``max_body_mib`` bounds a JSON request body; ``sources`` (``--source``)
    are where pulls started from the page fetch from.
    """
    from ..envexport import child_env
    from .guard import AllowList, body_limit_from_mib

    say = _writer(out or sys.stderr)
    base = dict(base_env or settings.env)
    AllowList.parse(host, allowed_hosts)  # a bad value fails here, not in a restarting child
    if max_body_mib is not None:
        body_limit_from_mib(max_body_mib)
    check_port_free(host, port)
    started = time.monotonic()
    ref, snap, doctor_ran = resolve_model(settings, model, demo, say)
    say(f"model {ref.repo_id} from the home: {snap}")
    if not doctor_ran:
        quick_doctor(settings, ref.repo_id, say, network=False)  # the home holds what is served

    kind = choose_engine(engine, base)
    env = child_env(settings, base)
    children: list[Child] = []
    policy = policy or RestartPolicy()
    engine_url = None
    if kind == "vllm":
        from .vllm_engine import vllm_command

        exe = shutil.which("vllm", path=base.get("PATH"))
        if exe is None:
            raise UsageError("--engine vllm: the vllm command is not installed", code="missing-component",
                             hint="pip install vllm (needs a GPU), or use --engine transformers")
        vport = free_port()
        engine_url = f"http://127.0.0.1:{vport}"
        children.append(Child("vllm", vllm_command([exe], snap, ref.repo_id, port=vport, extra=vllm_args),
                               env, policy, say))
    argv = server_command(settings, ref, snap, host, port, kind, engine_url, sources, allowed_hosts, max_body_mib)
    children.append(Child("server", argv, env, policy, say))
    url = local_url(host, port)
    try:
        with _sigterm_as_stop():
            for c in children:
                c.start()
            say(f"starting the {kind} engine and the API on {url}")
            body = wait_ready(url, children)
            if body.get("status") == "error":
                err = body.get("error", {})
                raise QwenhomeError(err.get("message", "engine failed"), code=err.get("code", "engine-load-failed"),
                                    hint=err.get("hint"))
            say(f"ready in {time.monotonic() - started:.1f} s: open {url}/  (OpenAI API: {url}/v1; Ctrl+C stops)")
            if ready is not None:
                ready(url)
            while stop is None or not stop.is_set():
                now = time.monotonic()
                for c in children:
                    fatal = c.check(now)
                    if fatal:
                        raise QwenhomeError(fatal, code="engine-crashed",
                                            hint="see the lines above for the cause; fix it and launch again")
                time.sleep(0.2)
            return EXIT_OK
    except (KeyboardInterrupt, Stop):
        # A requested stop is a clean end, as for uvicorn itself.
        say("stopping")
        return EXIT_OK
    finally:
        for c in reversed(children):
            c.stop()
