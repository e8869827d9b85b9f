"""Shared set-up of the atheris harnesses (docs/TESTING.md, "Fuzzing").

``load_core()`` must run before anything imports ``engine``: when ESSC_FUZZ_CORE names
a build of the native core instrumented for coverage (and ASan), made by fuzz/run.sh,
that build is installed as ``engine._core``; otherwise the regular in-place build is
used (coverage of the Python code only).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Finding(AssertionError):
    """A disagreement between a native parser and its reference."""


def load_core():
    """The engine's native core, the instrumented build when there is one."""
    path = os.environ.get("ESSC_FUZZ_CORE")
    if path and "engine._core" not in sys.modules:
        import engine

        loader = importlib.machinery.ExtensionFileLoader("engine._core", path)
        spec = importlib.util.spec_from_file_location("engine._core", path, loader=loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules["engine._core"] = module
        spec.loader.exec_module(module)
        engine._core = module
    from engine import _core

    return _core


def check(cond: bool, what: str, data: bytes) -> None:
    if not cond:
        raise Finding(f"{what} (input, first 256 bytes: {data[:256].hex()})")


def fuzz(test_one, **options) -> None:
    """Hands test_one(bytes) to atheris (libFuzzer's options come from sys.argv)."""
    import atheris

    atheris.Setup(sys.argv, test_one, **options)
    atheris.Fuzz()
