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


def test_an_archive_cut_short_between_two_members_is_archive_incomplete(
        exported: tuple[Path, str], tmp_path: Path, qwen_home: Path, run_cli: RunCli,
        small_repo: GeneratedRepo) -> None:
    """A copy that stopped exactly where a member begins reads as a shorter,
    well-formed archive: the blobs the manifest lists and the archive lacks
    are named, the ones it has are kept verified, and nothing is visible."""
    out, _ = exported
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    assert members[0].name == MANIFEST_MEMBER and "/blobs/" in members[1].name
    kept = members[1].name.rsplit("/", 1)[1]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(out.read_bytes()[:members[2].offset])  # the manifest and one blob
    home = tmp_path / "offline-machine"
    res = run_cli(["import", str(cut)], home=home)
    assert res.returncode == 6, res.stderr
    lacking = sorted(rel for rel, f in small_repo.files.items() if f.etag != kept)
    assert res.stderr.strip() == (f"error[archive-incomplete]: archive lacks {len(lacking)} blob(s), e.g. for "
                                  f"{lacking[0]} (hint: the bytes were corrupted in transit or on disk; pull "
                                  "again (bad files are never kept))")
    store = Store(home / "hub", home / "qwenhome")
    assert store.has_blob(RepoRef.parse("Org/Small"), kept)
    assert not (home / "hub" / "models--Org--Small" / "snapshots").exists()
    assert not (home / "hub" / "models--Org--Small" / "refs").exists()


def test_a_snapshot_of_plain_files_is_export_unsupported(
        exported: tuple[Path, str], tmp_path: Path, qwen_home: Path, run_cli: RunCli) -> None:
    """A cache made where symlinks are unavailable holds copies in its
    snapshots: nothing says which blob each is, so it is not exported."""
    _, commit = exported
    file = qwen_home / "hub" / "models--Org--Small" / "snapshots" / commit / "config.json"
    data = file.read_bytes()
    file.unlink()
    file.write_bytes(data)
    out = tmp_path / "copies.tar"
    res = run_cli(["export", "Org/Small", "-o", str(out)])
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip() == (f"error[export-unsupported]: {file} is not a link to a blob; cannot export it "
                                  "(hint: snapshots made without symlinks cannot be exported)")
    assert not out.exists() and not list(tmp_path.glob(".copies.tar.*"))


@pytest.mark.parametrize("where", ["a-folder", "a-name-too-long"])
def test_an_export_the_system_refuses_to_write_is_store_io(
        where: str, exported: tuple[Path, str], tmp_path: Path, run_cli: RunCli) -> None:
    """``-o`` names a folder (the rename onto it fails: EISDIR), or a name
    longer than the filesystem allows (ENAMETOOLONG): one line, no traceback,
    no temporary file left."""
    target = tmp_path / "out"
    target.mkdir()
    out = target if where == "a-folder" else target / ("x" * 260 + ".tar")
    res = run_cli(["export", "Org/Small", "-o", str(out)])
    assert res.returncode == 1, res.stderr
    why = "Is a directory" if where == "a-folder" else "File name too long"
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("error[store-io]: cannot write ") and line.endswith(f": {why}"), line
    assert list(target.iterdir()) == [] and not list(out.parent.glob(".*.tmp"))
