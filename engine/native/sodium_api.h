/* libsodium, resolved at run time.
 *
 * The engine uses the libsodium that PyNaCl bundles (its extension module exports
 * the whole libsodium API as dynamic symbols), so a plain `pip install` needs no
 * system package.  The functions are looked up once, at import, and called through
 * this table from code that runs without the GIL.
 */
#ifndef ESC_SODIUM_API_H
#define ESC_SODIUM_API_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    /* crypto_hash_sha512_state is 208 bytes in every libsodium release; keep room. */
    uint64_t opaque[32];
} esc_sha512_state;

typedef struct {
    int (*sodium_init)(void);
    const char *(*sodium_version_string)(void); /* may be NULL */
    void (*randombytes_buf)(void *buf, size_t size);

    int (*crypto_sign_verify_detached)(const unsigned char *sig, const unsigned char *m,
                                       unsigned long long mlen, const unsigned char *pk);
    int (*crypto_sign_detached)(unsigned char *sig, unsigned long long *siglen,
                                const unsigned char *m, unsigned long long mlen,
                                const unsigned char *sk);
    int (*crypto_sign_seed_keypair)(unsigned char *pk, unsigned char *sk,
                                    const unsigned char *seed);

    int (*crypto_hash_sha512)(unsigned char *out, const unsigned char *in,
                              unsigned long long inlen);
    int (*crypto_hash_sha512_init)(esc_sha512_state *state);
    int (*crypto_hash_sha512_update)(esc_sha512_state *state, const unsigned char *in,
                                     unsigned long long inlen);
    int (*crypto_hash_sha512_final)(esc_sha512_state *state, unsigned char *out);

    int (*crypto_core_ed25519_is_valid_point)(const unsigned char *p);
    int (*crypto_core_ed25519_add)(unsigned char *r, const unsigned char *p,
                                   const unsigned char *q);
    int (*crypto_core_ed25519_sub)(unsigned char *r, const unsigned char *p,
                                   const unsigned char *q);
    void (*crypto_core_ed25519_scalar_reduce)(unsigned char *r, const unsigned char *s);
    int (*crypto_scalarmult_ed25519_noclamp)(unsigned char *q, const unsigned char *n,
                                             const unsigned char *p);
    int (*crypto_scalarmult_ed25519_base_noclamp)(unsigned char *q, const unsigned char *n);
} esc_sodium_api;

/* The table; all-NULL until esc_sodium_load() succeeds. */
extern esc_sodium_api esc_sodium;

/* Loads libsodium from `path` (a shared object: PyNaCl's extension module or a
 * system libsodium) and resolves every entry of the table.  Returns 0 on success;
 * otherwise -1 with a message naming what is missing in `err`.  The table is only
 * filled when every symbol resolved, so a failed try leaves it untouched. */
int esc_sodium_load(const char *path, char *err, size_t errlen);

/* 1 once esc_sodium_load() has succeeded. */
int esc_sodium_loaded(void);

#endif
