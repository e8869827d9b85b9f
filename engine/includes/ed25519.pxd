# The Ed25519 arithmetic and batch verifier (engine/native/ed25519/): field, point,
# scalar, multi-scalar multiplication, batch equations.  Only the test entry points
# (_core_ed25519.pxi) reach below the batch calls of sigbatch.h.

from libc.stdint cimport int8_t, int16_t, uint8_t, uint16_t, uint64_t

from engine.includes.sigbatch cimport esc_sig_item

cdef extern from "native/ed25519/ed25519_field.h" nogil:
    ctypedef struct fe:
        uint64_t v[5]
    void fe_add(fe *r, const fe *a, const fe *b)
    void fe_sub(fe *r, const fe *a, const fe *b)
    void fe_mul(fe *r, const fe *a, const fe *b)
    void fe_sq(fe *r, const fe *a)
    void fe_invert(fe *r, const fe *z)
    void fe_pow22523(fe *r, const fe *z)
    void fe_pow22523_x2(fe *r, const fe *z)
    void fe_pow22523_x8(fe *r, const fe *z)
    int fe_simd_enabled()
    int fe_simd_set_enabled(int on)
    void fe_tobytes(uint8_t *out, const fe *a)
    void fe_frombytes(fe *r, const uint8_t *s)
    const fe fe_d
    const fe fe_d2
    const fe fe_sqrtm1

cdef extern from "native/ed25519/ed25519_point.h" nogil:
    ctypedef struct ge_p3:
        pass
    ctypedef struct ge_p1p1:
        pass
    ctypedef struct ge_cached:
        pass
    void ge_init()
    int ge_decompress(ge_p3 *r, const uint8_t *s)
    void ge_decompress_many(ge_p3 **out, const uint8_t **enc, int *ok, size_t n)
    void ge_compress(uint8_t *s, const ge_p3 *p)
    int ge_is_canonical(const uint8_t *s)
    int ge_is_small_order(const uint8_t *s)
    int ge_p3_is_small_order(const ge_p3 *p)
    void ge_p3_to_cached(ge_cached *r, const ge_p3 *p)
    void ge_add(ge_p1p1 *r, const ge_p3 *p, const ge_cached *q)
    void ge_sub(ge_p1p1 *r, const ge_p3 *p, const ge_cached *q)
    void ge_p3_dbl(ge_p1p1 *r, const ge_p3 *p)
    void ge_p1p1_to_p3(ge_p3 *r, const ge_p1p1 *p)

cdef extern from "native/ed25519/ed25519_scalar.h" nogil:
    ctypedef struct sc:
        uint64_t v[4]
    ctypedef struct sc_wide:
        uint64_t v[8]
    int sc_is_canonical(const uint8_t *s)
    void sc_reduce_wide(sc *r, const sc_wide *x)
    int sc_wnaf(uint16_t *pos, int8_t *dig, const sc *s, int w)
    void sc_signed_radix(int16_t *dig, const sc *s, int c, int nwin)

cdef extern from "native/ed25519/ed25519_msm.h" nogil:
    int ESC_MSM_AUTO, ESC_MSM_STRAUS, ESC_MSM_PIPPENGER
    int ed25519_msm_pippenger(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m,
                              const sc *b, int c)
    int ed25519_msm_pippenger_ifma(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m,
                                   const sc *b, int c)
    int ed25519_pippenger_window(size_t m)
    int ed25519_msm(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m, const sc *b,
                    int algo)

cdef extern from "native/ed25519/ed25519_batch.h" nogil:
    ctypedef struct esc_batch_opts:
        int msm
        size_t max_batch
    ctypedef struct esc_batch_stats:
        size_t equations
        size_t singles
    int esc_ed25519_prechecks(const esc_sig_item *it)
    int esc_ed25519_verify_single(const esc_sig_item *it)
    int esc_ed25519_verify_cofactored(const esc_sig_item *it)
    void esc_ed25519_verify_batch(const esc_sig_item *items, size_t n, uint8_t *ok,
                                  const esc_batch_opts *opts, esc_batch_stats *stats)
    int ESC_BATCH_MAX_DEFAULT
