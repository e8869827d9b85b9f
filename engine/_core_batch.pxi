# A batch of presentations on its way through the pipeline, and the one-time-nonce table.
#
# The stages (engine/verifier.py drives them) each work on the whole batch in C:
# check (parse, trust, time, both signatures; engine/native/presentation.c), the
# revocation verdicts for the ids it hands out as numpy arrays, and the replay check
# (engine/native/replay_table.c).  No stage creates a Python object per presentation.

from cpython.bytes cimport PyBytes_AS_STRING

cdef extern from "native/replay_table.h" nogil:
    ctypedef struct esc_replay_table:
        pass
    int esc_replay_init(esc_replay_table *t, size_t max_live, uint64_t seed)
    void esc_replay_free(esc_replay_table *t)
    int esc_replay_check(esc_replay_table *t, const uint8_t *const *keys,
                         const uint64_t *expires_ms, size_t n, uint64_t now_ms,
                         uint8_t *states)
    size_t esc_replay_live(esc_replay_table *t, uint64_t now_ms)

cdef enum:
    _VERDICT_REPLAYED = 14
    _VERDICT_BUSY = 15
    _REPLAY_SEEN = 1
    _REPLAY_NO_ROOM = 2


cdef class ReplayTable:
    """One-time nonces: 32-byte keys (serial + nonce) remembered until they expire.

    ``check_and_record(keys, expires_ms, now_ms)`` gives, for each key in order,
    0 (fresh, now recorded), 1 (seen before and not expired) or 2 (no room: the table
    holds ``capacity`` live keys; nothing live is ever forgotten to make room).
    """
    cdef esc_replay_table table
    cdef readonly size_t capacity

    def __cinit__(self, size_t capacity=10_000_000):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        cdef uint64_t seed = int.from_bytes(os.urandom(8), "little")
        if esc_replay_init(&self.table, capacity, seed) != 0:
            raise MemoryError()
        self.capacity = capacity

    def __dealloc__(self):
        esc_replay_free(&self.table)

    def check_and_record(self, keys, expires_ms, uint64_t now_ms):
        cdef _Column col = _Column(keys, "keys")
        cdef Py_ssize_t i, n = col.n
        cdef cnp.ndarray exp = np.ascontiguousarray(expires_ms, dtype=np.uint64)
        if exp.shape[0] != n:
            raise ValueError("keys and expires_ms differ in length")
        for i in range(n):
            if col.lens[i] != 32:
                raise ValueError(f"keys[{i}]: expected 32 bytes, got {col.lens[i]}")
        cdef cnp.ndarray states = np.zeros(n, dtype=np.uint8)
        with nogil:
            esc_replay_check(&self.table, col.ptrs, <const uint64_t *>cnp.PyArray_DATA(exp),
                             <size_t>n, now_ms, <uint8_t *>cnp.PyArray_DATA(states))
        return states.tolist()

    def live(self, uint64_t now_ms):
        """Keys not expired at ``now_ms``."""
        return esc_replay_live(&self.table, now_ms)

    cdef int _check(self, const uint8_t *const *keys, const uint64_t *expires, size_t n,
                    uint64_t now_ms, uint8_t *states) nogil:
        return esc_replay_check(&self.table, keys, expires, n, now_ms, states)


cdef class VerifyBatch:
    """Presentations verified together; the verdicts fill in stage by stage.

    Verdict 0 means "not failed yet" until the replay stage, after which it is OK.
    """
    cdef list keep  # the objects that own the presentation bytes
    cdef const uint8_t **ptrs
    cdef size_t *lens
    cdef esc_parsed *parsed
    cdef uint8_t *verdict
    cdef Py_ssize_t n, cap
    cdef bint checked

    def __cinit__(self, presentations=()):
        self.keep = []
        self.n = 0
        self.cap = 0
        self._reserve(len(presentations))
        self.add(presentations)

    def __dealloc__(self):
        free(self.ptrs)
        free(self.lens)
        free(self.parsed)
        free(self.verdict)

    def __len__(self):
        return self.n

    cdef int _reserve(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t cap = self.cap
        if self.n + more <= cap:
            return 0
        cap = max(64, 2 * cap, self.n + more)
        self.ptrs = <const uint8_t **>_grow(self.ptrs, cap * sizeof(uint8_t *))
        self.lens = <size_t *>_grow(self.lens, cap * sizeof(size_t))
        self.parsed = <esc_parsed *>_grow(self.parsed, cap * sizeof(esc_parsed))
        self.verdict = <uint8_t *>_grow(self.verdict, cap)
        self.cap = cap
        return 0

    def add(self, presentations):
        """Appends presentations (bytes objects)."""
        cdef object p
        if self.checked:
            raise RuntimeError("the batch has already been checked")
        self._reserve(len(presentations))
        for p in presentations:
            if not PyBytes_Check(p):
                raise TypeError(f"presentations must be bytes, not {type(p).__name__}")
            self.ptrs[self.n] = <const uint8_t *>PyBytes_AS_STRING(p)
            self.lens[self.n] = <size_t>PyBytes_GET_SIZE(p)
            self.n += 1
            self.keep.append(p)

    def check(self, TrustTable table, int64_t now_ms, int64_t freshness_ms,
              int64_t skew_ms, threads=None, int method=METHOD_AUTO):
        """Parse, trust and time checks and both signatures (all verdicts up to STALE)."""
        cdef int nthreads = _threads_arg(threads)
        cdef Py_ssize_t i
        if self.checked:
            raise RuntimeError("the batch has already been checked")
        self.checked = True
        with nogil:
            esc_check_presentations(self.ptrs, self.lens, <size_t>self.n, &table.trust,
                                    now_ms, freshness_ms, skew_ms, nthreads, method,
                                    self.parsed)
            for i in range(self.n):
                # 0xff: the stage ran out of memory; never OK, the caller retries.
                self.verdict[i] = (_VERDICT_BUSY if self.parsed[i].verdict == 0xff
                                   else self.parsed[i].verdict)

    def verdicts(self):
        """The verdict codes so far (a numpy uint8 copy)."""
        out = np.empty(self.n, dtype=np.uint8)
        if self.n:
            memcpy(<uint8_t *>cnp.PyArray_DATA(out), self.verdict, self.n)
        return out

    def detail(self, Py_ssize_t i):
        return self.parsed[i].detail

    def presentation(self, Py_ssize_t i):
        return self.keep[i]

    def candidates(self):
        """(indices, card numbers as S9, serials as S16) of the items still without a verdict."""
        cdef Py_ssize_t i, k = 0, m = 0
        for i in range(self.n):
            m += self.verdict[i] == 0
        idx = np.empty(m, dtype=np.intp)
        cards = np.empty(m, dtype="S9")
        serials = np.empty(m, dtype="S16")
        cdef Py_ssize_t *ip = <Py_ssize_t *>cnp.PyArray_DATA(idx)
        cdef char *cp = <char *>cnp.PyArray_DATA(cards)
        cdef char *sp = <char *>cnp.PyArray_DATA(serials)
        for i in range(self.n):
            if self.verdict[i] == 0:
                ip[k] = i
                memcpy(cp + 9 * k, self.ptrs[i] + self.parsed[i].card, 9)
                memcpy(sp + 16 * k, self.ptrs[i] + self.parsed[i].serial, 16)
                k += 1
        return idx, cards, serials

    def set_verdict(self, indices, uint8_t verdict):
        """Gives the items at ``indices`` (still without a verdict) this verdict."""
        cdef cnp.ndarray arr = np.ascontiguousarray(indices, dtype=np.intp)
        cdef Py_ssize_t *ip = <Py_ssize_t *>cnp.PyArray_DATA(arr)
        cdef Py_ssize_t j, i
        for j in range(arr.shape[0]):
            i = ip[j]
            if not 0 <= i < self.n:
                raise IndexError(i)
            if self.verdict[i] == 0:
                self.verdict[i] = verdict
        return None

    def replay(self, ReplayTable table, uint64_t now_ms, uint64_t horizon_ms):
        """The last stage: records the nonces of the items still without a verdict, in
        order; a pair already recorded makes the item REPLAYED, a full table BUSY."""
        cdef Py_ssize_t i, m = 0
        cdef uint8_t *keys = <uint8_t *>malloc(32 * self.n + 1)
        cdef const uint8_t **kp = <const uint8_t **>malloc(sizeof(uint8_t *) * (self.n + 1))
        cdef uint64_t *exp = <uint64_t *>malloc(sizeof(uint64_t) * (self.n + 1))
        cdef size_t *owner = <size_t *>malloc(sizeof(size_t) * (self.n + 1))
        cdef uint8_t *states = <uint8_t *>malloc(self.n + 1)
        try:
            if not (keys and kp and exp and owner and states):
                raise MemoryError()
            with nogil:
                for i in range(self.n):
                    if self.verdict[i] != 0:
                        continue
                    memcpy(keys + 32 * m, self.ptrs[i] + self.parsed[i].serial, 16)
                    memcpy(keys + 32 * m + 16, self.ptrs[i] + self.parsed[i].nonce, 16)
                    kp[m] = keys + 32 * m
                    exp[m] = self.parsed[i].timestamp_ms + horizon_ms
                    owner[m] = i
                    m += 1
                table._check(kp, exp, m, now_ms, states)
                for i in range(m):
                    if states[i] == _REPLAY_SEEN:
                        self.verdict[owner[i]] = _VERDICT_REPLAYED
                    elif states[i] == _REPLAY_NO_ROOM:
                        self.verdict[owner[i]] = _VERDICT_BUSY
        finally:
            free(keys)
            free(kp)
            free(exp)
            free(owner)
            free(states)

    def fields(self, Py_ssize_t i):
        """(issuer_key_id, card_number, region, channel, serial, nonce, timestamp_ms,
        purpose, not_after) of a well-formed item; None for a malformed one."""
        cdef esc_parsed *o = &self.parsed[i]
        cdef const uint8_t *d = self.ptrs[i]
        if not 0 <= i < self.n:
            raise IndexError(i)
        if o.verdict == 1 or o.verdict == 0xff:
            return None
        return (
            _ascii(d, o.key_id, o.key_id_len),
            _ascii(d, o.card, 9),
            _ascii(d, o.region, 6),
            _ascii(d, o.channel, o.channel_len),
            _bytes(d, o.serial, 16),
            _bytes(d, o.nonce, 16),
            o.timestamp_ms,
            o.purpose,
            o.not_after,
        )


cdef void *_grow(void *p, size_t size) except NULL:
    cdef void *q = realloc(p, size)
    if q == NULL:
        raise MemoryError()
    return q
