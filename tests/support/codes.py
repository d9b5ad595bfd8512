"""Find, with ``ast``, the error codes ``src/`` can raise and the codes and exit
codes the tests assert, for ``tests/test_error_codes.py``.

Raisable: a ``code = "..."`` attribute of a ``QwenhomeError`` subclass that is
instantiated (or raised) somewhere without a ``code=`` argument; every
constant ``code="..."`` argument; every ``error[...]`` in a string constant.
Asserted: inside an ``assert`` statement, a code compared (``==``, ``in``) with
an expression that names a code (``.code``, ``["code"]``, ``code``), a
``{"code": ...}`` literal, or ``error[code]`` / ``"code": "code"`` in a string;
or a ``parametrize`` value of a name compared that way. A comment or a mere
mention does not count.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ERROR_ROOT = "QwenhomeError"
ERROR_TAG = re.compile(r"error\[([a-z0-9]+(?:-[a-z0-9]+)*)\]")
CODE_SHAPE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
EXIT_NAME = re.compile(r"EXIT_[A-Z_]+")


@dataclass
class Raisable:
    codes: dict[str, list[str]] = field(default_factory=dict)  # code -> "file:line" where raised
    exits: dict[str, int] = field(default_factory=dict)  # EXIT_NAME -> value

    def add(self, code: str, where: str) -> None:
        self.codes.setdefault(code, []).append(where)


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def raisable(src: Path) -> Raisable:
    """Every error code and documented exit code under ``src`` (the package folder)."""
    trees = {p: ast.parse(p.read_text(), str(p)) for p in sorted(src.rglob("*.py"))}
    out = Raisable()
    bases: dict[str, list[str]] = {}
    own_code: dict[str, tuple[str, str]] = {}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
                for stmt in node.body:
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else (
                        [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
                    code = _str(getattr(stmt, "value", None))
                    if code and any(isinstance(t, ast.Name) and t.id == "code" for t in targets):
                        own_code[node.name] = (code, f"{path.name}:{stmt.lineno}")
            if path.name == "errors.py" and isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for t in node.targets:
                    if isinstance(t, ast.Name) and EXIT_NAME.fullmatch(t.id) and isinstance(node.value.value, int):
                        out.exits[t.id] = node.value.value

    def is_error(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == ERROR_ROOT:
            return True
        return name not in seen and any(is_error(b, seen | {name}) for b in bases.get(name, []))

    errors = {name: code for name, code in own_code.items() if is_error(name)}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            where = f"{path.relative_to(src.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                explicit = [k for k in node.keywords if k.arg == "code"]
                for k in explicit:
                    if (code := _str(k.value)) is not None:
                        out.add(code, where)
                name = _call_name(node)
                if name in errors and not explicit:
                    out.add(errors[name][0], where)
            elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Name) and node.exc.id in errors:
                out.add(errors[node.exc.id][0], where)
            elif (text := _str(node)) is not None:
                for code in ERROR_TAG.findall(text):
                    out.add(code, where)
    return out


@dataclass
class Asserted:
    codes: dict[str, list[str]] = field(default_factory=dict)  # code -> "file:line" of the assert
    exits: dict[int, list[str]] = field(default_factory=dict)

    def merge(self, other: Asserted) -> None:
        for code, where in other.codes.items():
            self.codes.setdefault(code, []).extend(where)
        for value, where in other.exits.items():
            self.exits.setdefault(value, []).extend(where)


def _names_a_code(node: ast.AST) -> bool:
    return not isinstance(node, ast.Constant) and "code" in ast.unparse(node)


def _names_a_status(node: ast.AST) -> bool:
    """``proc.returncode``, ``rc``, ``exc.exit_code``, ``proc.wait(...)``..."""
    if isinstance(node, ast.Name):
        return node.id in ("rc", "returncode", "exit_code", "status")
    if isinstance(node, ast.Attribute):
        return node.attr in ("returncode", "exit_code")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr in ("wait", "poll")
    return False


def _constants(node: ast.AST) -> Iterator[object]:
    if isinstance(node, ast.Constant):
        yield node.value
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for elt in node.elts:
            yield from _constants(elt)


def _pairs(cmp: ast.Compare) -> Iterator[tuple[ast.AST, ast.AST]]:
    """Operand pairs of a comparison; tuples compared with tuples pair up elementwise."""
    operands = [cmp.left, *cmp.comparators]
    for (a, b), op in zip(itertools.pairwise(operands), cmp.ops, strict=True):
        if not isinstance(op, (ast.Eq, ast.In, ast.Is)):
            continue
        if isinstance(a, ast.Tuple) and isinstance(b, ast.Tuple) and len(a.elts) == len(b.elts):
            yield from zip(a.elts, b.elts, strict=True)
        else:
            yield a, b


def _parametrized(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, set[str]]:
    """``{name: string values}`` from ``@pytest.mark.parametrize("a,b", [...])``."""
    out: dict[str, set[str]] = {}
    for dec in fn.decorator_list:
        if not (isinstance(dec, ast.Call) and _call_name(dec) == "parametrize" and len(dec.args) >= 2):
            continue
        first = dec.args[0]
        if (names := _str(first)) is not None:
            columns = [n.strip() for n in names.split(",")]
        elif isinstance(first, (ast.Tuple, ast.List)) and all(_str(e) is not None for e in first.elts):
            columns = [str(_str(e)) for e in first.elts]
        else:
            continue
        for i, name in enumerate(columns):
            values = out.setdefault(name, set())
            for row in getattr(dec.args[1], "elts", []):
                cell = row.elts[i] if len(columns) > 1 and isinstance(row, (ast.Tuple, ast.List)) \
                    and i < len(row.elts) else row
                if (text := _str(cell)) is not None:
                    values.add(text)
    return out


def asserted_in(tree: ast.AST, where: str, codes: Iterable[str], exits: dict[str, int]) -> Asserted:
    """The codes and exit codes (of ``exits``: name -> value) that the asserts in ``tree`` check."""
    wanted = set(codes)
    out = Asserted()

    helper_hits: set[str] = set()  # "@function:parameter" markers an assert checked as a code

    def hit(code: object, node: ast.AST) -> None:
        if isinstance(code, str) and code.startswith("@"):
            helper_hits.add(code)
        elif isinstance(code, str) and code in wanted:
            out.codes.setdefault(code, []).append(f"{where}:{getattr(node, 'lineno', 0)}")

    def exit_hit(side: ast.AST, node: ast.AST) -> None:
        values: list[object] = list(_constants(side))
        if isinstance(side, (ast.Name, ast.Attribute)):
            values.append(exits.get(side.id if isinstance(side, ast.Name) else side.attr))
        for value in values:
            if isinstance(value, int) and not isinstance(value, bool) and value in exits.values():
                out.exits.setdefault(value, []).append(f"{where}:{getattr(node, 'lineno', 0)}")

    def check(expr: ast.AST, params: dict[str, set[str]]) -> None:
        for node in ast.walk(expr):
            if (text := _str(node)) is not None:
                for code in ERROR_TAG.findall(text):
                    hit(code, node)
                for code in re.findall(r"""["']code["']\s*:\s*["']([a-z0-9-]+)["']""", text):
                    hit(code, node)
            elif isinstance(node, ast.JoinedStr):
                # f"error[{code}]" with ``code`` parametrized
                parts = node.values
                for before, value, after in zip(parts, parts[1:], parts[2:], strict=False):
                    if (_str(before) or "").endswith("error[") and (_str(after) or "").startswith("]") \
                            and isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
                        for code in params.get(value.value.id, ()):
                            hit(code, node)
            elif isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    if k is not None and _str(k) == "code":
                        hit(_str(v), node)
            elif isinstance(node, ast.Compare):
                for a, b in _pairs(node):
                    for side, other in ((a, b), (b, a)):
                        if _names_a_code(other):
                            for value in _constants(side):
                                hit(value, node)
                            if isinstance(side, ast.Name):
                                for value in params.get(side.id, ()):
                                    hit(value, node)
                        if _names_a_status(other):
                            exit_hit(side, node)

    def visit(node: ast.AST, params: dict[str, set[str]]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = {**params, **_parametrized(node)}
        if isinstance(node, ast.Assert):
            check(node.test, params)
        for child in ast.iter_child_nodes(node):
            visit(child, params)

    # A helper such as ``check(rc, err, code)`` that asserts its parameter as a
    # code: first find which parameters its asserts check, then count the
    # constant arguments of every call to it.
    helpers: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("test"):
            names = [a.arg for a in node.args.args]
            helpers[node.name] = names
            visit(node, {name: {f"@{node.name}:{name}"} for name in names})
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (name := _call_name(node)) in helpers:
            params = helpers[name]
            given = [(params[i], a) for i, a in enumerate(node.args) if i < len(params)]
            given += [(k.arg, k.value) for k in node.keywords if k.arg]
            for param, arg in given:
                if f"@{name}:{param}" in helper_hits:
                    hit(_str(arg), node)
    visit(tree, {})
    return out


def asserted(tests: Path, codes: Iterable[str], exits: dict[str, int]) -> Asserted:
    """What every test file under ``tests`` asserts."""
    total = Asserted()
    codes = list(codes)
    for path in sorted(tests.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        total.merge(asserted_in(tree, str(path.relative_to(tests.parent)), codes, exits))
    return total
