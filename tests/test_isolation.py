"""The suite never touches the real home of whoever runs it: HOME and every cache
variable point into a temporary folder before the libraries read them, and a
test that writes outside the temp folders fails (``tests/support/isolation.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import diffusers.utils.constants
import huggingface_hub.constants
import transformers.utils.hub

from tests.support.isolation import REDIRECTED, Isolation

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_home_and_every_cache_variable_point_into_the_session_temp_folder(isolated_home: Isolation) -> None:
    root = str(isolated_home.root)
    for name in REDIRECTED:
        assert os.environ[name].startswith(root + os.sep), name
    assert str(Path.home()) == str(isolated_home.home)
    # The libraries froze their paths at import, after the session isolated them.
    frozen = {
        "huggingface_hub HF_HUB_CACHE": huggingface_hub.constants.HF_HUB_CACHE,
        "huggingface_hub HF_HOME": huggingface_hub.constants.HF_HOME,
        "huggingface_hub HF_XET_CACHE": huggingface_hub.constants.HF_XET_CACHE,
        "huggingface_hub HF_TOKEN_PATH": huggingface_hub.constants.HF_TOKEN_PATH,
        "transformers HF_MODULES_CACHE": transformers.utils.hub.HF_MODULES_CACHE,
        "diffusers HF_MODULES_CACHE": diffusers.utils.constants.HF_MODULES_CACHE,
    }
    outside = {k: v for k, v in frozen.items() if not v.startswith(root + os.sep)}
    assert not outside, outside
    assert not str(isolated_home.root).startswith(str(isolated_home.real_home) + os.sep)


# Run by a nested pytest whose "real home" is REAL (a folder outside its temp folders).
LEAKY_TESTS = '''
import os, subprocess, sys
from pathlib import Path

REAL = Path(os.environ["LEAK_REAL_HOME"])


def test_mkdir_in_the_real_hf_cache():
    (REAL / ".cache/huggingface/hub/models--Org--Leak/refs").mkdir(parents=True)


def test_a_swallowed_write_still_fails():
    try:
        (REAL / ".cache/huggingface/token").write_text("secret")
    except OSError:
        pass


def test_rename_out_of_the_temp_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    os.replace(tmp_path / "f", REAL / "moved-here")


def test_write_through_a_symlink_in_temp(tmp_path):
    (tmp_path / "link").symlink_to(REAL)
    with open(tmp_path / "link" / "via-link", "w") as f:
        f.write("x")


def test_subprocess_that_ignores_home():
    target = REAL / ".cache/huggingface/hub/models--Org--Sub"
    subprocess.run([sys.executable, "-c", f"import os; os.makedirs({str(target)!r})"], check=True)


def test_writes_in_temp_and_the_isolated_home_pass(tmp_path):
    (tmp_path / "ok").write_text("x")
    hub = Path.home() / ".cache/huggingface/hub/models--Org--Fine/refs"
    hub.mkdir(parents=True)
    (hub / "main").write_text("a" * 40)
    assert not str(Path.home()).startswith(str(REAL))
'''


def test_a_test_writing_to_the_real_home_fails_and_the_write_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real-home"
    (real / ".cache" / "huggingface" / "hub").mkdir(parents=True)
    tmp = tmp_path / "tmp"  # the nested run's temp folder, which does not hold `real`
    tmp.mkdir()
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent(LEAKY_TESTS))
    env = {"PATH": os.environ["PATH"], "HOME": str(real), "LEAK_REAL_HOME": str(real),
           "TMPDIR": str(tmp), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.isolation", "-p", "no:cacheprovider",
         "-rA", "-q", "test_leaky.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    states: dict[str, set[str]] = {}
    for state, name in re.findall(r"^(PASSED|FAILED|ERROR) test_leaky.py::(\w+)", out, re.MULTILINE):
        states.setdefault(name, set()).add(state)
    failed = {name for name, st in states.items() if st & {"FAILED", "ERROR"}}
    assert set(states) == {
        "test_mkdir_in_the_real_hf_cache", "test_a_swallowed_write_still_fails",
        "test_rename_out_of_the_temp_folder", "test_write_through_a_symlink_in_temp",
        "test_subprocess_that_ignores_home", "test_writes_in_temp_and_the_isolated_home_pass"}, out
    assert failed == set(states) - {"test_writes_in_temp_and_the_isolated_home_pass"}, out
    # The subprocess's change is seen once the test is over: an error at its teardown.
    assert "ERROR at teardown of test_subprocess_that_ignores_home" in out
    assert proc.returncode == 1, out
    # Writes by the test process were refused, not just reported.
    assert not (real / ".cache" / "huggingface" / "hub" / "models--Org--Leak").exists()
    assert not (real / ".cache" / "huggingface" / "token").exists()
    assert not (real / "moved-here").exists() and not (real / "via-link").exists()
    assert f"{real}/.cache/huggingface/token: a test wrote outside the temporary folders" in out
    # A subprocess cannot be stopped, but the change in the real home is named.
    assert f"created {real}/.cache/huggingface/hub/models--Org--Sub" in out
