"""Build of the native core, engine._core (Cython + the C sources in engine/native/)."""

import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

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

setup(
    ext_modules=cythonize(
        [core],
        compiler_directives={"language_level": "3"},
        annotate=False,
    ),
)
