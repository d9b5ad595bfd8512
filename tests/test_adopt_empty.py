"""Another cache's snapshot whose links all lead nowhere (its blobs deleted,
or a download that never finished one) is left out with a warning that
says so; it used to be 'adopted' as a ref to nothing and reported as
'error[snapshot-not-found]: … is not in the home', exit 6."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import RunCli
from tests.support.repos import GeneratedRepo, make_repo, make_store_repo


def test_a_snapshot_with_no_file_in_the_cache_is_left_out_with_a_warning(
        run_cli: RunCli, qwen_home: Path, tmp_path: Path, small_repo: GeneratedRepo) -> None:
    cache = tmp_path / "other" / "hub"
    make_store_repo(cache, small_repo)  # Org/Small, whole
    hollow = make_repo(tmp_path / "repos", "Org/Hollow", {"a.txt": b"a", "w.bin": 5000})
    make_store_repo(cache, hollow)
    shutil.rmtree(cache / "models--Org--Hollow" / "blobs")  # every link of its snapshot dangles
    res = run_cli(["adopt", str(cache)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "snapshot-not-found" not in res.stdout + res.stderr
    assert "Org--Hollow" in res.stderr and "none of its files" in res.stderr, res.stderr
    assert not (qwen_home / "hub" / "models--Org--Hollow").exists()
    assert run_cli(["path", "Org/Small"]).returncode == 0
