"""Stock huggingface_hub downloads from the mirror, verified by sha256.

The request sequence asserted here is what huggingface_hub 2.4.0 sends for a
snapshot: revision info, the recursive tree at the resolved commit, then per
file a HEAD on ``resolve`` and a GET (nothing for an empty file's GET).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import huggingface_hub as hf
import pytest

from tests.support.cli import clean_env
from tests.support.mirror import Mirror, start_mirror
from tests.support.repos import GeneratedRepo, MiB, make_repo, sha256_file


def assert_snapshot(folder: Path, repo: GeneratedRepo) -> None:
    for rel, f in repo.files.items():
        assert sha256_file(folder / rel) == f.sha256, rel


def test_snapshot_download_from_folder_backend(mirror: Mirror, small_repo: GeneratedRepo, tmp_path: Path) -> None:
    path = hf.snapshot_download("Org/Small", cache_dir=tmp_path / "c", endpoint=mirror.url, token=False)
    assert_snapshot(Path(path), small_repo)
    log = mirror.faults.records()
    commit = Path(path).name
    assert [(r.method, r.target) for r in log[:2]] == [
        ("GET", "/api/models/Org/Small/revision/main"),
        ("GET", f"/api/models/Org/Small/tree/{commit}?recursive=true&expand=false"),
    ]
    heads = {r.file_path for r in log if r.method == "HEAD"}
    gets = {r.file_path for r in log if r.method == "GET" and r.file_path}
    assert heads == set(small_repo.files)
    assert gets == set(small_repo.files) - {"empty.txt"}
    assert all(r.target.startswith(f"/Org/Small/resolve/{commit}/") for r in log[2:])
    assert mirror.faults.bytes_sent("model.safetensors") == small_repo.files["model.safetensors"].size


def test_snapshot_download_from_store_backend(store_mirror: Mirror, small_repo: GeneratedRepo, tmp_path: Path) -> None:
    path = hf.snapshot_download("Org/Small", cache_dir=tmp_path / "c", endpoint=store_mirror.url, token=False)
    assert Path(path).name == "a" * 40
    assert_snapshot(Path(path), small_repo)
    blobs = {p.name for p in (tmp_path / "c" / "models--Org--Small" / "blobs").iterdir()}
    assert blobs == {f.etag for f in small_repo.files.values()}


def test_dataset_snapshot_download(mirror: Mirror, small_dataset: GeneratedRepo, tmp_path: Path) -> None:
    path = hf.snapshot_download("Org/Data", repo_type="dataset", cache_dir=tmp_path / "c",
                                endpoint=mirror.url, token=False)
    assert_snapshot(Path(path), small_dataset)


def test_hf_hub_download_single_file_and_missing_file(mirror: Mirror, small_repo: GeneratedRepo, tmp_path: Path) -> None:
    path = hf.hf_hub_download("Org/Small", "sub/dir/notes.txt", cache_dir=tmp_path / "c",
                              endpoint=mirror.url, token=False)
    assert sha256_file(Path(path)) == small_repo.files["sub/dir/notes.txt"].sha256
    with pytest.raises(hf.errors.EntryNotFoundError):
        hf.hf_hub_download("Org/Small", "nope.txt", cache_dir=tmp_path / "c", endpoint=mirror.url, token=False)
    with pytest.raises(hf.errors.RepositoryNotFoundError):
        hf.hf_hub_download("Org/Nope", "x.txt", cache_dir=tmp_path / "c", endpoint=mirror.url, token=False)
    with pytest.raises(hf.errors.RevisionNotFoundError):
        hf.hf_hub_download("Org/Small", "config.json", revision="v9", cache_dir=tmp_path / "c",
                           endpoint=mirror.url, token=False)


def test_client_keeps_token_on_mirror_and_drops_it_at_cdn_host(
    repos_root: Path, small_repo: GeneratedRepo, tmp_path: Path,
) -> None:
    from qwenhome.mirror import FolderBackend

    with start_mirror(FolderBackend(repos_root), token="tok", redirect_lfs=True) as m:
        path = hf.snapshot_download("Org/Small", cache_dir=tmp_path / "c", endpoint=m.url, token="tok")
        assert_snapshot(Path(path), small_repo)
        cdn = [r for r in m.faults.records() if r.path.startswith("/cdn/")]
        assert [r.file_path for r in cdn] == ["model.safetensors"]
        assert not cdn[0].has_auth_header and cdn[0].status == 200
        others = [r for r in m.faults.records() if not r.path.startswith("/cdn/")]
        assert others and all(r.has_auth_header and r.status in (200, 302) for r in others)


def test_client_after_dropped_body_resumes_only_from_whole_10mib_chunks(tmp_path: Path) -> None:
    """huggingface_hub counts progress in 10 MiB chunks: a drop before the first
    chunk refetches the whole file; a later drop resumes at the chunk boundary.
    The request log shows exactly which bytes were sent twice."""
    from qwenhome.mirror import FolderBackend

    repo = make_repo(tmp_path / "repos", "Org/R", {"early.bin": 5 * MiB, "late.bin": 25 * MiB})
    with start_mirror(FolderBackend(tmp_path / "repos")) as m:
        m.faults.drop_after(2_000_000, path="early.bin").drop_after(12 * MiB, path="late.bin")
        for name in ("early.bin", "late.bin"):
            path = hf.hf_hub_download("Org/R", name, cache_dir=tmp_path / "c", endpoint=m.url, token=False)
            assert sha256_file(Path(path)) == repo.files[name].sha256
        early = m.faults.records("early.bin", "GET")
        assert [(r.range, r.status, r.bytes_sent) for r in early] == [
            (None, 200, 2_000_000), (None, 200, 5 * MiB)]
        late = m.faults.records("late.bin", "GET")
        assert [(r.range, r.status, r.bytes_sent) for r in late] == [
            (None, 200, 12 * MiB), (f"bytes={10 * MiB}-", 206, 15 * MiB)]
        assert late[0].error and late[0].connection_id != late[1].connection_id


def test_hf_endpoint_in_clean_subprocess(mirror: Mirror, small_repo: GeneratedRepo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home, mirror.url, {"HF_HUB_CACHE": str(home / "hub")})
    code = "import huggingface_hub as h; print(h.snapshot_download('Org/Small'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    folder = Path(out.stdout.strip().splitlines()[-1])
    assert folder.is_relative_to(home / "hub")
    assert_snapshot(folder, small_repo)


def test_list_models_and_datasets_with_stock_client(mirror: Mirror, store_mirror: Mirror) -> None:
    for m in (mirror, store_mirror):
        api = hf.HfApi(endpoint=m.url, token=False)
        assert "Org/Small" in [x.id for x in api.list_models()]
        assert [x.id for x in api.list_models(search="small")] == ["Org/Small"]
        assert [x.id for x in api.list_datasets()] == ["Org/Data"]


def test_transformers_loads_config_through_hf_endpoint(mirror: Mirror, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home, mirror.url, {"HF_HUB_CACHE": str(home / "hub")})
    code = ("from transformers import AutoConfig; c = AutoConfig.from_pretrained('Org/Small'); "
            "print(c.model_type, c.hidden_size)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=180, check=True)
    assert out.stdout.split()[-2:] == ["qwen2", "64"]
    assert any(r.file_path == "config.json" and r.method == "GET" for r in mirror.faults.records())


def test_large_tree_is_listed_across_pages_by_stock_client(tmp_path: Path) -> None:
    from qwenhome.mirror import FolderBackend

    files = {f"d{i % 100:03d}/sub/f{i:05d}.txt": f"{i}\n".encode() for i in range(1000)}
    make_repo(tmp_path / "repos", "Org/Many", files)
    with start_mirror(FolderBackend(tmp_path / "repos"), tree_page_size=150) as m:
        api = hf.HfApi(endpoint=m.url, token=False)
        entries = list(api.list_repo_tree("Org/Many", recursive=True))
        pages = [r for r in m.faults.records() if "/tree/" in r.path]
    assert sorted(e.path for e in entries if isinstance(e, hf.hf_api.RepoFile)) == sorted(files)
    assert sum(isinstance(e, hf.hf_api.RepoFolder) for e in entries) == 200
    assert len(pages) == 8  # 1200 entries, 150 per page, followed through Link headers
