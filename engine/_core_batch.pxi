# A batch of presentations on its way through the pipeline, and the one-time-nonce table.
#
# The stages (engine/verifier.py drives them) each work on the whole batch in C:
# check (parse, trust, time, both signatures; engine/native/presentation.c), the
# revocation verdicts for the ids it hands out as numpy arrays, and the replay check
# (engine/native/replay_table.c).  No stage creates a Python object per presentation.

from cpython.bytes cimport PyBytes_AS_STRING
from libc.string cimport memset, strlen

cdef extern from "native/replay_table.h" nogil:
    ctypedef struct esc_replay_table:
        pass
    int esc_replay_init(esc_replay_table *t, size_t max_live, uint64_t seed)
    void esc_replay_free(esc_replay_table *t)
    int esc_replay_check(esc_replay_table *t, const uint8_t *const *keys,
                         const uint64_t *expires_ms, size_t n, uint64_t now_ms,
                         uint8_t *states)
    size_t esc_replay_live(esc_replay_table *t, uint64_t now_ms)
    void esc_replay_budgets(size_t n, size_t *move, size_t *count)
    void esc_replay_debug(esc_replay_table *t, size_t out[6])

cdef extern from "native/verdicts.h":
    enum:
        ESC_OK
        ESC_MALFORMED
        ESC_UNKNOWN_ISSUER
        ESC_BAD_ISSUER_SIGNATURE
        ESC_BAD_HOLDER_SIGNATURE
        ESC_ISSUER_INVALID
        ESC_UNKNOWN_CHANNEL
        ESC_CHANNEL_REVOKED
        ESC_NOT_YET_VALID
        ESC_EXPIRED
        ESC_STALE
        ESC_REVOCATION_DATA_STALE
        ESC_CARD_REVOKED
        ESC_CREDENTIAL_REVOKED
        ESC_REPLAYED
        ESC_BUSY

# The native verdict codes by name, for tests/test_verdicts.py to hold against
# engine.verdicts (one definition each side, checked to agree).
VERDICT_CODES = {
    "OK": ESC_OK,
    "MALFORMED": ESC_MALFORMED,
    "UNKNOWN_ISSUER": ESC_UNKNOWN_ISSUER,
    "BAD_ISSUER_SIGNATURE": ESC_BAD_ISSUER_SIGNATURE,
    "BAD_HOLDER_SIGNATURE": ESC_BAD_HOLDER_SIGNATURE,
    "ISSUER_INVALID": ESC_ISSUER_INVALID,
    "UNKNOWN_CHANNEL": ESC_UNKNOWN_CHANNEL,
    "CHANNEL_REVOKED": ESC_CHANNEL_REVOKED,
    "NOT_YET_VALID": ESC_NOT_YET_VALID,
    "EXPIRED": ESC_EXPIRED,
    "STALE": ESC_STALE,
    "REVOCATION_DATA_STALE": ESC_REVOCATION_DATA_STALE,
    "CARD_REVOKED": ESC_CARD_REVOKED,
    "CREDENTIAL_REVOKED": ESC_CREDENTIAL_REVOKED,
    "REPLAYED": ESC_REPLAYED,
    "BUSY": ESC_BUSY,
}

cdef enum:
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

    def _upkeep(self):
        """For tests: the table's incremental upkeep as of the last check."""
        cdef size_t out[6]
        esc_replay_debug(&self.table, out)
        return {"moved": out[0], "counted": out[1], "live_bound": out[2], "slots": out[3],
                "migrating": bool(out[4]), "counting": bool(out[5])}

    @staticmethod
    def _budgets(size_t n):
        """For tests: the most slots a check of n keys moves, and counts."""
        cdef size_t move, count
        esc_replay_budgets(n, &move, &count)
        return move, count


cdef struct _Request:
    uint64_t id
    uint32_t slot  # the connection it came on
    uint32_t first, count  # its presentations: items [first, first + count)
    uint8_t is_batch
    double arrival


cdef class VerifyBatch:
    """Presentations verified together; the verdicts fill in stage by stage.

    Verdict 0 means "not failed yet" until the replay stage, after which it is OK.
    In the server a batch also records the requests its presentations came in
    (``add_frames``, ``add_request``) and encodes their responses (``encode``).
    """
    cdef list keep  # the objects that own the presentation bytes
    cdef _Request *reqs
    cdef Py_ssize_t nreq, reqcap
    cdef readonly list contexts  # per request: its context map or None (add_request only)
    cdef readonly double first_arrival
    cdef const uint8_t **ptrs
    cdef size_t *lens
    cdef esc_parsed *parsed
    cdef uint8_t *verdict
    cdef Py_ssize_t n, cap
    cdef bint checked

    def __cinit__(self, presentations=()):
        self.keep = []
        self.contexts = []
        self.n = 0
        self.cap = 0
        self._reserve(len(presentations))
        self.add(presentations)

    def __dealloc__(self):
        free(self.reqs)
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
                self.verdict[i] = (ESC_BUSY if self.parsed[i].verdict == 0xff
                                   else self.parsed[i].verdict)

    def verdicts(self):
        """The verdict codes so far (a numpy uint8 copy)."""
        out = np.empty(self.n, dtype=np.uint8)
        if self.n:
            memcpy(<uint8_t *>cnp.PyArray_DATA(out), self.verdict, self.n)
        return out

    def verdict_counts(self):
        """How many items have each verdict: a list indexed by verdict code (0-255)."""
        cdef Py_ssize_t counts[256]
        cdef Py_ssize_t i
        memset(counts, 0, sizeof(counts))
        for i in range(self.n):
            counts[self.verdict[i]] += 1
        return [counts[i] for i in range(256)]

    def with_verdicts(self, const uint8_t[::1] codes not None):
        """Indexes of the items whose verdict is one of ``codes`` (a short list)."""
        cdef bint wanted[256]
        cdef Py_ssize_t i
        cdef list out = []
        memset(wanted, 0, sizeof(wanted))
        for i in range(codes.shape[0]):
            wanted[codes[i]] = True
        for i in range(self.n):
            if wanted[self.verdict[i]]:
                out.append(i)
        return out

    def verdict_of(self, Py_ssize_t i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.verdict[i]

    def detail(self, Py_ssize_t i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.parsed[i].detail

    def presentation(self, Py_ssize_t i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return _bytes(self.ptrs[i], 0, self.lens[i])

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
        cdef uint8_t *keys = <uint8_t *>malloc(32 * self.n + 1)
        cdef const uint8_t **kp = <const uint8_t **>malloc(sizeof(uint8_t *) * (self.n + 1))
        cdef uint64_t *exp = <uint64_t *>malloc(sizeof(uint64_t) * (self.n + 1))
        cdef size_t *owner = <size_t *>malloc(sizeof(size_t) * (self.n + 1))
        cdef uint8_t *states = <uint8_t *>malloc(self.n + 1)
        try:
            if not (keys and kp and exp and owner and states):
                raise MemoryError()
            if self.n >= _NOGIL_ITEMS:  # else microseconds: keep the GIL (_core.pyx)
                with nogil:
                    self._replay(table, keys, kp, exp, owner, states, now_ms, horizon_ms)
            else:
                self._replay(table, keys, kp, exp, owner, states, now_ms, horizon_ms)
        finally:
            free(keys)
            free(kp)
            free(exp)
            free(owner)
            free(states)

    cdef void _replay(self, ReplayTable table, uint8_t *keys, const uint8_t **kp,
                      uint64_t *exp, size_t *owner, uint8_t *states, uint64_t now_ms,
                      uint64_t horizon_ms) noexcept nogil:
        cdef Py_ssize_t i, m = 0
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
                self.verdict[owner[i]] = ESC_REPLAYED
            elif states[i] == _REPLAY_NO_ROOM:
                self.verdict[owner[i]] = ESC_BUSY

    def fields(self, Py_ssize_t i):
        """(issuer_key_id, card_number, region, channel, serial, nonce, timestamp_ms,
        purpose, not_after) of a well-formed item; None for a malformed one."""
        cdef esc_parsed *o
        cdef const uint8_t *d
        if not 0 <= i < self.n:
            raise IndexError(i)
        o = &self.parsed[i]
        d = self.ptrs[i]
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

    # --- the server's side ----------------------------------------------------------
    @property
    def requests(self):
        return self.nreq

    cdef int _add_request(self, uint64_t rid, uint32_t slot, uint8_t is_batch, uint32_t count,
                          double now) except -1:
        if self.nreq == self.reqcap:
            self.reqcap = max(16, 2 * self.reqcap)
            self.reqs = <_Request *>_grow(self.reqs, self.reqcap * sizeof(_Request))
        if self.nreq == 0:
            self.first_arrival = now
        self.reqs[self.nreq].id = rid
        self.reqs[self.nreq].slot = slot
        self.reqs[self.nreq].first = <uint32_t>self.n
        self.reqs[self.nreq].count = count
        self.reqs[self.nreq].is_batch = is_batch
        self.reqs[self.nreq].arrival = now
        self.nreq += 1
        return 0

    def add_request(self, uint32_t slot, uint64_t rid, bint is_batch, presentations,
                    double now, context=None):
        """One verify (one presentation) or verify_batch request parsed in Python."""
        if self.checked:
            raise RuntimeError("the batch has already been checked")
        self._add_request(rid, slot, is_batch, <uint32_t>len(presentations), now)
        self.contexts.append(context)
        self.add(presentations)

    def add_frames(self, uint32_t slot, list payloads, Py_ssize_t start, double now,
                   Py_ssize_t item_limit, Py_ssize_t conn_budget, Py_ssize_t server_budget,
                   uint32_t max_items, bytes server_reason=b"server in-flight limit"):
        """Takes the verify and verify_batch requests of payloads[start:] in C.

        Stops before a request that would make the batch hold more than
        ``item_limit`` presentations (an empty batch takes any one request whole): the
        caller then seals this batch and goes on with a new one.  A request beyond what
        the connection or the server may still have in flight (``conn_budget``,
        ``server_budget``, decreasing as requests are taken) is answered BUSY at once
        (for the server's, with ``server_reason``).  Returns
        (next index, presentations taken, indexes of payloads left to the Python path,
        BUSY response frames as bytes, presentations answered BUSY for the connection's
        limit, and for the server's).
        """
        cdef Py_ssize_t i = start, taken = 0, n_payloads = len(payloads)
        cdef Py_ssize_t busy_conn = 0, busy_server = 0
        cdef list slow = []
        cdef bytearray busy = bytearray()
        cdef object payload
        cdef const uint8_t *p
        cdef esc_request req
        cdef uint32_t j
        if self.checked:
            raise RuntimeError("the batch has already been checked")
        cdef uint32_t *off = <uint32_t *>malloc((<size_t>max_items + 1) * sizeof(uint32_t))
        cdef uint32_t *ln = <uint32_t *>malloc((<size_t>max_items + 1) * sizeof(uint32_t))
        try:
            if off == NULL or ln == NULL:
                raise MemoryError()
            while i < n_payloads:
                payload = payloads[i]
                p = <const uint8_t *>PyBytes_AS_STRING(payload)
                if not esc_parse_verify_request(p, <size_t>PyBytes_GET_SIZE(payload),
                                                max_items, &req, off, ln):
                    slow.append(i)
                    i += 1
                    continue
                if req.n_items > conn_budget - taken:
                    busy += _busy_frame(req.id, req.is_batch, req.n_items,
                                        b"connection in-flight limit")
                    busy_conn += req.n_items
                    i += 1
                    continue
                if req.n_items > server_budget - taken:
                    busy += _busy_frame(req.id, req.is_batch, req.n_items, server_reason)
                    busy_server += req.n_items
                    i += 1
                    continue
                if self.nreq and self.n + req.n_items > item_limit:
                    break
                self._add_request(req.id, slot, req.is_batch, req.n_items, now)
                self.contexts.append(None)
                self._reserve(req.n_items)
                for j in range(req.n_items):
                    self.ptrs[self.n] = p + off[j]
                    self.lens[self.n] = ln[j]
                    self.n += 1
                self.keep.append(payload)
                taken += req.n_items
                i += 1
        finally:
            free(off)
            free(ln)
        return i, taken, slow, bytes(busy), busy_conn, busy_server

    def arrivals(self):
        """Arrival time of each request (numpy float64, in request order)."""
        out = np.empty(self.nreq, dtype=np.float64)
        cdef double *op = <double *>cnp.PyArray_DATA(out)
        cdef Py_ssize_t r
        for r in range(self.nreq):
            op[r] = self.reqs[r].arrival
        return out

    def request_verdicts(self, Py_ssize_t r):
        """(connection slot, request id, verdict codes) of request r (audit logging)."""
        if not 0 <= r < self.nreq:
            raise IndexError(r)
        cdef _Request *q = &self.reqs[r]
        return q.slot, q.id, [self.verdict[q.first + k] for k in range(q.count)]

    def encode(self, dict reasons):
        """The responses, grouped per connection: a list of (slot, frames, presentations).

        ``reasons`` maps item index to a UTF-8 reason (bytes); OK items carry their
        claims, read straight from the presentation bytes.
        """
        cdef Py_ssize_t i, r, k
        cdef esc_result *res = <esc_result *>malloc((self.n + 1) * sizeof(esc_result))
        cdef esc_claims *cl = <esc_claims *>malloc((self.n + 1) * sizeof(esc_claims))
        cdef Py_ssize_t *order = <Py_ssize_t *>malloc((self.nreq + 1) * sizeof(Py_ssize_t))
        cdef esc_parsed *o
        cdef const uint8_t *d
        cdef _Request *q
        cdef object reason
        cdef list out = []
        cdef size_t size, used
        cdef uint32_t slot
        cdef Py_ssize_t items
        cdef bytes frames
        cdef uint8_t *w
        try:
            if res == NULL or cl == NULL or order == NULL:
                raise MemoryError()
            for i in range(self.n):
                res[i].verdict = self.verdict[i]
                res[i].reason = NULL
                res[i].reason_len = 0
                res[i].claims = NULL
                if self.verdict[i] == ESC_OK:
                    o = &self.parsed[i]
                    d = self.ptrs[i]
                    cl[i].card_number = d + o.card
                    cl[i].region = d + o.region
                    cl[i].channel = d + o.channel
                    cl[i].channel_len = o.channel_len
                    cl[i].issuer = d + o.key_id
                    cl[i].issuer_len = o.key_id_len
                    cl[i].serial = d + o.serial
                    cl[i].purpose = o.purpose
                    cl[i].presented_at_ms = o.timestamp_ms
                    cl[i].valid_until = o.not_after
                    res[i].claims = &cl[i]
            for i, reason in reasons.items():
                if not 0 <= i < self.n:
                    raise IndexError(i)
                res[i].reason = PyBytes_AS_STRING(reason)
                res[i].reason_len = <size_t>PyBytes_GET_SIZE(reason)
            # Requests grouped by connection, in arrival order within each.
            for r in range(self.nreq):
                order[r] = r
            _sort_by_slot(order, self.nreq, self.reqs)
            r = 0
            while r < self.nreq:
                slot = self.reqs[order[r]].slot
                size = 0
                items = 0
                k = r
                while k < self.nreq and self.reqs[order[k]].slot == slot:
                    q = &self.reqs[order[k]]
                    size += esc_response_bound(res + q.first, q.count, q.is_batch)
                    items += q.count
                    k += 1
                # The bound assumes the widest ids; the frames are cut to what was written.
                w = <uint8_t *>malloc(size + 1)
                if w == NULL:
                    raise MemoryError()
                try:
                    used = 0
                    while r < k:
                        q = &self.reqs[order[r]]
                        if q.is_batch:
                            used += esc_encode_batch_response(w + used, size - used, q.id,
                                                              res + q.first, q.count)
                        else:
                            used += esc_encode_verify_response(w + used, size - used, q.id,
                                                               res + q.first)
                        r += 1
                    frames = PyBytes_FromStringAndSize(<const char *>w, used)
                finally:
                    free(w)
                out.append((slot, frames, items))
        finally:
            free(res)
            free(cl)
            free(order)
        return out


cdef bytes _busy_frame(uint64_t rid, uint8_t is_batch, uint32_t count, const char *why):
    """BUSY for every presentation of a request the limits do not let in."""
    cdef esc_result *res = <esc_result *>malloc((count + 1) * sizeof(esc_result))
    cdef uint32_t k
    cdef size_t size
    cdef uint8_t *w = NULL
    if res == NULL:
        raise MemoryError()
    try:
        for k in range(count):
            res[k].verdict = ESC_BUSY
            res[k].reason = why
            res[k].reason_len = strlen(why)
            res[k].claims = NULL
        size = esc_response_bound(res, count if is_batch else 1, is_batch)
        w = <uint8_t *>malloc(size + 1)
        if w == NULL:
            raise MemoryError()
        if is_batch:
            size = esc_encode_batch_response(w, size, rid, res, count)
        else:
            size = esc_encode_verify_response(w, size, rid, res)
        return PyBytes_FromStringAndSize(<const char *>w, size)
    finally:
        free(res)
        free(w)


cdef void _sort_by_slot(Py_ssize_t *order, Py_ssize_t n, const _Request *reqs) noexcept:
    """Stable insertion sort of request indexes by connection slot; a batch holds few
    connections, mostly already grouped, so this is close to linear."""
    cdef Py_ssize_t i, j, v
    for i in range(1, n):
        v = order[i]
        j = i - 1
        while j >= 0 and reqs[order[j]].slot > reqs[v].slot:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = v


cdef void *_grow(void *p, size_t size) except NULL:
    cdef void *q = realloc(p, size)
    if q == NULL:
        raise MemoryError()
    return q
