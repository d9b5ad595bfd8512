"""``qwenhome export`` / ``qwenhome import``: a snapshot moves to a machine
without network, verified on import; tampered or unsafe archives are refused."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from qwenhome.config import load_settings
from qwenhome.errors import QwenhomeError
from qwenhome.pull import pull
from qwenhome.store import RepoRef, Store
from qwenhome.store.archive import MANIFEST_MEMBER, export_snapshot, import_archive
from qwenhome.store.verify import verify_repo
from tests.conftest import RunCli
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo


@pytest.fixture
def exported(tmp_path: Path, qwen_home: Path, mirror: Mirror) -> tuple[Path, str]:
    commit = pull(load_settings({"HOME": str(tmp_path)}, home=str(qwen_home), sources=[mirror.url]),
                  RepoRef.parse("Org/Small")).commit
    out = tmp_path / "small.tar"
    rep = export_snapshot(Store(qwen_home / "hub", qwen_home / "qwenhome"), RepoRef.parse("Org/Small"), out)
    assert rep.commit == commit
    return out, commit


def fresh_store(tmp_path: Path, name: str = "b") -> Store:
    home = tmp_path / name
    return Store(home / "hub", home / "qwenhome")


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_export_import_round_trip_on_a_machine_without_network(
        suffix: str, tmp_path: Path, qwen_home: Path, mirror: Mirror, run_cli: RunCli,
        small_repo: GeneratedRepo) -> None:
    pull(load_settings({"HOME": str(tmp_path)}, home=str(qwen_home), sources=[mirror.url]), RepoRef.parse("Org/Small"))
    out = tmp_path / f"small{suffix}"
    assert run_cli(["export", "Org/Small@main", "-o", str(out)]).returncode == 0
    other = tmp_path / "offline-machine"
    res = run_cli(["import", str(out), "--offline", "--json"], home=other, endpoint="http://127.0.0.1:9")
    assert res.returncode == 0, res.stderr
    [rep] = json.loads(res.stdout)["imported"]
    assert rep["blobs"] == len({f.etag for f in small_repo.files.values()}) and rep["refs"] == ["main"]
    res = run_cli(["path", "Org/Small"], home=other)
    snap = Path(res.stdout.strip())
    for rel in small_repo.files:
        assert (snap / rel).read_bytes() == (small_repo.path / rel).read_bytes()
    assert verify_repo(Store(other / "hub", other / "qwenhome"), RepoRef.parse("Org/Small")).ok
    # Importing again writes nothing new.
    again = json.loads(run_cli(["import", str(out), "--json"], home=other).stdout)["imported"][0]
    assert again["blobs"] == 0 and again["blobs_present"] == rep["blobs"]


def test_archive_is_a_plain_hub_cache_fragment(exported: tuple[Path, str], tmp_path: Path,
                                               small_repo: GeneratedRepo) -> None:
    out, commit = exported
    hub = tmp_path / "plain-hub"
    with tarfile.open(out) as tar:
        tar.extractall(hub, filter="tar")
    snap = hub / "models--Org--Small" / "snapshots" / commit
    assert (hub / "models--Org--Small/refs/main").read_text() == commit
    for rel in small_repo.files:
        assert (snap / rel).is_symlink() and (snap / rel).read_bytes() == (small_repo.path / rel).read_bytes()


def rewrite(src: Path, dst: Path, *, edit: dict[str, bytes] | None = None,
            extra: list[tarfile.TarInfo] | None = None, drop_first: bool = False) -> None:
    """Copy an archive, replacing member contents (same size) and appending members."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for i, m in enumerate(tin.getmembers()):
            if drop_first and i == 0:
                continue
            data = tin.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
            if data is not None and m.name in (edit or {}):
                data = (edit or {})[m.name]
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
        for info in extra or []:
            tout.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)


def test_tampered_blob_is_refused_and_never_visible(exported: tuple[Path, str], tmp_path: Path,
                                                    small_repo: GeneratedRepo) -> None:
    out, _ = exported
    exp = small_repo.files["model.safetensors"]
    name = f"models--Org--Small/blobs/{exp.etag}"
    data = bytearray((small_repo.path / "model.safetensors").read_bytes())
    data[4242] ^= 0x01
    bad = tmp_path / "bad.tar"
    rewrite(out, bad, edit={name: bytes(data)})
    store = fresh_store(tmp_path)
    with pytest.raises(QwenhomeError) as info:
        import_archive(store, bad)
    assert info.value.code == "hash-mismatch"
    ref = RepoRef.parse("Org/Small")
    assert not store.has_blob(ref, exp.etag)
    assert not list(store.repo_dir(ref).glob("blobs/.import-*")), "no temp file left"
    assert not store.repo_dir(ref).joinpath("snapshots").exists(), "nothing visible"


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/qwenhome-evil-abs", "models--Org--Small/blobs/../../../evil",
                                  "models--Org--Small/../models--Org--Other/blobs/x", "other/evil",
                                  "models--Org--Small/blobs/" + "0" * 64])
def test_unsafe_member_paths_are_refused(evil: str, exported: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = exported
    bad = tmp_path / "crafted.tar"
    info = tarfile.TarInfo(evil)
    info.size = 5
    rewrite(out, bad, extra=[info])
    store = fresh_store(tmp_path)
    with pytest.raises(QwenhomeError) as err:
        import_archive(store, bad)
    assert err.value.code == "unsafe-path"
    assert not any("evil" in p.name for p in tmp_path.rglob("*"))
    assert not Path("/tmp/qwenhome-evil-abs").exists()


@pytest.mark.parametrize("kind", [tarfile.LNKTYPE, tarfile.CHRTYPE])
def test_hard_links_and_devices_are_refused(kind: bytes, exported: tuple[Path, str], tmp_path: Path) -> None:
    out, commit = exported
    info = tarfile.TarInfo(f"models--Org--Small/snapshots/{commit}/dev")
    info.type, info.linkname = kind, "/etc/passwd"
    bad = tmp_path / "links.tar"
    rewrite(out, bad, extra=[info])
    with pytest.raises(QwenhomeError) as err:
        import_archive(fresh_store(tmp_path), bad)
    assert err.value.code == "unsafe-path"


def test_archive_without_leading_manifest_is_refused(exported: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = exported
    bad = tmp_path / "nomanifest.tar"
    rewrite(out, bad, drop_first=True)
    with pytest.raises(QwenhomeError) as err:
        import_archive(fresh_store(tmp_path), bad)
    assert err.value.code == "bad-archive"
    with tarfile.open(out) as tar:
        assert tar.getmembers()[0].name == MANIFEST_MEMBER
