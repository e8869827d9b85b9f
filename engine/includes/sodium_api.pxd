# libsodium's function table, resolved at import (engine/native/sodium_api.h).

cdef extern from "native/sodium_api.h":
    ctypedef struct esc_sodium_api:
        const char *(*sodium_version_string)()
    esc_sodium_api esc_sodium
    int esc_sodium_load(const char *path, char *err, size_t errlen)
    int esc_sodium_loaded()
