# Batch Ed25519: verification and signing over whole batches.

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Check, PyByteArray_GET_SIZE

from engine.includes.sigbatch cimport (
    ESC_VERIFY_AUTO,
    ESC_VERIFY_BATCH,
    ESC_VERIFY_SINGLE,
    esc_seed_keypairs,
    esc_sig_item,
    esc_sign_items,
    esc_verify_items,
)

METHOD_SINGLE = ESC_VERIFY_SINGLE  # libsodium per item, cofactored check where it says no
METHOD_BATCH = ESC_VERIFY_BATCH  # randomised batch verification per thread range
METHOD_AUTO = ESC_VERIFY_AUTO  # batch where a thread's range is large enough to gain


cdef class _Column:
    """A column of byte strings seen as (pointer, length) pairs without copying.

    Takes a sequence of bytes / bytearray objects or a 2-D C-contiguous uint8 numpy
    array (one row per item) and keeps the underlying objects alive for as long as
    the pointers are in use (a sequence through a private tuple of its items).  A
    bytearray is also held exported (a memoryview of it) for as long, so it cannot be
    resized under a call that runs without the GIL: the resize raises BufferError
    instead of freeing the memory being read.  Every call that takes byte strings
    (signatures, replay keys, revocation ids) reads them through this one rule.
    """

    def __cinit__(self, object values, str name):
        cdef Py_ssize_t i, row
        cdef object item
        cdef const uint8_t *base
        cdef cnp.ndarray arr
        if isinstance(values, np.ndarray):
            arr = <cnp.ndarray>values
            if arr.ndim != 2 or arr.dtype != np.uint8 or not arr.flags.c_contiguous:
                raise TypeError(
                    f"{name}: a numpy array must be 2-D, uint8 and C-contiguous "
                    f"(got {arr.ndim}-D {arr.dtype})"
                )
            self.owner = arr
            self.n = arr.shape[0]
            row = arr.shape[1]
            self._alloc()
            base = <const uint8_t *>cnp.PyArray_DATA(arr)
            for i in range(self.n):
                self.ptrs[i] = base + i * row
                self.lens[i] = <size_t>row
            return
        if isinstance(values, (bytes, bytearray, str)):
            raise TypeError(f"{name}: expected a sequence of byte strings, not one string")
        # A private tuple, not the caller's list: a list changed while the core reads
        # without the GIL would drop the items being read.
        self.owner = tuple(values)
        self.n = len(self.owner)
        self._alloc()
        for i in range(self.n):
            item = (<tuple>self.owner)[i]
            if PyBytes_Check(item):
                self.ptrs[i] = <const uint8_t *>PyBytes_AS_STRING(item)
                self.lens[i] = <size_t>PyBytes_GET_SIZE(item)
            elif PyByteArray_Check(item):
                if self.exports is None:
                    self.exports = []
                self.exports.append(memoryview(item))  # pins its buffer until we go
                self.ptrs[i] = <const uint8_t *>PyByteArray_AS_STRING(item)
                self.lens[i] = <size_t>PyByteArray_GET_SIZE(item)
            else:
                raise TypeError(f"{name}[{i}]: expected bytes, got {type(item).__name__}")

    cdef int _alloc(self) except -1:
        # One extra slot so that an empty column is still a valid allocation.
        self.ptrs = <const uint8_t **>malloc((self.n + 1) * sizeof(uint8_t *))
        self.lens = <size_t *>malloc((self.n + 1) * sizeof(size_t))
        if self.ptrs == NULL or self.lens == NULL:
            raise MemoryError()
        return 0

    def __dealloc__(self):
        free(self.ptrs)
        free(self.lens)


cdef esc_sig_item *_items(_Column m, _Column s, _Column k) except NULL:
    """The three columns as one malloc'ed array of items (the caller frees it)."""
    cdef Py_ssize_t i, n = m.n
    if s.n != n or k.n != n:
        raise ValueError(
            f"messages, signatures and public_keys differ in length ({n}, {s.n}, {k.n})"
        )
    cdef esc_sig_item *items = <esc_sig_item *>malloc((n + 1) * sizeof(esc_sig_item))
    if items == NULL:
        raise MemoryError()
    for i in range(n):
        items[i].msg = m.ptrs[i]
        items[i].msg_len = m.lens[i]
        items[i].sig = s.ptrs[i]
        items[i].sig_len = s.lens[i]
        items[i].pk = k.ptrs[i]
        items[i].pk_len = k.lens[i]
    return items


def verify_batch(messages, signatures, public_keys, threads=None, int method=ESC_VERIFY_AUTO):
    """ok[i] is True iff signatures[i] is a valid signature of messages[i] by public_keys[i].

    Validity is the rule of docs/FORMATS.md section 7, the same for every method.  A
    signature that is not 64 bytes, or a key that is not 32, gives False for that item
    only.
    """
    cdef _Column m = _Column(messages, "messages")
    cdef _Column s = _Column(signatures, "signatures")
    cdef _Column k = _Column(public_keys, "public_keys")
    cdef int nthreads = _threads_arg(threads)
    cdef Py_ssize_t n = m.n
    if method not in (ESC_VERIFY_SINGLE, ESC_VERIFY_BATCH, ESC_VERIFY_AUTO):
        raise ValueError(f"unknown method code {method}")
    cdef cnp.ndarray ok = np.zeros(n, dtype=np.bool_)
    cdef esc_sig_item *items = _items(m, s, k)
    try:
        with nogil:
            esc_verify_items(items, <size_t>n, <uint8_t *>cnp.PyArray_DATA(ok), nthreads,
                             method)
    finally:
        free(items)
    return ok


def sign_batch(messages, secret_keys, threads=None):
    """Signatures, one 64-byte row per message, under 64-byte libsodium secret keys."""
    cdef _Column m = _Column(messages, "messages")
    cdef _Column k = _Column(secret_keys, "secret_keys")
    cdef int nthreads = _threads_arg(threads)
    cdef Py_ssize_t i, n = m.n
    if k.n != n:
        raise ValueError(f"messages and secret_keys differ in length ({n}, {k.n})")
    for i in range(n):
        if k.lens[i] != 64:
            raise ValueError(f"secret_keys[{i}]: expected 64 bytes, got {k.lens[i]}")
    cdef cnp.ndarray sigs = np.empty((n, 64), dtype=np.uint8)
    with nogil:
        esc_sign_items(m.ptrs, m.lens, k.ptrs, <uint8_t *>cnp.PyArray_DATA(sigs), <size_t>n,
                       nthreads)
    return sigs


def keypairs_from_seeds(seeds, threads=None):
    """(public keys (n, 32), secret keys (n, 64)) from an (n, 32) uint8 array of seeds."""
    cdef cnp.ndarray arr = np.ascontiguousarray(seeds, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != 32:
        raise ValueError("seeds must be an (n, 32) array")
    cdef int nthreads = _threads_arg(threads)
    cdef Py_ssize_t n = arr.shape[0]
    cdef cnp.ndarray pks = np.empty((n, 32), dtype=np.uint8)
    cdef cnp.ndarray sks = np.empty((n, 64), dtype=np.uint8)
    with nogil:
        esc_seed_keypairs(<const uint8_t *>cnp.PyArray_DATA(arr),
                          <uint8_t *>cnp.PyArray_DATA(pks), <uint8_t *>cnp.PyArray_DATA(sks),
                          <size_t>n, nthreads)
    return pks, sks
