"""Shared fixtures. Sections: isolation, repositories, mirrors, home and CLI.

Everything real: generated files on disk, mirror servers on 127.0.0.1 (free
ports), the CLI as a subprocess. Add new fixtures to the matching section.

The whole session runs with HOME and every cache variable in a temporary
folder, and a test that writes outside the temp folders or changes the real
home's caches fails (``tests/support/isolation.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from qwenhome.mirror import FolderBackend, HashCache, StoreBackend
from tests.support.cli import CliResult, RunCli
from tests.support.cli import run_cli as _run_cli
from tests.support.mirror import Mirror, start_mirror
from tests.support.repos import GeneratedRepo, MiB, make_repo, make_store_repo

if TYPE_CHECKING:
    from tests.support.isolation import Isolation

# Registered here so that its pytest_configure runs before any test module is
# imported (huggingface_hub and transformers freeze their cache paths at import).
pytest_plugins = ("tests.support.isolation",)

# -- isolation ---------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def isolated_home(pytestconfig: pytest.Config) -> Isolation:
    """The session's temporary home; HOME and every cache variable point into
    ``isolated_home.root``, for this process and every subprocess."""
    isolation = pytestconfig.pluginmanager.get_plugin("tests.support.isolation")
    iso: Isolation = isolation.state()
    for name, rel in isolation.REDIRECTED.items():
        assert os.environ.get(name) == str(iso.root / rel), f"{name} left the test home"
    return iso


# -- repositories ------------------------------------------------------------------

SMALL_FILES: dict[str, int | bytes] = {
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "config.json": b'{"model_type": "qwen2", "hidden_size": 64}\n',
    "tokenizer.json": 300_000,
    "model.safetensors": 5 * MiB + 123,
    "sub/dir/notes.txt": 1000,
    "empty.txt": b"",
}


@pytest.fixture(scope="session")
def repos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of the folder backend: ``Org/Name/`` and ``datasets/Org/Name/`` folders."""
    return tmp_path_factory.mktemp("repos")


@pytest.fixture(scope="session")
def small_repo(repos_root: Path) -> GeneratedRepo:
    """``Org/Small``: text files, an empty file, a nested file and a 5 MiB LFS file."""
    return make_repo(repos_root, "Org/Small", SMALL_FILES, seed=1)


@pytest.fixture(scope="session")
def small_dataset(repos_root: Path) -> GeneratedRepo:
    return make_repo(repos_root, "Org/Data", {"data/train.jsonl": 50_000, "README.md": b"# data\n"},
                     seed=2, repo_type="dataset")


@pytest.fixture(scope="session")
def big_repo(repos_root: Path) -> GeneratedRepo:
    """``Org/Big``: one 200 MB weights file plus a config (generated once per session)."""
    return make_repo(repos_root, "Org/Big", {"model.safetensors": 200 * 1000 * 1000,
                                             "config.json": b"{}\n"}, seed=3)


@pytest.fixture(scope="session")
def hash_cache() -> HashCache:
    """Shared so each generated file is hashed once per session."""
    return HashCache()


@pytest.fixture(scope="session")
def store_root(tmp_path_factory: pytest.TempPathFactory, small_repo: GeneratedRepo,
               small_dataset: GeneratedRepo) -> Path:
    """A hub cache holding ``Org/Small`` and ``datasets/Org/Data`` as huggingface_hub lays them out."""
    hub = tmp_path_factory.mktemp("store") / "hub"
    make_store_repo(hub, small_repo, commit="a" * 40)
    make_store_repo(hub, small_dataset, commit="b" * 40)
    return hub


# -- mirrors -----------------------------------------------------------------------

@pytest.fixture
def mirror(repos_root: Path, small_repo: GeneratedRepo, small_dataset: GeneratedRepo,
           hash_cache: HashCache) -> Iterator[Mirror]:
    """A mirror over the generated repo folders; ``mirror.faults`` injects faults
    and logs requests. Fresh per test, so faults never leak between tests."""
    with start_mirror(FolderBackend(repos_root, hashes=hash_cache)) as m:
        yield m


@pytest.fixture
def store_mirror(store_root: Path) -> Iterator[Mirror]:
    """A mirror over the hub-cache store in ``store_root``."""
    with start_mirror(StoreBackend(store_root)) as m:
        yield m


# -- home and CLI --------------------------------------------------------------------

@pytest.fixture
def qwen_home(tmp_path: Path) -> Path:
    """An empty ``QWEN_HOME`` for one test."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def run_cli(qwen_home: Path) -> RunCli:
    """``run_cli(args, endpoint=None, env=None, timeout=120)`` runs ``python -m qwenhome``
    in a subprocess with ``QWEN_HOME=qwen_home`` and no inherited HF variables."""

    def run(args: Sequence[str], *, endpoint: str | None = None,
            env: Mapping[str, str] | None = None, timeout: float = 120.0,
            home: Path | None = None) -> CliResult:
        return _run_cli(args, home=home or qwen_home, endpoint=endpoint, env=env, timeout=timeout)

    return run
