"""The shape of the package, read from its source with ast: no import cycle,
each layer importing only what lies below it, and the store alone spelling
its on-disk layout (docs/architecture.md, "Layers").

Every import counts: at module level, inside functions (a lazy import is
still a dependency) and under ``TYPE_CHECKING``. Known exceptions are listed
below with the work that removes them; an entry that no longer applies fails
too, so the lists only shrink.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import qwenhome

PACKAGE = Path(qwenhome.__file__).parent

# Import cycles that exist today, each as the set of modules in it: none
# since the transfer core was split into parts; the list may only shrink.
KNOWN_CYCLES: list[frozenset[str]] = []

# Package -> packages of qwenhome it must never import (directly or lazily).
FORBIDDEN: dict[str, set[str]] = {
    # The bottom layer: what a repository is. Only errors lie below it.
    "repo": {"config", "progress", "store", "hub", "transfer", "sources", "pull", "mirror", "doctor", "app",
             "images", "demo", "cli", "termui", "envexport"},
    # The Xet format (chunking, hashes, xorbs, reconstructions): pure, beside repo. Only errors lie below it.
    "xet": {"config", "progress", "repo", "store", "hub", "transfer", "sources", "pull", "mirror", "doctor", "app",
            "images", "demo", "cli", "termui", "envexport"},
    # The store: the home on disk, whoever fills it.
    "store": {"hub", "transfer", "sources", "pull", "mirror", "doctor", "app", "images", "demo", "cli", "termui"},
    # The sources' protocols: what is asked, not where it goes.
    "hub": {"store", "transfer", "pull", "mirror", "doctor", "app", "images", "demo", "cli"},
    "transfer": {"hub", "sources", "pull", "mirror", "doctor", "app", "images", "demo", "cli"},
    # The transport: bytes to and from an origin, nothing about what they mean.
    "net": {"repo", "store", "hub", "transfer", "sources", "pull", "mirror", "doctor", "app", "images", "demo",
            "cli", "progress"},
}

# Imports that break FORBIDDEN, as (importing module, imported module): none
# since the transport moved to qwenhome.net; the set may only shrink.
KNOWN_FORBIDDEN: set[tuple[str, str]] = set()


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _modules(root: Path) -> dict[str, tuple[Path, ast.Module]]:
    """Every module of the package under ``root``: its file and its parsed source."""
    return {_module_name(p, root): (p, ast.parse(p.read_text(encoding="utf-8")))
            for p in sorted(root.rglob("*.py"))}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (``from pkg import sub``
    counts as importing ``pkg.sub`` when that is a module)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, (path, tree) in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if sub in modules else target)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def forbidden_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(m, d) for m, deps in graph.items() for d in deps
            if _package_of(d) in FORBIDDEN.get(_package_of(m), set())}


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "qwenhome"


def test_graph_sees_every_kind_of_import_and_its_cycles(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "qwenhome/__init__.py": "",
        "qwenhome/a.py": "from . import b\nimport os\n",
        "qwenhome/b.py": "def f():\n    from .sub.c import x\n",
        "qwenhome/sub/__init__.py": "from .c import x\n",
        "qwenhome/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import y\nx = 1\n",
        "qwenhome/d.py": "import qwenhome.sub\n",
    })
    graph = import_graph(pkg)
    assert graph == {
        "qwenhome": set(),
        "qwenhome.a": {"qwenhome.b"},  # from . import <module>
        "qwenhome.b": {"qwenhome.sub.c"},  # inside a function
        "qwenhome.sub": {"qwenhome.sub.c"},
        "qwenhome.sub.c": {"qwenhome.a"},  # under TYPE_CHECKING
        "qwenhome.d": {"qwenhome.sub"},
    }
    assert cycles(graph) == [frozenset({"qwenhome.a", "qwenhome.b", "qwenhome.sub.c"})]


def test_no_import_cycle_but_the_known_ones() -> None:
    found = cycles(import_graph())
    unknown = [sorted(c) for c in found if not any(c <= known for known in KNOWN_CYCLES)]
    assert not unknown, f"import cycles: {unknown}"
    gone = [sorted(k) for k in KNOWN_CYCLES if not any(c <= k and len(c) > 1 for c in found)]
    assert not gone, f"no longer a cycle, remove it from KNOWN_CYCLES: {gone}"


def test_layers_import_only_what_lies_below() -> None:
    found = forbidden_imports(import_graph())
    assert found - KNOWN_FORBIDDEN == set(), "imports across layers (see FORBIDDEN)"
    assert KNOWN_FORBIDDEN - found == set(), "no longer imported: remove from KNOWN_FORBIDDEN"


def test_store_imports_nothing_from_hub_or_transfer() -> None:
    graph = import_graph()
    store = {m: deps for m, deps in graph.items() if m.startswith("qwenhome.store")}
    assert store, "the store's modules were found"
    wrong = {(m, d) for m, deps in store.items() for d in deps if _package_of(d) in ("hub", "transfer")}
    assert wrong == set()


# -- the layout ------------------------------------------------------------------------------
_FOLDER_NAME = re.compile(r"(models|datasets|spaces)--")
_LAYOUT_PART = re.compile(r"(^|/)(blobs|snapshots|refs)(/|$)")
_PARTS = {"blobs", "snapshots", "refs"}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _joins_paths(parent: ast.AST | None) -> bool:
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div):
        return True
    if isinstance(parent, ast.Call):
        func = parent.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return name in ("join", "joinpath", "Path", "PurePath", "PurePosixPath")
    return False


def layout_spellings(root: Path = PACKAGE) -> Iterator[str]:
    """``file:line: text`` of every string outside store/ that names a hub-cache
    folder (``models--...``) or joins a path through blobs, snapshots or refs."""
    for name, (path, tree) in _modules(root).items():
        if name == "qwenhome.store" or name.startswith("qwenhome.store."):
            continue
        docs = _docstrings(tree)
        parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docs:
                continue
            text = node.value
            if (_FOLDER_NAME.search(text) or ("/" in text and _LAYOUT_PART.search(text))
                    or (text in _PARTS and _joins_paths(parents.get(id(node))))):
                yield f"{path.relative_to(root.parent)}:{node.lineno}: {text!r}"


def test_only_the_store_spells_its_layout() -> None:
    found = list(layout_spellings())
    assert not found, "ask qwenhome.store (HubCache / Store) instead:\n" + "\n".join(found)


def test_the_layout_check_sees_a_hand_made_path(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "qwenhome/__init__.py": "",
        "qwenhome/store/__init__.py": 'BLOBS = "blobs"\nX = "models--"\n',  # the store may
        "qwenhome/a.py": ('"""Docs may say models--Org--Name/blobs/."""\n'
                          "def f(root, name):\n"
                          '    return root / name / "blobs"\n'),
        "qwenhome/b.py": ('import os\nX = os.path.join("r", "snapshots")\nY = f"models--{1}"\n'
                          'Z = "x/refs/main"\nOK = dict(blobs="true"), route.flag("blobs"), "?blobs=true"\n'),
    })
    found = sorted(line.split(": ", 1)[0] for line in layout_spellings(pkg))
    assert found == ["qwenhome/a.py:3", "qwenhome/b.py:2", "qwenhome/b.py:3", "qwenhome/b.py:4"]
