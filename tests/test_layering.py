"""The layering of engine/ holds: every import points down a floor (or sideways inside
one package, without cycles), and the serving path never loads the tools or the
command line.  The floors are the package docstrings' (engine/__init__.py)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"

# Lower floors first; a module may import from a lower floor, or from its own package.
FLOORS = [
    {"engine.errors", "engine.verdicts", "engine._core", "engine._version"},
    {"engine.formats"},
    {"engine.revocation", "engine.wire", "engine.sigverify", "engine.replay"},
    {"engine.verifier", "engine.redis_replay"},
    {"engine.server", "engine.tools"},
    {"engine.cli"},
    {"engine.__main__"},
]


def _unit(module: str) -> str:
    """The floor unit of a module: its package under engine/, or itself at the root."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _floor(module: str) -> int:
    unit = _unit(module)
    for level, units in enumerate(FLOORS):
        if unit in units:
            return level
    raise AssertionError(f"{module}: not on any floor of tests/test_layering.py")


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in ENGINE.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: pathlib.Path, module: str) -> set[str]:
    """Every engine module this file imports, at any depth (function-local included)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    modules = _modules()
    return {m for m in found if m in modules or m == "engine._core"} - {"engine"}


def test_every_engine_module_is_on_a_floor():
    for module in _modules():
        if module != "engine":
            _floor(module)


def test_imports_point_down_or_stay_inside_their_package():
    wrong = []
    for module, path in _modules().items():
        if module == "engine":
            continue  # the package's face re-exports the library API (checked below)
        for target in _imports(path, module):
            unit = _unit(module)
            same_package = _unit(target) == unit and (ENGINE / unit.split(".")[1]).is_dir()
            if not same_package and _floor(target) >= _floor(module):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports that do not point down a floor:\n" + "\n".join(sorted(wrong))


def test_the_library_face_exports_only_run_time_code():
    targets = _imports(ENGINE / "__init__.py", "engine")
    assert targets and all(_floor(t) <= _floor("engine.verifier") for t in targets), targets


def test_no_import_cycles_inside_a_package():
    graph = {m: _imports(p, m) for m, p in _modules().items() if m != "engine"}

    def visit(node, trail):
        if node in trail:
            raise AssertionError("import cycle: " + " -> ".join([*trail, node]))
        for nxt in graph.get(node, ()):
            if _unit(nxt) == _unit(node):
                visit(nxt, [*trail, node])

    for module in graph:
        visit(module, [])


def test_the_serving_path_never_loads_tools_or_the_command_line():
    """Checked in a fresh interpreter, so lazy imports count too."""
    code = (
        "import sys, engine.server.server, engine.verifier, engine.wire.client; "
        "print(sorted(m for m in sys.modules if m.startswith(('engine.tools', 'engine.cli'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert out == "[]", out


def test_engine_never_imports_the_load_generator_or_the_benchmarks():
    for module, path in _modules().items():
        text = ast.parse(path.read_text())
        for node in ast.walk(text):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("loadgen", "bench") for n in names), module
