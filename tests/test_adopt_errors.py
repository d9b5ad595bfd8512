"""``qwenhome adopt`` names what goes wrong with its code: a path that is not a
folder, ``--as`` given for several repositories, a file it may not read, a file
that changed between listing and reading. Real folders, real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qwenhome.store import Store
from qwenhome.store.adopt import adopt, discover
from tests.support.caps import CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, without_capabilities
from tests.support.cli import RunCli, clean_env
from tests.support.repos import MiB, write_file

SECRET = b"a file outside the adopted folder\n"


def store_of(home: Path) -> Store:
    return Store(home / "hub", home / "qwenhome")


def model_folder(folder: Path) -> Path:
    write_file(folder / "config.json", b'{"model_type": "qwen2"}\n')
    write_file(folder / "sub" / "model.safetensors", 2 * MiB, seed=6, relpath="sub/model.safetensors")
    return folder


def test_a_path_that_is_not_a_folder_is_adopt_not_found(run_cli: RunCli, tmp_path: Path, qwen_home: Path) -> None:
    a_file = tmp_path / "model.safetensors"
    a_file.write_bytes(b"x")
    for path in (tmp_path / "no-such-folder", a_file):
        res = run_cli(["adopt", str(path)])
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip() == (f"error[adopt-not-found]: {path} is not a folder "
                                      "(hint: give a cache or model folder)")
    assert not (qwen_home / "hub").exists(), "nothing written"


def test_as_with_several_repositories_found_is_adopt_ambiguous(
        run_cli: RunCli, store_root: Path, qwen_home: Path) -> None:
    """``store_root`` is a hub cache holding Org/Small and datasets/Org/Data:
    one name cannot be both."""
    res = run_cli(["adopt", str(store_root), "--as", "Me/One"])
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == "error[adopt-ambiguous]: --as names one repository, but several were found"
    assert not (qwen_home / "hub").exists(), "nothing written"


def test_a_file_adopt_may_not_read_is_left_out_as_adopt_unreadable(tmp_path: Path, qwen_home: Path) -> None:
    """Run without root's right to read everything (when root): the weights'
    mode is 000, so opening them is refused as it is for any other user."""
    folder = model_folder(tmp_path / "model")
    weights = folder / "sub" / "model.safetensors"
    weights.chmod(0)
    proc = subprocess.run([sys.executable, "-m", "qwenhome", "adopt", str(folder), "--as", "Me/Model"],
                          env=clean_env(qwen_home), cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          preexec_fn=without_capabilities(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH))
    assert proc.returncode == 6, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error[adopt-unreadable]: {weights}: cannot be read (Permission denied); left out"]
    assert "Me/Model" in proc.stdout
    assert not (qwen_home / "hub" / "models--Me--Model" / "snapshots").exists(), "an incomplete folder gets no snapshot"


def test_a_file_replaced_by_a_link_after_listing_is_adopt_changed(tmp_path: Path, qwen_home: Path) -> None:
    """Between listing and reading, the weights become a link to a file
    outside the folder: they are not followed, and not adopted."""
    folder = model_folder(tmp_path / "model")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(SECRET)
    [found] = discover([folder], as_repo="Me/Model")
    weights = folder / "sub" / "model.safetensors"
    weights.unlink()
    weights.symlink_to(outside)
    rep = adopt(store_of(qwen_home), found)
    assert rep.problems == [
        f"error[adopt-changed]: {weights}: changed since it was listed (Too many levels of symbolic links); left out"]
    assert (rep.files, rep.copied, rep.linked) == (2, 1, 0)
    assert not any(b.read_bytes() == SECRET for b in (qwen_home / "hub").glob("*/blobs/*"))


def test_a_folder_swapped_for_a_link_after_listing_is_adopt_changed(tmp_path: Path, qwen_home: Path) -> None:
    """The folder on the weights' path becomes a link to another folder with a
    file of the same name: opening the listed path would read that one."""
    folder = model_folder(tmp_path / "model")
    elsewhere = tmp_path / "elsewhere"
    write_file(elsewhere / "model.safetensors", SECRET)
    [found] = discover([folder], as_repo="Me/Model")
    (folder / "sub").rename(tmp_path / "sub-moved")
    (folder / "sub").symlink_to(elsewhere, target_is_directory=True)
    res = adopt(store_of(qwen_home), found).to_dict()
    assert res["problems"] == [
        f"error[adopt-changed]: {folder / 'sub' / 'model.safetensors'}: changed since it was listed; left out"]
    assert not res["ok"]
    assert not any(b.read_bytes() == SECRET for b in (qwen_home / "hub").glob("*/blobs/*"))
