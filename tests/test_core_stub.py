"""engine/_core.pyi against the built engine._core, so that the stub cannot drift: it
declares every name of the module and nothing else, every method of the core's
classes, and each function and method with the parameters the module has."""

from __future__ import annotations

import ast
import inspect
import pathlib
import types

import pytest

from engine import _core

STUB = pathlib.Path(_core.__file__).with_name("_core.pyi")
TREE = ast.parse(STUB.read_text())


def declared(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    """The names a stub body declares: functions, classes, variables and explicit
    re-exports (``from m import X as X``); type aliases are the stub's own."""
    out: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if not (isinstance(node.annotation, ast.Name) and node.annotation.id == "TypeAlias"):
                out[node.target.id] = node
        elif isinstance(node, ast.Assign):
            out.update((t.id, node) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            out.update((a.name, node) for a in node.names if a.asname == a.name)
    return out


STUB_NAMES = declared(TREE.body)


def module_names() -> set[str]:
    """The module's names, less the dunders Cython adds and the modules it imports."""
    return {
        name
        for name in dir(_core)
        if not name.startswith("__") and not isinstance(getattr(_core, name), types.ModuleType)
    }


def test_the_stub_declares_exactly_the_module_names():
    names = module_names()
    assert sorted(names - STUB_NAMES.keys()) == [], "in engine._core but not in _core.pyi"
    assert sorted(STUB_NAMES.keys() - names) == [], "in _core.pyi but not in engine._core"


def stub_params(fn: ast.FunctionDef) -> list[tuple[str, str, bool]]:
    """(name, kind, has a default) of each parameter, as inspect names the kinds."""
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    defaults = [False] * (len(positional) - len(a.defaults)) + [True] * len(a.defaults)
    out = [
        (p.arg, "POSITIONAL_ONLY" if k < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD", d)
        for k, (p, d) in enumerate(zip(positional, defaults))
    ]
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", False))
    out += [(p.arg, "KEYWORD_ONLY", d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", False))
    return out


def runtime_params(fn) -> list[tuple[str, str, bool]]:
    return [
        (p.name, p.kind.name, p.default is not inspect.Parameter.empty)
        for p in inspect.signature(fn).parameters.values()
    ]


def is_property(fn: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list)


FUNCTIONS = sorted(
    name
    for name, node in STUB_NAMES.items()
    if isinstance(node, ast.FunctionDef) and name in module_names()
)
CLASSES = sorted(
    name
    for name, node in STUB_NAMES.items()
    if isinstance(node, ast.ClassDef)
    and getattr(_core, name, None) is not None
    and getattr(_core, name).__module__ == "engine._core"
    and name != "PresentationFields"  # a namedtuple: its fields are checked below
)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_take_the_declared_parameters(name):
    assert runtime_params(getattr(_core, name)) == stub_params(STUB_NAMES[name])


@pytest.mark.parametrize("name", CLASSES)
def test_classes_have_the_declared_methods(name):
    """Every method and attribute of the class's own (not inherited, not dunder) is
    declared, with the parameters it has; properties stand for C attributes."""
    cls = getattr(_core, name)
    node = STUB_NAMES[name]
    assert isinstance(node, ast.ClassDef)
    stub = {
        fn.name: fn
        for fn in node.body
        if isinstance(fn, ast.FunctionDef) and not fn.name.startswith("__")
    }
    own = {m for m in vars(cls) if not m.startswith("__")}
    assert sorted(own ^ stub.keys()) == [], f"{name}: members differ"
    for member, fn in stub.items():
        value = getattr(cls, member)
        if is_property(fn):
            assert not callable(value), f"{name}.{member} is a method, not an attribute"
        else:
            assert runtime_params(value) == stub_params(fn), f"{name}.{member}"


def test_presentation_fields_match():
    node = STUB_NAMES["PresentationFields"]
    assert isinstance(node, ast.ClassDef)
    fields = [s.target.id for s in node.body if isinstance(s, ast.AnnAssign)]
    assert list(_core.PresentationFields._fields) == fields
    assert issubclass(_core.PresentationFields, tuple)
