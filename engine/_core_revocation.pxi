# Revocation data: hash, checksum, split-block Bloom filter, exact tier, batched look-ups.

from engine.includes.bloom cimport esc_bloom_insert, esc_bloom_probe_hashes
from engine.includes.crc32c cimport esc_crc32c, esc_crc32c_hw_available, esc_crc32c_sw
from engine.includes.exact_set cimport (
    esc_fp,
    esc_fp_merge,
    esc_fp_sort_unique,
    esc_fpset,
    esc_fpset_bits_for,
    esc_fpset_build_index,
    esc_fpset_check_index,
    esc_fpset_validate,
)
from engine.includes.fault_guard cimport esc_fault_guard_caught, esc_fault_guard_install
from engine.includes.id_parse cimport esc_bad_line, esc_parse_ids
from engine.includes.revocation_lookup cimport (
    ESC_LOOKUP_BLOOM_ONLY,
    ESC_LOOKUP_FULL,
    esc_fingerprint_rows,
    esc_ids,
    esc_kind_id_len,
    esc_revset_contains,
    esc_revset_simd,
)
from engine.includes.xxh64 cimport esc_xxh64

KIND_CARD = 1
KIND_CREDENTIAL = 2


class RevocationDataUnreadable(EsscError, OSError):
    """The mapped revocation data could not be read (SIGBUS caught: the file under the
    mapping was truncated, or its storage failed).  The table that raised it answers
    nothing more; its owner must load the data again.  Never treat it as "not revoked"."""


def fault_guard_caught():
    """SIGBUS faults in revocation look-ups caught since the process started."""
    return esc_fault_guard_caught()


# Big buffers are checksummed without the GIL; small ones are not worth the switch.
cdef size_t _NOGIL_BYTES = 1 << 16


def xxh64(const uint8_t[::1] data, uint64_t seed=0):
    """XXH64 of a bytes-like object."""
    if data.shape[0] == 0:
        return esc_xxh64(NULL, 0, seed)
    return esc_xxh64(&data[0], data.shape[0], seed)


def crc32c(const uint8_t[::1] data, uint32_t crc=0):
    """CRC32C of data, continuing from crc (the CRC of what came before)."""
    cdef size_t n = data.shape[0]
    if n == 0:
        return crc
    if n < _NOGIL_BYTES:
        return esc_crc32c(crc, &data[0], n)
    with nogil:
        crc = esc_crc32c(crc, &data[0], n)
    return crc


def crc32c_sw(const uint8_t[::1] data, uint32_t crc=0):
    """The table-driven CRC32C alone (tests compare it with the hardware path)."""
    if data.shape[0] == 0:
        return crc
    return esc_crc32c_sw(crc, &data[0], data.shape[0])


def crc32c_hw_available():
    return bool(esc_crc32c_hw_available())


def revocation_simd(allow=None):
    """Whether look-ups use the AVX2 loop; True / False permits / forbids it (tests)."""
    return bool(esc_revset_simd(-1 if allow is None else int(bool(allow))))


def fingerprint_rows(uint64_t seed, const uint8_t[::1] kinds, const uint8_t[:, ::1] rows):
    """(n, 2) uint64 fingerprints [h1, h2] of ids given as kind codes and 16-byte rows."""
    cdef size_t n = kinds.shape[0]
    if rows.shape[0] != <Py_ssize_t>n or rows.shape[1] != 16:
        raise ValueError("rows must be (len(kinds), 16)")
    for k in np.unique(np.asarray(kinds)):
        if esc_kind_id_len(k) == 0:
            raise ValueError(f"unknown kind code {k}")
    out = np.empty((n, 2), dtype=np.uint64)
    cdef uint64_t[:, ::1] o = out
    if n:
        with nogil:
            esc_fingerprint_rows(seed, &kinds[0], &rows[0, 0], n, <esc_fp *>&o[0, 0])
    return out


def fp_sort_unique(uint64_t[:, ::1] fps):
    """Sorts (n, 2) fingerprints in place by (h1, h2), drops duplicates; returns the count."""
    cdef uint64_t n = fps.shape[0], kept
    if fps.shape[1] != 2:
        raise ValueError("fingerprints must be (n, 2)")
    if n == 0:
        return 0
    with nogil:
        kept = esc_fp_sort_unique(<esc_fp *>&fps[0, 0], n)
    return kept


def fp_merge(const uint64_t[:, ::1] a, const uint64_t[:, ::1] b):
    """The sorted union of two sorted duplicate-free (n, 2) fingerprint arrays."""
    out = np.empty((a.shape[0] + b.shape[0], 2), dtype=np.uint64)
    if out.shape[0] == 0:
        return out
    cdef uint64_t[:, ::1] o = out
    cdef uint64_t kept
    cdef const esc_fp *pa = <const esc_fp *>&a[0, 0] if a.shape[0] else NULL
    cdef const esc_fp *pb = <const esc_fp *>&b[0, 0] if b.shape[0] else NULL
    with nogil:
        kept = esc_fp_merge(pa, a.shape[0], pb, b.shape[0], <esc_fp *>&o[0, 0])
    return out[:kept]


def fpset_bits_for(uint64_t n):
    """Bucket bits of the exact tier's index for n fingerprints."""
    return esc_fpset_bits_for(n)


cdef const esc_fp *_fps_ptr(const uint64_t[:, ::1] fps):
    return <const esc_fp *>&fps[0, 0] if fps.shape[0] else NULL


def fpset_index(const uint64_t[:, ::1] fps, unsigned bits):
    """The bucket index (2^bits + 1 uint64 entries) of sorted fingerprints."""
    if bits > 32:
        raise ValueError("bits must be at most 32")
    index = np.empty((1 << bits) + 1, dtype=np.uint64)
    cdef uint64_t[::1] ix = index
    cdef const esc_fp *p = _fps_ptr(fps)
    with nogil:
        esc_fpset_build_index(p, fps.shape[0], bits, &ix[0])
    return index


def fpset_check_index(const uint64_t[::1] index, unsigned bits, uint64_t n):
    """0 if the index keeps every look-up inside n entries, else 1 + the bad bucket."""
    if bits > 32 or <uint64_t>index.shape[0] != (<uint64_t>1 << bits) + 1:
        raise ValueError("index must have 2^bits + 1 entries")
    cdef uint64_t bad
    with nogil:
        bad = esc_fpset_check_index(&index[0], bits, n)
    return bad


def fpset_validate(const uint64_t[:, ::1] fps, unsigned bits, const uint64_t[::1] index):
    """0 if fps are strictly increasing and index matches them, else 1 + a bad position."""
    if bits > 32 or <uint64_t>index.shape[0] != (<uint64_t>1 << bits) + 1:
        raise ValueError("index must have 2^bits + 1 entries")
    cdef uint64_t bad
    cdef const esc_fp *p = _fps_ptr(fps)
    with nogil:
        bad = esc_fpset_validate(p, fps.shape[0], bits, &index[0])
    return bad


def bloom_insert(uint32_t[::1] words, const uint64_t[:] hashes):
    """Sets the bits of each 64-bit hash (a strided view such as fps[:, 0] is fine)."""
    cdef uint64_t nblocks = words.shape[0] // 8
    if nblocks == 0 or words.shape[0] % 8:
        raise ValueError("a filter is a whole number of 8-word blocks")
    if hashes.shape[0] == 0:
        return
    with nogil:
        esc_bloom_insert(&words[0], nblocks, &hashes[0], hashes.shape[0],
                         hashes.strides[0] // 8)


def bloom_probe_hashes(const uint32_t[::1] words, const uint64_t[:] hashes):
    """Bool array: the filter may contain hashes[i]."""
    cdef uint64_t nblocks = words.shape[0] // 8
    if nblocks == 0 or words.shape[0] % 8:
        raise ValueError("a filter is a whole number of 8-word blocks")
    out = np.zeros(hashes.shape[0], dtype=np.bool_)
    cdef uint8_t[::1] o = out.view(np.uint8)
    if hashes.shape[0]:
        with nogil:
            esc_bloom_probe_hashes(&words[0], nblocks, &hashes[0], hashes.shape[0],
                                   hashes.strides[0] // 8, &o[0])
    return out


def parse_ids(const uint8_t[::1] buf, size_t max_bad=20):
    """Parses revocation input text (whole lines).

    Returns (kinds uint8 (n,), rows uint8 (n, 16), line count, bad-line count,
    [(0-based line, reason code)] for the first max_bad malformed lines).
    """
    cdef size_t size = buf.shape[0]
    cdef size_t cap = size // 14 + 1
    kinds = np.empty(cap, dtype=np.uint8)
    rows = np.empty((cap, 16), dtype=np.uint8)
    cdef uint8_t[::1] k = kinds
    cdef uint8_t[:, ::1] r = rows
    cdef uint64_t nbad = 0, nlines = 0
    cdef size_t n = 0, i
    cdef esc_bad_line *bad = <esc_bad_line *>malloc((max_bad + 1) * sizeof(esc_bad_line))
    if bad == NULL:
        raise MemoryError()
    try:
        if size:
            with nogil:
                n = esc_parse_ids(&buf[0], size, &k[0], &r[0, 0], cap, bad, max_bad, &nbad,
                                  &nlines)
        first = [(bad[i].line, bad[i].reason) for i in range(min(nbad, max_bad))]
    finally:
        free(bad)
    return kinds[:n], rows[:n], nlines, nbad, first


cdef class RevocationTable:
    """One consistent set of revocation data, ready for look-ups.

    Holds the arrays it reads (numpy views of mapped files, and the composed delta
    sets), so they stay valid for as long as any look-up holds this object: swapping
    in new data never pulls memory from under a running call.
    """

    def __init__(self, uint64_t seed, bloom, fps, index, unsigned bits, add_bloom, add_fps,
                 add_index, unsigned add_bits, remove_fps, remove_index, unsigned remove_bits):
        self.arrays = (bloom, fps, index, add_bloom, add_fps, add_index, remove_fps,
                       remove_index)
        if esc_fault_guard_install() != 0:
            raise OSError("cannot install the SIGBUS guard for mapped revocation data")
        cdef const uint32_t[::1] b = bloom
        cdef const uint32_t[::1] ab = add_bloom
        if b.shape[0] == 0 or b.shape[0] % 8 or ab.shape[0] == 0 or ab.shape[0] % 8:
            raise ValueError("a filter is a whole number of 8-word blocks")
        self.rs.seed = seed
        self.rs.bloom = &b[0]
        self.rs.nblocks = b.shape[0] // 8
        self.rs.add_bloom = &ab[0]
        self.rs.add_nblocks = ab.shape[0] // 8
        _fill_fpset(&self.rs.snapshot, fps, index, bits)
        _fill_fpset(&self.rs.add, add_fps, add_index, add_bits)
        _fill_fpset(&self.rs.remove, remove_fps, remove_index, remove_bits)

    def contains(self, int kind, ids, int threads=1, bint bloom_only=False):
        """Bool array: ids[i] of this kind is revoked (or, with bloom_only, may be)."""
        cdef esc_ids spec
        cdef Py_ssize_t n
        cdef object held = None
        cdef _Column col
        cdef cnp.ndarray arr
        cdef uint8_t *o
        cdef int mode = ESC_LOOKUP_BLOOM_ONLY if bloom_only else ESC_LOOKUP_FULL
        cdef int rc = 0
        if self.faulted:
            raise RevocationDataUnreadable("revocation data in service became unreadable")
        if esc_kind_id_len(kind) == 0:
            raise ValueError(f"unknown kind code {kind}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        spec.base = NULL
        spec.ptrs = NULL
        spec.lens = NULL
        if isinstance(ids, np.ndarray):
            arr = <cnp.ndarray>ids
            if not arr.flags.c_contiguous:
                raise TypeError("ids: a numpy array must be C-contiguous")
            if arr.ndim == 1 and arr.dtype.kind == "S":
                n = arr.shape[0]
                spec.stride = spec.len = arr.dtype.itemsize
            elif arr.ndim == 2 and arr.dtype == np.uint8:
                n = arr.shape[0]
                spec.stride = spec.len = arr.shape[1]
            else:
                raise TypeError("ids: a numpy array must be 1-D bytes (S9, S16) or 2-D uint8")
            spec.base = <const uint8_t *>cnp.PyArray_DATA(arr)
            held = arr
        else:
            # The one rule for byte-string columns (_Column): a private tuple, bytearrays
            # pinned, so nothing read without the GIL can be freed or resized meanwhile.
            col = held = _Column(ids, "ids")
            n = col.n
            spec.ptrs = col.ptrs
            spec.lens = col.lens
        out = np.empty(n, dtype=np.bool_)
        o = <uint8_t *>cnp.PyArray_DATA(out)
        if n >= _NOGIL_ITEMS:
            with nogil:
                rc = esc_revset_contains(&self.rs, kind, &spec, n, o, mode, threads)
        elif n:  # a server batch's few look-ups: keep the GIL (_core.pyx)
            rc = esc_revset_contains(&self.rs, kind, &spec, n, o, mode, threads)
        if rc != 0:
            self.faulted = True
            raise RevocationDataUnreadable(
                "a page of the mapped revocation data could not be read (SIGBUS): the "
                "file under the mapping was truncated or its storage failed")
        return out


cdef int _fill_fpset(esc_fpset *s, fps, index, unsigned bits) except -1:
    cdef const uint64_t[:, ::1] f = fps
    cdef const uint64_t[::1] ix = index
    if f.shape[1] != 2 or bits > 32 or <uint64_t>ix.shape[0] != (<uint64_t>1 << bits) + 1:
        raise ValueError("fingerprints must be (n, 2) and the index 2^bits + 1 entries")
    if esc_fpset_check_index(&ix[0], bits, f.shape[0]) != 0:
        raise ValueError("the bucket index does not fit the fingerprints")
    s.fps = <const esc_fp *>&f[0, 0] if f.shape[0] else NULL
    s.n = f.shape[0]
    s.index = &ix[0]
    s.bits = bits
    return 0
