"""The code's shape, held by tests: every step kind has a handler, layers do
not reach into each other's private names, front ends do not import each
other, and modules stay small."""

from __future__ import annotations

import ast
import importlib
import pathlib
import pkgutil

import pytest

import vifwire
from vifwire.executors import registry
from vifwire.planner.plan import StepKind

SRC = pathlib.Path(vifwire.__file__).parent
#: Underscore names that are public API of the standard library or a dependency.
STDLIB_PRIVATES = {"_exit", "_getframe", "_asdict", "_replace", "_fields", "_make", "_field_defaults",
                   "_value_", "_name_", "_missing_", "_generate_next_value_"}


def _modules() -> list[pathlib.Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def test_every_step_kind_has_one_handler_that_resolves():
    assert set(registry.HANDLER_CLASSES) == set(StepKind)
    for kind in StepKind:
        h = registry.handler(kind)
        for verb in ("apply", "remove", "verify"):
            assert callable(getattr(h, verb, None)), f"{kind}: handler has no {verb}"
    for name in registry.GC_MODULES:
        mod = registry.gc_module(name)
        assert callable(mod.garbage) and callable(mod.remove_garbage), name


def test_a_missing_handler_is_caught(monkeypatch):
    """The check above can fail: drop one entry and the registry's invariant breaks."""
    broken = dict(registry.HANDLER_CLASSES)
    broken.pop(StepKind.TAP)
    assert set(broken) != set(StepKind)
    monkeypatch.setitem(registry.HANDLER_CLASSES, StepKind.ROUTES, ("vifwire.executors.kernel.l3", "NoSuchHandler"))
    monkeypatch.delitem(registry._handlers, StepKind.ROUTES, raising=False)
    with pytest.raises(AttributeError):
        registry.handler(StepKind.ROUTES)


def test_unknown_step_kind_is_an_error():
    from vifwire.errors import HostError

    with pytest.raises(HostError, match="no executor knows this step"):
        registry.handler("teleport")


def test_every_module_imports():
    for info in pkgutil.walk_packages([str(SRC)], prefix="vifwire."):
        importlib.import_module(info.name)


def _own_names(tree: ast.Module) -> set[str]:
    """Every name a module defines itself (functions, classes, attributes, assignments)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
    return out


def private_uses(path: pathlib.Path) -> list[str]:
    """Uses of a private name this module does not define: imported from
    another module, or read as an attribute of another module's object."""
    tree = ast.parse(path.read_text(), str(path))
    own = _own_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.name}:{node.lineno}: imports {node.module}.{alias.name}")
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in STDLIB_PRIVATES:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if name not in own:
                found.append(f"{path.name}:{node.lineno}: uses .{name} of another module")
    return found


def test_no_cross_module_private_names():
    problems = [p for m in _modules() for p in private_uses(m)]
    assert problems == []


def test_the_private_name_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from vifwire.executors.nft import _load\nimport os\nx = os.path._joinrealpath\n")
    assert len(private_uses(bad)) == 2


FRONT_ENDS = ("cli", "agent", "cni", "fleet")


def test_front_ends_do_not_import_each_other():
    problems = []
    for m in _modules():
        rel = m.relative_to(SRC).parts
        if rel[0] not in FRONT_ENDS:
            continue
        tree = ast.parse(m.read_text())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for mod in mods:
                parts = mod.split(".")
                if parts[0] == "vifwire" and len(parts) > 1 and parts[1] in FRONT_ENDS and parts[1] != rel[0]:
                    problems.append(f"{'/'.join(rel)} imports {mod}")
    assert problems == []


def test_lower_layers_do_not_import_front_ends_or_the_service():
    problems = []
    for m in _modules():
        rel = m.relative_to(SRC).parts
        if rel[0] in FRONT_ENDS + ("service", "sandbox") or len(rel) == 1:
            continue
        for node in ast.walk(ast.parse(m.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if len(parts) > 1 and parts[1] in FRONT_ENDS + ("service",):
                    problems.append(f"{'/'.join(rel)} imports {node.module}")
    assert problems == []


def test_modules_stay_small():
    big = {str(m.relative_to(SRC)): n for m in _modules() if (n := len(m.read_text().splitlines())) > 650}
    assert big == {}, big
