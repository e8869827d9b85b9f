# libsodium binding: resolve the function table once, at import.

import ctypes.util

from engine.includes.parallel cimport esc_cpu_count, esc_parallel_cpu_ns
from engine.includes.sodium_api cimport esc_sodium, esc_sodium_load


def _sodium_candidates():
    """Shared objects that may provide libsodium, most preferred first."""
    try:
        import nacl._sodium as bundled
    except ImportError:
        pass
    else:
        yield bundled.__file__
    found = ctypes.util.find_library("sodium")
    if found:
        yield found
    yield "libsodium.so.26"
    yield "libsodium.so.23"
    yield "libsodium.dylib"


def _load_sodium():
    cdef char err[512]
    failures = []
    for path in _sodium_candidates():
        if esc_sodium_load(os.fsencode(path), err, sizeof(err)) == 0:
            return path
        failures.append(err.decode("utf-8", "replace"))
    raise ImportError(
        "engine._core needs libsodium: install PyNaCl (pip install pynacl), whose "
        "extension module bundles it, or a system libsodium. Tried: "
        + "; ".join(failures)
    )


SODIUM_PATH = _load_sodium()


def sodium_version():
    """Version of the libsodium the core calls, where the library exports it."""
    if esc_sodium.sodium_version_string == NULL:
        try:
            import nacl
        except ImportError:
            return "unknown"
        return f"bundled with PyNaCl {nacl.__version__}"
    return esc_sodium.sodium_version_string().decode()


def cpu_count():
    """Online CPUs, the default thread count for batch calls."""
    return esc_cpu_count()


def native_cpu_seconds():
    """CPU seconds, all threads together, spent in the core's batch work (signatures)."""
    return esc_parallel_cpu_ns() / 1e9
