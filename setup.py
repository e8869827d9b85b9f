"""Build of the native core, engine._core (Cython + the C sources in engine/native/)."""

import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE = sorted(glob.glob(os.path.join("engine", "native", "**", "*.c"), recursive=True))
# What the extension is rebuilt for besides its sources: the C headers, the Cython
# includes and declarations (engine/_core*.pxi, engine/_core.pxd, engine/includes/).
DEPENDS = sorted(
    glob.glob(os.path.join("engine", "native", "**", "*.h"), recursive=True)
    + glob.glob(os.path.join("engine", "_core*.pxi"))
    + glob.glob(os.path.join("engine", "_core.pxd"))
    + glob.glob(os.path.join("engine", "includes", "*.pxd"))
)

# ESSC_SANITIZE=1: the ASan + UBSan build of scripts/test-asan.sh (-O1 comes after -O3, so wins).
SANITIZE = (
    [
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=undefined",
        "-fno-omit-frame-pointer",
        "-g",
        "-O1",
    ]
    if os.environ.get("ESSC_SANITIZE") == "1"
    else []
)

core = Extension(
    "engine._core",
    sources=[os.path.join("engine", "_core.pyx"), *NATIVE],
    depends=DEPENDS,
    include_dirs=[numpy.get_include(), "engine"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=[
        "-O3",
        "-std=gnu11",
        "-fno-strict-aliasing",
        "-Wall",
        "-Wno-unused-function",
        *SANITIZE,
    ],
    extra_link_args=SANITIZE,
    libraries=["dl", "pthread"],
)


class BuildExt(build_ext):
    """The in-place build (make build, the sanitizer and fuzzing builds) as configured,
    with the debug information Python's own CFLAGS ask for (-g).  Every other build is
    for a wheel or an install: compiled with -g0 and linked with --strip-debug (no
    .debug_* sections; the symbol table stays, so perf and gdb still name functions),
    and always compiled afresh, so that an extension built in place in build/ with
    debug information is never reused for it."""

    def run(self) -> None:
        if not self.inplace and not SANITIZE:
            self.force = True
            for ext in self.extensions:
                ext.extra_compile_args = [*ext.extra_compile_args, "-g0"]
                ext.extra_link_args = [*ext.extra_link_args, "-Wl,--strip-debug"]
        super().run()


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=cythonize(
        [core],
        compiler_directives={"language_level": "3"},
        annotate=False,
    ),
)
