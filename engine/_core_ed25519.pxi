# Ed25519 internals, exposed for the tests only (tests/test_ed25519_*.py).
#
# Every name here starts with _ed25519_test_: none of it is API.  The entry points are
# small and slow (one call per value) so that the tests can cross-check the field,
# point and scalar code against Python integers and libsodium, and drive the batch
# verifier with a forced algorithm (its columns read as verify_batch reads them:
# _Column and _items, _core_sigbatch.pxi).

from libc.stdint cimport int8_t, int16_t, uint16_t

from engine.includes.ed25519 cimport (
    ESC_BATCH_MAX_DEFAULT,
    ESC_MSM_AUTO,
    ESC_MSM_PIPPENGER,
    ESC_MSM_STRAUS,
    ed25519_msm,
    ed25519_msm_pippenger,
    ed25519_msm_pippenger_ifma,
    ed25519_pippenger_window,
    esc_batch_opts,
    esc_batch_stats,
    esc_ed25519_prechecks,
    esc_ed25519_verify_batch,
    esc_ed25519_verify_cofactored,
    esc_ed25519_verify_single,
    fe,
    fe_add,
    fe_d,
    fe_d2,
    fe_frombytes,
    fe_invert,
    fe_mul,
    fe_pow22523,
    fe_pow22523_x2,
    fe_pow22523_x8,
    fe_simd_enabled,
    fe_simd_set_enabled,
    fe_sq,
    fe_sqrtm1,
    fe_sub,
    fe_tobytes,
    ge_add,
    ge_cached,
    ge_compress,
    ge_decompress,
    ge_decompress_many,
    ge_init,
    ge_is_canonical,
    ge_is_small_order,
    ge_p1p1,
    ge_p1p1_to_p3,
    ge_p3,
    ge_p3_dbl,
    ge_p3_is_small_order,
    ge_p3_to_cached,
    ge_sub,
    sc,
    sc_is_canonical,
    sc_reduce_wide,
    sc_signed_radix,
    sc_wide,
    sc_wnaf,
)
from engine.includes.sigbatch cimport esc_sig_item

ge_init()

_ED25519_TEST_MSM = {"auto": ESC_MSM_AUTO, "straus": ESC_MSM_STRAUS,
                     "pippenger": ESC_MSM_PIPPENGER}
_ed25519_test_BATCH_MAX_DEFAULT = ESC_BATCH_MAX_DEFAULT


cdef bytes _fe_bytes(const fe *a):
    cdef uint8_t out[32]
    fe_tobytes(out, a)
    return bytes(out[:32])


cdef int _fe_from(fe *r, bytes s) except -1:
    if len(s) != 32:
        raise ValueError("field elements are 32 bytes")
    fe_frombytes(r, <const uint8_t *>s)
    return 0


def _ed25519_test_field_constants():
    """(d, 2d, sqrt(-1)) as canonical 32-byte encodings."""
    return _fe_bytes(&fe_d), _fe_bytes(&fe_d2), _fe_bytes(&fe_sqrtm1)


def _ed25519_test_field_ops(bytes a, bytes b):
    """Canonical encodings of a+b, a-b, a*b, a^2, 1/a, a^((p-5)/8) for a, b < 2^255."""
    cdef fe x, y, r
    _fe_from(&x, a)
    _fe_from(&y, b)
    out = []
    fe_add(&r, &x, &y)
    out.append(_fe_bytes(&r))
    fe_sub(&r, &x, &y)
    out.append(_fe_bytes(&r))
    fe_mul(&r, &x, &y)
    out.append(_fe_bytes(&r))
    fe_sq(&r, &x)
    out.append(_fe_bytes(&r))
    fe_invert(&r, &x)
    out.append(_fe_bytes(&r))
    fe_pow22523(&r, &x)
    out.append(_fe_bytes(&r))
    return tuple(out)


def _ed25519_test_pow22523_lanes(values):
    """z^((p-5)/8) for up to eight 32-byte z, through the 8-lane (IFMA) and the
    2-lane code, as two lists of canonical encodings; the first is None where the
    CPU lacks AVX-512 IFMA (the 8-lane code would fault there)."""
    cdef fe z[8]
    cdef fe r8[8]
    cdef fe r2[8]
    cdef int j, n = len(values)
    if not 1 <= n <= 8:
        raise ValueError("1 to 8 values")
    cdef bint lanes8 = fe_simd_enabled() != 0
    for j in range(8):
        _fe_from(&z[j], values[j % n])
    if lanes8:
        fe_pow22523_x8(r8, z)
    for j in range(0, 8, 2):
        fe_pow22523_x2(&r2[j], &z[j])
    twos = [_fe_bytes(&r2[j]) for j in range(n)]
    return ([_fe_bytes(&r8[j]) for j in range(n)] if lanes8 else None), twos


def ed25519_simd(on=None):
    """Whether the AVX-512 IFMA code is in use; with on=True/False, switch it (on only
    where the CPU has it) and return the previous state.  Operators turn it off on CPUs
    that lower their clock under AVX-512 (configuration: verification.simd)."""
    if on is None:
        return bool(fe_simd_enabled())
    return bool(fe_simd_set_enabled(1 if on else 0))


def _ed25519_test_decompress_many(encodings):
    """ge_decompress_many over the list: re-encodings, None where one does not
    decode."""
    cdef Py_ssize_t i, n = len(encodings)
    cdef ge_p3 *pts = <ge_p3 *>malloc((n + 1) * sizeof(ge_p3))
    cdef ge_p3 **outs = <ge_p3 **>malloc((n + 1) * sizeof(ge_p3 *))
    cdef const uint8_t **encs = <const uint8_t **>malloc((n + 1) * sizeof(uint8_t *))
    cdef int *ok = <int *>malloc((n + 1) * sizeof(int))
    keep = [bytes(e) for e in encodings]
    try:
        if pts == NULL or outs == NULL or encs == NULL or ok == NULL:
            raise MemoryError()
        for i in range(n):
            if len(keep[i]) != 32:
                raise ValueError("points are 32 bytes")
            outs[i] = &pts[i]
            encs[i] = <const uint8_t *>(<bytes>keep[i])
        ge_decompress_many(outs, encs, ok, n)
        return [_point_bytes(&pts[i]) if ok[i] else None for i in range(n)]
    finally:
        free(pts)
        free(outs)
        free(encs)
        free(ok)


def _ed25519_test_field_chain(bytes a, int rounds):
    """x <- x * (x + a) - a^2, `rounds` times from x = a, with no reduction beyond what
    the operations do: exercises the limb bounds over long chains."""
    cdef fe x, y, t, sq
    _fe_from(&x, a)
    _fe_from(&y, a)
    fe_sq(&sq, &y)
    for _ in range(rounds):
        fe_add(&t, &x, &y)
        fe_mul(&t, &x, &t)
        fe_sub(&x, &t, &sq)
    return _fe_bytes(&x)


cdef int _point_from(ge_p3 *p, bytes s) except -1:
    if len(s) != 32:
        raise ValueError("points are 32 bytes")
    return 0 if ge_decompress(p, <const uint8_t *>s) == 0 else 1


cdef bytes _point_bytes(const ge_p3 *p):
    cdef uint8_t out[32]
    ge_compress(out, p)
    return bytes(out[:32])


def _ed25519_test_decompress(bytes s):
    """Re-encoding of the decoded point, or None when s does not decode."""
    cdef ge_p3 p
    if _point_from(&p, s):
        return None
    return _point_bytes(&p)


def _ed25519_test_encoding_checks(bytes s):
    """(canonical, small order by encoding, small order by [8]P == 0 or None)."""
    cdef ge_p3 p
    decoded = None if _point_from(&p, s) else bool(ge_p3_is_small_order(&p))
    cdef const uint8_t *enc = <const uint8_t *>s
    return bool(ge_is_canonical(enc)), bool(ge_is_small_order(enc)), decoded


def _ed25519_test_point_ops(bytes a, bytes b):
    """(a + b, a - b, 2a) through the cached-form formulas, or None if either fails to
    decode."""
    cdef ge_p3 p, q, r
    cdef ge_cached qc
    cdef ge_p1p1 t
    if _point_from(&p, a) or _point_from(&q, b):
        return None
    ge_p3_to_cached(&qc, &q)
    ge_add(&t, &p, &qc)
    ge_p1p1_to_p3(&r, &t)
    s1 = _point_bytes(&r)
    ge_sub(&t, &p, &qc)
    ge_p1p1_to_p3(&r, &t)
    s2 = _point_bytes(&r)
    ge_p3_dbl(&t, &p)
    ge_p1p1_to_p3(&r, &t)
    return s1, s2, _point_bytes(&r)


cdef int _scalar_from(sc *r, bytes s) except -1:
    if len(s) != 32:
        raise ValueError("scalars are 32 bytes")
    memcpy(r.v, <const char *>s, 32)
    return 0


def _ed25519_test_msm(scalars, points, base_scalar=None, str algo="auto", int window=0):
    """Encoding of sum scalars[i] points[i] (+ base_scalar B), scalars < 2^253 as 32
    little-endian bytes; algo "straus", "pippenger" (window 0 = by size),
    "pippenger_simd" (the AVX-512 IFMA version, where available) or "auto"."""
    cdef Py_ssize_t i, m = len(points)
    cdef ge_p3 *pts = <ge_p3 *>malloc((m + 1) * sizeof(ge_p3))
    cdef sc *ss = <sc *>malloc((m + 1) * sizeof(sc))
    cdef sc b
    cdef ge_p3 out
    cdef int rc
    if pts == NULL or ss == NULL:
        free(pts)
        free(ss)
        raise MemoryError()
    try:
        if len(scalars) != m:
            raise ValueError("scalars and points differ in length")
        for i in range(m):
            if _point_from(&pts[i], points[i]):
                raise ValueError(f"points[{i}] does not decode")
            _scalar_from(&ss[i], scalars[i])
        if base_scalar is not None:
            _scalar_from(&b, base_scalar)
        if algo == "pippenger":
            rc = ed25519_msm_pippenger(&out, pts, ss, m,
                                       &b if base_scalar is not None else NULL, window)
        elif algo == "pippenger_simd":
            if not fe_simd_enabled():
                raise RuntimeError("the IFMA path is off or the CPU lacks it")
            rc = ed25519_msm_pippenger_ifma(&out, pts, ss, m,
                                            &b if base_scalar is not None else NULL,
                                            window or ed25519_pippenger_window(m + 1))
        else:
            rc = ed25519_msm(&out, pts, ss, m, &b if base_scalar is not None else NULL,
                             _ED25519_TEST_MSM[algo])
        if rc != 0:
            raise MemoryError()
        return _point_bytes(&out)
    finally:
        free(pts)
        free(ss)


def _ed25519_test_scalar_reduce(bytes wide):
    """(integer in up to 64 little-endian bytes) mod L, as 32 bytes."""
    cdef sc_wide w
    cdef sc r
    if len(wide) > 64:
        raise ValueError("at most 64 bytes")
    padded = wide + bytes(64 - len(wide))
    memcpy(w.v, <const char *>padded, 64)
    sc_reduce_wide(&r, &w)
    return bytes((<const uint8_t *>r.v)[:32])


def _ed25519_test_scalar_is_canonical(bytes s):
    return bool(sc_is_canonical(<const uint8_t *>s))


def _ed25519_test_wnaf(bytes s, int w):
    """[(position, digit)] of the width-w NAF of the 32-byte scalar s."""
    cdef sc x
    cdef uint16_t pos[300]
    cdef int8_t dig[300]
    _scalar_from(&x, s)
    if not 2 <= w <= 8:
        raise ValueError("w must be 2..8")
    cdef int n = sc_wnaf(pos, dig, &x, w)
    return [(pos[i], dig[i]) for i in range(n)]


def _ed25519_test_signed_radix(bytes s, int c):
    """Signed radix-2^c digits (253 // c + 1 of them) of the 32-byte scalar s < 2^253."""
    cdef sc x
    cdef int16_t dig[80]
    cdef int nwin = 253 // c + 1
    _scalar_from(&x, s)
    if not 4 <= c <= 16:
        raise ValueError("c must be 4..16")
    sc_signed_radix(dig, &x, c, nwin)
    return [dig[i] for i in range(nwin)]


def _ed25519_test_verify_each(messages, signatures, public_keys, str how):
    """Per-item verdicts by one path: "prechecks" (rules 1-4 only), "cofactored" (our
    own rule-5 check) or "single" (rules 1-4, libsodium, cofactored fallback)."""
    cdef _Column m = _Column(messages, "messages")
    cdef _Column s = _Column(signatures, "signatures")
    cdef _Column k = _Column(public_keys, "public_keys")
    cdef esc_sig_item *items = _items(m, s, k)
    cdef Py_ssize_t i
    out = []
    try:
        for i in range(m.n):
            if how == "prechecks":
                out.append(bool(esc_ed25519_prechecks(&items[i])))
            elif how == "cofactored":
                out.append(bool(esc_ed25519_verify_cofactored(&items[i])))
            elif how == "single":
                out.append(bool(esc_ed25519_verify_single(&items[i])))
            else:
                raise ValueError(f"unknown path {how!r}")
    finally:
        free(items)
    return out


def _ed25519_test_verify_batch(messages, signatures, public_keys, str msm="auto",
                               size_t max_batch=0):
    """(ok, equations evaluated, items checked alone) for one batch call on one thread,
    with the MSM algorithm forced ("straus", "pippenger") or chosen by size ("auto")."""
    cdef _Column m = _Column(messages, "messages")
    cdef _Column s = _Column(signatures, "signatures")
    cdef _Column k = _Column(public_keys, "public_keys")
    cdef esc_sig_item *items = _items(m, s, k)
    cdef esc_batch_opts opts
    cdef esc_batch_stats stats
    cdef cnp.ndarray ok = np.zeros(m.n, dtype=np.bool_)
    opts.msm = _ED25519_TEST_MSM[msm]
    opts.max_batch = max_batch
    stats.equations = 0
    stats.singles = 0
    try:
        with nogil:
            esc_ed25519_verify_batch(items, <size_t>m.n, <uint8_t *>cnp.PyArray_DATA(ok),
                                     &opts, &stats)
    finally:
        free(items)
    return ok, stats.equations, stats.singles
