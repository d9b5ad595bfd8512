"""No request target can make the mirror serve a file outside its root.

A fuzz corpus of crafted targets (encoded and double-encoded dots, overlong
UTF-8, NUL, backslashes, absolute and drive paths, symlinks planted in the
repos and the store that point outside) runs in-process against the server's
own resolver, and a sample runs over real HTTP. The Xet routes (token route,
CAS, xorb URLs) get their own corpus, mangled hashes included.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import os
import random
import re
import socket
from pathlib import Path

import pytest

from qwenhome.errors import QwenhomeError
from qwenhome.mirror import Backend, BadTarget, FolderBackend, StoreBackend, resolve_target
from tests.support.mirror import pull_through_settings, start_mirror, start_pull_through

SECRET = b"TOP-SECRET-5f1c0e"
COMMIT = "c" * 40

TOKENS = [
    "..", ".", "...", "....", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%2e", "%252e%252e", "%25252e%25252e",
    "..%2f", "%2e%2e%2f", "%2f", "%2F", "%2f%2f", "..%5c", "%5c", "\\", "..\\..", "%00", "\x00", "ok.txt%00",
    "%c0%ae%c0%ae", "%e0%80%ae%e0%80%ae", "%c0%af", "%u002e%u002e", "", "/", "//", "/etc/passwd",
    "%2fetc%2fpasswd", "etc", "passwd", "C:", "C%3A", "C:%5cWindows", "c:/x", "~", "~root", "outside",
    "secret.txt", "leak.txt", "linkdir", "abs.txt", "ok.txt", "Org", "Victim", "blobs", "snapshots",
    "%20", ";", "?", "#", "%3F", "%23", "%0a", "%0d%0a", "%ff", "%", "%%", "%2", "..;", ".%00.",
    "ok.txt/..", "linkdir/secret.txt", "leak.txt/", "%2e%2e%2f%2e%2e%2foutside%2fsecret.txt",
]
PREFIXES = [
    "/Org/Victim/resolve/main/", f"/Org/Victim/resolve/{COMMIT}/", "/datasets/Org/D/resolve/main/",
    "/Org/Escape/resolve/main/", "/Org/S/resolve/main/", f"/Org/S/resolve/{COMMIT}/",
    "/Org/%2e%2e/resolve/main/", "/%2e%2e/%2e%2e/resolve/main/", "/Org/Victim/resolve/%2e%2e%2f%2e%2e/",
    "/Org/Victim/resolve/..%2f..%2foutside/", "/datasets/..%2f..%2foutside/D/resolve/main/",
    "/Org/Victim/resolve/main/linkdir/", "/Org/Victim/resolve/main/sub/", "/../../outside/",
]


def plant(tmp_path: Path) -> tuple[Path, Path]:
    """A repos root and a store, both with traps pointing at ``outside/secret.txt``."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "Org" / "Victim").mkdir(parents=True)
    (outside / "Org" / "Victim" / "ok.txt").write_bytes(SECRET)

    repos = tmp_path / "repos"
    victim = repos / "Org" / "Victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "ok.txt").write_bytes(b"fine")
    (victim / "sub" / "ok.txt").write_bytes(b"fine too")
    (victim / "leak.txt").symlink_to(outside / "secret.txt")
    (victim / "rel-leak.txt").symlink_to("../../../outside/secret.txt")
    (victim / "linkdir").symlink_to(outside)
    (victim / "abs.txt").symlink_to("/etc/passwd")
    (repos / "Org" / "Escape").symlink_to(outside)
    (repos / "datasets" / "Org" / "D").mkdir(parents=True)
    (repos / "datasets" / "Org" / "D" / "ok.txt").write_bytes(b"data")

    hub = tmp_path / "hub"
    repo = hub / "models--Org--S"
    snap = repo / "snapshots" / COMMIT
    (snap / "sub").mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "refs" / "evil").write_text("../../../outside")
    (repo / "blobs" / ("1" * 40)).write_bytes(b"fine")
    (snap / "ok.txt").symlink_to("../../blobs/" + "1" * 40)
    (snap / "leak.txt").symlink_to("../../../../outside/secret.txt")
    (repo / "blobs" / ("2" * 64)).symlink_to(outside / "secret.txt")  # a blob that leaves the store
    (snap / "big.bin").symlink_to("../../blobs/" + "2" * 64)
    (snap / "sub" / "abs.txt").symlink_to("/etc/passwd")
    (snap / "linkdir").symlink_to(outside)
    (hub / "models--Org--Escape").symlink_to(outside)
    return repos, hub


def corpus(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    targets = {p + t for p, t in itertools.product(PREFIXES, TOKENS)}
    while len(targets) < n:
        parts = [rng.choice(TOKENS) for _ in range(rng.randint(1, 6))]
        sep = rng.choice(["/", "/", "/", "%2f", "%2F", "%5c", "//"])
        targets.add(rng.choice(PREFIXES) + sep.join(parts))
    return sorted(targets)


def check_in_process(backend: Backend, targets: list[str]) -> dict[str, Path]:
    root = os.path.realpath(backend.root)
    served: dict[str, Path] = {}
    for target in targets:
        try:
            path = resolve_target(backend, target)
        except (BadTarget, QwenhomeError):
            continue
        real = os.path.realpath(path)
        assert real.startswith(root + os.sep), (target, real)
        assert SECRET not in path.read_bytes(), target
        served[target] = path
    return served


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    return plant(tmp_path)


def test_fuzzed_targets_never_resolve_outside_the_root(planted: tuple[Path, Path]) -> None:
    repos, hub = planted
    targets = corpus(12_000)
    assert len(targets) >= 10_000
    folder = check_in_process(FolderBackend(repos), targets)
    store = check_in_process(StoreBackend(hub), targets)
    # Legitimate files stay reachable; traps never are.
    assert {p.read_bytes() for p in folder.values()} <= {b"fine", b"fine too", b"data"}
    assert "/Org/Victim/resolve/main/ok.txt" in folder and "/Org/S/resolve/main/ok.txt" in store
    for trap in ("leak.txt", "rel-leak.txt", "abs.txt", "linkdir/secret.txt"):
        assert f"/Org/Victim/resolve/main/{trap}" not in folder
    for trap in ("leak.txt", "big.bin", "sub/abs.txt", "linkdir/secret.txt"):
        assert f"/Org/S/resolve/main/{trap}" not in store


def test_traps_are_not_listed_in_metadata(planted: tuple[Path, Path]) -> None:
    repos, hub = planted
    folder = FolderBackend(repos).snapshot("model", "Org/Victim", "main")
    assert set(folder.files) == {"ok.txt", "sub/ok.txt"}
    store = StoreBackend(hub).snapshot("model", "Org/S", "main")
    assert set(store.files) == {"ok.txt"}
    for backend, repo in ((FolderBackend(repos), "Org/Escape"), (StoreBackend(hub), "Org/Escape")):
        with pytest.raises(QwenhomeError):
            backend.snapshot("model", repo, "main")
    with pytest.raises(QwenhomeError):
        StoreBackend(hub).snapshot("model", "Org/S", "evil")


def raw_get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Send the target byte for byte (no client-side normalisation or validation)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET " + target.encode("utf-8", "surrogateescape") + b" HTTP/1.1\r\nHost: x\r\n" + extra
                     + b"Connection: close\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.read()


@pytest.mark.parametrize("kind", ["folder", "store"])
def test_fuzzed_targets_over_http_never_leak(planted: tuple[Path, Path], kind: str) -> None:
    repos, hub = planted
    backend: Backend = FolderBackend(repos) if kind == "folder" else StoreBackend(hub)
    sample = [
        *random.Random(11).sample(corpus(12_000), 300),
        "/Org/Victim/resolve/main/%2e%2e/%2e%2e/%2e%2e/outside/secret.txt",
        "/Org/Victim/resolve/main/..%2f..%2f..%2foutside%2fsecret.txt",
        "/Org/Victim/resolve/main/leak.txt", "/Org/S/resolve/main/big.bin", "/Org/S/resolve/main/leak.txt",
        "/Org/Escape/resolve/main/secret.txt", "/api/models/Org/Escape/revision/main",
        "/api/models/Org/Victim/tree/main/linkdir", "/Org/S/resolve/evil/ok.txt",
        "http://evil/../../outside/secret.txt", "*",
        "/Org/Victim/resolve/main/ok.txt", "/Org/Victim/resolve/main/sub%2fok.txt", "/Org/S/resolve/main/ok.txt",
        f"/Org/S/resolve/{COMMIT}/ok.txt", "/datasets/Org/D/resolve/main/ok.txt",
    ]
    expected = check_in_process(backend, sample)
    with start_mirror(backend) as m:
        for target in sample:
            status, body = raw_get(m.server.port, target)
            assert SECRET not in body and b"root:x:0:0" not in body, target
            if not target.startswith("/api/"):  # the server serves exactly what its resolver allows
                assert (status == 200) == (target in expected), (target, status)
        assert len(expected) >= 2  # the legitimate files were served
        legit = "/Org/Victim/resolve/main/ok.txt" if kind == "folder" else "/Org/S/resolve/main/ok.txt"
        assert raw_get(m.server.port, legit) == (200, b"fine")


def test_pull_through_never_serves_outside_the_store_even_for_a_lying_upstream(
        planted: tuple[Path, Path], tmp_path: Path) -> None:
    """The planted store behind a pull-through mirror whose upstream (the planted
    repos) also lies: it lists a file whose blob name is the store's trap link."""
    repos, hub = planted
    home = tmp_path / "home"
    home.mkdir()
    (home / "hub").symlink_to(hub)
    with start_mirror(FolderBackend(repos)) as upstream:
        upstream.faults.forge_repo("Org/Liar", [{"path": "big.bin", "size": len(SECRET), "sha256": "2" * 64}],
                                   bodies={"big.bin": b"x" * len(SECRET)})
        (hub / "models--Org--Liar" / "blobs").mkdir(parents=True)
        (hub / "models--Org--Liar" / "blobs" / ("2" * 64)).symlink_to(hub.parent / "outside" / "secret.txt")
        mirror, _ = start_pull_through(pull_through_settings(home, upstream.url))
        with mirror:
            sample = [
                *random.Random(12).sample(corpus(12_000), 200),
                "/Org/Liar/resolve/main/big.bin", "/Org/S/resolve/main/big.bin", "/Org/S/resolve/main/leak.txt",
                "/Org/Victim/resolve/main/leak.txt", "/Org/Victim/resolve/main/%2e%2e/%2e%2e/outside/secret.txt",
                "/Org/Escape/resolve/main/secret.txt", "/Org/Victim/resolve/main/ok.txt",
            ]
            for target in sample:
                _status, body = raw_get(mirror.server.port, target)
                assert SECRET not in body and b"root:x:0:0" not in body, target
            # Files the upstream really has are pulled through and served.
            assert raw_get(mirror.server.port, "/Org/Victim/resolve/main/ok.txt") == (200, b"fine")


XET_PREFIXES = [
    "/v2/reconstructions/", "/v1/reconstructions/", "/v1/files/", "/v1/xorbs/default/", "/xorb/default/",
    "/v2/reconstructions/%2e%2e/", "/xorb/%2e%2e/", "/xorb/default/..%2f", "/api/models/Org/Victim/xet-read-token/",
    "/api/models/Org/S/xet-read-token/", "/api/models/Org/Escape/xet-read-token/",
    "/api/models/Org/%2e%2e/xet-read-token/", "/api/datasets/Org/D/xet-read-token/",
    "/api/models/Org/Victim/xet-write-token/", "/api/models/%2e%2e/%2e%2e/xet-read-token/main/",
]


def xet_corpus(n: int, hashes: list[str], seed: int = 9) -> list[str]:
    """Traversal tokens and mangled forms of the real Xet hashes, after every Xet route."""
    rng = random.Random(seed)
    tokens = TOKENS + hashes + [h.upper() for h in hashes] + [h[:-1] for h in hashes] + [
        f"{h}/../../outside/secret.txt" for h in hashes] + [f"{h}%2f..%2f..%2fsecret.txt" for h in hashes] + [
        f"..%2f{h}" for h in hashes] + ["main", COMMIT, "%2e%2e%2f%2e%2e%2fmain"]
    targets = {p + t for p, t in itertools.product(XET_PREFIXES, tokens)}
    while len(targets) < n:
        parts = [rng.choice(tokens) for _ in range(rng.randint(1, 4))]
        targets.add(rng.choice(XET_PREFIXES) + rng.choice(["/", "%2f", "//", "%5c"]).join(parts))
    return sorted(targets)


@pytest.mark.parametrize("kind", ["folder", "store"])
def test_fuzzed_xet_routes_never_leak(planted: tuple[Path, Path], tmp_path: Path, kind: str) -> None:
    """The token route, the CAS and the xorb URLs, fuzzed with traversal tokens and mangled hashes
    (with a valid access token and a Range, so that nothing stops at the door): zero successes."""
    from qwenhome.mirror.protocol import parse_target
    from tests.support.xet_mirror import random_bytes, start_xet_mirror, token_for

    repos, hub = planted
    weights = random_bytes(300_000, 5)
    (repos / "Org" / "Victim" / "w.bin").write_bytes(weights)
    sha = hashlib.sha256(weights).hexdigest()
    (hub / "models--Org--S" / "blobs" / sha).write_bytes(weights)
    (hub / "models--Org--S" / "snapshots" / COMMIT / "w.bin").symlink_to(f"../../blobs/{sha}")
    backend: Backend = FolderBackend(repos) if kind == "folder" else StoreBackend(hub)
    repo = "Org/Victim" if kind == "folder" else "Org/S"
    with start_xet_mirror(backend, tmp_path / "xet") as m:
        assert m.server.xet is not None
        file_id = raw_head(m.server.port, f"/{repo}/resolve/main/w.bin")
        token = token_for(m.url, repo, "main")
        xorbs = list(m.server.xet.records.headers()[0].owns)
        targets = xet_corpus(3000, [file_id, *xorbs])
        for target in targets:
            with contextlib.suppress(BadTarget):
                route = parse_target(target)
                assert route.path == "" and (route.key == "" or re.fullmatch("[0-9a-f]{64}", route.key)), target
        leaks = served = 0
        for target in targets:
            status, body = raw_get(m.server.port, target, {"Authorization": f"Bearer {token.access_token}",
                                                          "Range": "bytes=0-100"})
            leaks += SECRET in body or b"root:x:0:0" in body
            served += status in (200, 206) and "/xorb/" in target
        assert leaks == 0 and served == 0
        # The legitimate routes work, with the same client.
        assert raw_get(m.server.port, f"/v2/reconstructions/{file_id}",
                       {"Authorization": f"Bearer {token.access_token}"})[0] == 200


def raw_head(port: int, target: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"HEAD {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        resp = http.client.HTTPResponse(sock, method="HEAD")
        resp.begin()
        value = resp.getheader("X-Xet-Hash")
    assert value
    return value
