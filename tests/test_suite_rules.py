"""Rules the test suite keeps so that green means tested: a mandatory dev
dependency is imported, never skipped when missing (a broken install must
fail, not turn into green skips)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# The dev extra in pyproject.toml: tests may rely on these being importable.
MANDATORY = ("huggingface_hub", "transformers", "diffusers", "PIL", "hf_transfer", "playwright",
             "openai", "torch", "fastapi", "httpx", "trustme", "dns", "hypothesis")


def importorskips(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of each ``pytest.importorskip("module...")`` call."""
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "importorskip" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.lineno, node.args[0].value))
    return out


def test_importorskips_finds_calls_not_mentions() -> None:
    tree = ast.parse('import pytest\n# pytest.importorskip("torch")\nx = "pytest.importorskip(\'PIL\')"\n'
                     'hf = pytest.importorskip("huggingface_hub.utils")\n')
    assert importorskips(tree) == [(4, "huggingface_hub.utils")]


def test_no_test_skips_when_a_mandatory_dev_dependency_is_missing() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for line, module in importorskips(ast.parse(path.read_text(), str(path))):
            if module.split(".")[0] in MANDATORY:
                offenders.append(f"{path.relative_to(TESTS.parent)}:{line}: importorskip({module!r})")
    assert not offenders, ("import mandatory dev dependencies plainly (skip only for system facilities "
                           "that may be absent):\n" + "\n".join(offenders))
