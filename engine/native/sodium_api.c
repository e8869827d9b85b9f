#include "sodium_api.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

esc_sodium_api esc_sodium;
static int loaded = 0;

int esc_sodium_loaded(void) { return loaded; }

#define RESOLVE(name)                                                              \
    do {                                                                           \
        *(void **)(&api.name) = dlsym(handle, #name);                              \
        if (api.name == NULL) {                                                    \
            snprintf(err, errlen, "%s: symbol %s not found", path, #name);         \
            return -1;                                                             \
        }                                                                          \
    } while (0)

int esc_sodium_load(const char *path, char *err, size_t errlen)
{
    esc_sodium_api api;
    void *handle;

    if (loaded)
        return 0;
    /* The handle is kept for the life of the process: the table points into it. */
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        const char *why = dlerror();
        snprintf(err, errlen, "%s: %s", path, why ? why : "dlopen failed");
        return -1;
    }
    memset(&api, 0, sizeof api);
    RESOLVE(sodium_init);
    /* Optional: PyNaCl's bundled copy does not export it. */
    *(void **)(&api.sodium_version_string) = dlsym(handle, "sodium_version_string");
    RESOLVE(randombytes_buf);
    RESOLVE(crypto_sign_verify_detached);
    RESOLVE(crypto_sign_detached);
    RESOLVE(crypto_sign_seed_keypair);
    RESOLVE(crypto_hash_sha512);
    RESOLVE(crypto_hash_sha512_init);
    RESOLVE(crypto_hash_sha512_update);
    RESOLVE(crypto_hash_sha512_final);
    RESOLVE(crypto_core_ed25519_is_valid_point);
    RESOLVE(crypto_core_ed25519_add);
    RESOLVE(crypto_core_ed25519_sub);
    RESOLVE(crypto_core_ed25519_scalar_reduce);
    RESOLVE(crypto_scalarmult_ed25519_noclamp);
    RESOLVE(crypto_scalarmult_ed25519_base_noclamp);
    /* sodium_init() returns 1 when PyNaCl already initialised it: not an error. */
    if (api.sodium_init() < 0) {
        snprintf(err, errlen, "%s: sodium_init() failed", path);
        return -1;
    }
    esc_sodium = api;
    loaded = 1;
    return 0;
}
