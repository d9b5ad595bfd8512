"""``qwenhome mirror serve`` as a real process: stock clients download from it; Ctrl+C stops it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import huggingface_hub as hf
import huggingface_hub.errors as hf_errors  # (a submodule: not loaded by the package import)
import pytest

from tests.support.cli import RunCli, start_cli
from tests.support.http import request
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo, make_store_repo, sha256_file


def serve(args: list[str], home: Path, env: dict[str, str] | None = None,
          xet: bool = False) -> tuple[subprocess.Popen[str], str]:
    """Start ``mirror serve``. Without ``xet``, plain HTTP (``--no-xet``): the tests that download
    in-process must not start hf_xet in the test process (test_mirror_xet runs it in subprocesses)."""
    proc = start_cli(["mirror", "serve", "--port", "0", "--json", *([] if xet else ["--no-xet"]), *args],
                     home=home, env=env)
    assert proc.stdout is not None
    text = ""
    while True:  # the event may be pretty-printed over several lines
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            pytest.fail(f"mirror did not start: {proc.stderr.read() if proc.stderr else ''}")
        text += line
        try:
            event = json.loads(text)
            break
        except json.JSONDecodeError:
            continue
    assert event["event"] == "listening"
    return proc, str(event["url"])


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_mirror_serve_repos_folder_until_ctrl_c(qwen_home: Path, repos_root: Path, small_repo: GeneratedRepo,
                                                tmp_path: Path) -> None:
    proc, url = serve(["--repos", str(repos_root)], qwen_home)
    try:
        path = Path(hf.snapshot_download("Org/Small", cache_dir=tmp_path / "c", endpoint=url, token=False))
        for rel, f in small_repo.files.items():
            assert sha256_file(path / rel) == f.sha256
    finally:
        rc = stop(proc)
    assert rc == 0
    assert (qwen_home / "qwenhome" / "mirror" / "hashes.json").is_file()  # hashes kept for the next start


def test_mirror_serve_store_with_token(qwen_home: Path, small_repo: GeneratedRepo, tmp_path: Path) -> None:
    make_store_repo(qwen_home / "hub", small_repo, commit="d" * 40)
    proc, url = serve(["--token", "s3"], qwen_home)
    try:
        with pytest.raises(hf_errors.HfHubHTTPError):
            hf.hf_hub_download("Org/Small", "config.json", cache_dir=tmp_path / "c0", endpoint=url, token=False)
        path = Path(hf.snapshot_download("Org/Small", cache_dir=tmp_path / "c", endpoint=url, token="s3"))
        assert path.name == "d" * 40
        assert sha256_file(path / "model.safetensors") == small_repo.files["model.safetensors"].sha256
    finally:
        assert stop(proc) == 0


def test_run_mirror_reports_a_busy_port_as_usage_error(tmp_path: Path) -> None:
    import socket

    from qwenhome.config import load_settings
    from qwenhome.errors import UsageError
    from qwenhome.mirror import run_mirror

    settings = load_settings({"HOME": str(tmp_path)}, home=str(tmp_path / "home"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UsageError) as info:
            run_mirror(settings, "127.0.0.1", busy.getsockname()[1])
    assert info.value.code == "port-in-use"


def test_pulled_home_served_by_mirror_downloads_identically(
    mirror: Mirror, small_repo: GeneratedRepo, run_cli: RunCli, qwen_home: Path, tmp_path: Path,
) -> None:
    """pull into a home with the CLI, serve that home, download it again with stock huggingface_hub."""
    rc, out, err = run_cli(["pull", "Org/Small"], endpoint=mirror.url, timeout=120)
    assert rc == 0, err
    proc, url = serve([], qwen_home)
    try:
        path = Path(hf.snapshot_download("Org/Small", cache_dir=tmp_path / "c", endpoint=url, token=False))
        assert path.name == Path(out.strip().splitlines()[-1]).name  # same commit id end to end
        for rel, f in small_repo.files.items():
            assert sha256_file(path / rel) == f.sha256
    finally:
        assert stop(proc) == 0


def test_mirror_serve_pull_through_fills_its_store_from_the_source(
    mirror: Mirror, small_repo: GeneratedRepo, qwen_home: Path, tmp_path: Path,
) -> None:
    """``mirror serve --pull-through --source URL`` on an empty home: a stock client
    gets the repository, fetched once from the source and kept in the home."""
    proc, url = serve(["--pull-through", "--source", mirror.url], qwen_home)
    try:
        for n in (1, 2):
            path = Path(hf.snapshot_download("Org/Small", cache_dir=tmp_path / f"c{n}", endpoint=url, token=False))
            for rel, f in small_repo.files.items():
                assert sha256_file(path / rel) == f.sha256
    finally:
        assert stop(proc) == 0
    for rel, f in small_repo.files.items():
        assert mirror.faults.bytes_sent(rel) == f.size, rel  # once, however many clients
    blobs = qwen_home / "hub" / "models--Org--Small" / "blobs"
    assert {p.name for p in blobs.iterdir()} == {f.etag for f in small_repo.files.values()}


def test_mirror_serve_pull_through_refuses_repos_folder(run_cli: RunCli, repos_root: Path, mirror: Mirror) -> None:
    rc, _, err = run_cli(["mirror", "serve", "--pull-through", "--repos", str(repos_root), "--port", "0"],
                         endpoint=mirror.url, timeout=30)
    assert rc == 2 and "error[invalid-arguments]" in err


TOKEN = "tok-5e1f0c2d9a"


@pytest.mark.parametrize("how", ["file", "env"])
def test_mirror_token_from_a_file_or_the_environment_stays_out_of_ps(
        how: str, qwen_home: Path, small_repo: GeneratedRepo, tmp_path: Path) -> None:
    make_store_repo(qwen_home / "hub", small_repo, commit="d" * 40)
    token_file = tmp_path / "token.txt"
    token_file.write_text(TOKEN + "\n")
    if how == "file":
        proc, url = serve(["--token-file", str(token_file)], qwen_home)
    else:
        proc, url = serve([], qwen_home, env={"QWENHOME_MIRROR_TOKEN": TOKEN})
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"mirror" in cmdline and TOKEN.encode() not in cmdline  # what `ps` shows every user
        path = "/Org/Small/resolve/main/config.json"
        assert request(url, path=path).status == 401
        assert request(url, path=path, headers={"Authorization": "Bearer wrong"}).status == 401
        ok = request(url, path=path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200 and ok.body == (small_repo.path / "config.json").read_bytes()
    finally:
        assert stop(proc) == 0


def test_mirror_token_problems_are_usage_errors(run_cli: RunCli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    for args, code in ((["--token-file", str(tmp_path / "absent")], "token-file-unreadable"),
                       (["--token-file", str(empty)], "invalid-token"),
                       (["--token", ""], "invalid-token"),
                       (["--token", "a", "--token-file", str(empty)], "invalid-arguments")):
        rc, _, err = run_cli(["mirror", "serve", "--port", "0", *args], timeout=60)
        assert rc == 2 and err.startswith(f"error[{code}]: "), (args, err)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the IPv4/IPv6 sockets listening on ``port`` (Linux /proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.add(addr)
    return found


def test_mirror_serve_binds_loopback_only_unless_told(qwen_home: Path) -> None:
    proc, url = serve([], qwen_home)  # no --host
    try:
        port = urlsplit(url).port
        assert port and urlsplit(url).hostname == "127.0.0.1"
        if Path("/proc/net/tcp").exists():
            assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing else
        assert request(url, path="/api/models").status == 200
        with pytest.raises(ConnectionRefusedError):  # another loopback address: not listening there
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
    finally:
        assert stop(proc) == 0


def test_mirror_serve_speaks_xet_unless_told_not_to(qwen_home: Path, small_repo: GeneratedRepo, tmp_path: Path) -> None:
    from tests.support.xet_mirror import hf_download

    make_store_repo(qwen_home / "hub", small_repo, commit="d" * 40)
    path = "/Org/Small/resolve/main/model.safetensors"
    proc, url = serve(["--cas-port", "0"], qwen_home, xet=True)
    try:
        deadline = time.monotonic() + 60
        while not request(url, "HEAD", path).header("X-Xet-Hash"):  # chunked in the background
            assert time.monotonic() < deadline, "the mirror never chunked its blob"
            time.sleep(0.2)
        token = json.loads(request(url, path="/api/models/Org/Small/xet-read-token/main").body)
        assert urlsplit(token["casUrl"]).port not in (None, urlsplit(url).port)
        [folder] = hf_download(url, "Org/Small", tmp_path)
        for rel, f in small_repo.files.items():
            assert sha256_file(folder / rel) == f.sha256
    finally:
        assert stop(proc) == 0
    sha = small_repo.files["model.safetensors"].sha256
    assert (qwen_home / "qwenhome" / "xet" / "files" / f"{sha}.json").is_file()  # kept for the next start
    proc, url = serve([], qwen_home)  # --no-xet
    try:
        assert request(url, "HEAD", path).header("X-Xet-Hash") is None
        assert request(url, path="/api/models/Org/Small/xet-read-token/main").status == 404
    finally:
        assert stop(proc) == 0


def test_xet_ports_without_xet_are_a_usage_error(run_cli: RunCli) -> None:
    rc, _, err = run_cli(["mirror", "serve", "--port", "0", "--no-xet", "--xorb-port", "0"], timeout=60)
    assert rc == 2 and err.startswith("error[invalid-arguments]: ")


def test_mirror_serve_names_its_upstream_without_credentials(mirror: Mirror, qwen_home: Path) -> None:
    """``--source http://user:secret@host`` for pull-through: the ready line
    names the upstream without its user:password@ (output often ends in logs)."""
    proc = start_cli(["mirror", "serve", "--port", "0", "--pull-through", "--source",
                      mirror.url.replace("http://", "http://user:s3cret@")], home=qwen_home)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        assert stop(proc) == 0
    text = "".join(lines)
    assert "fetched from: " + mirror.url in text and "s3cret" not in text, text
