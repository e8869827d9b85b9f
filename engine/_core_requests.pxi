# The server's batches: the requests their presentations came in, and the responses
# to them encoded in C (engine/native/wire.c), grouped per connection.
#
# A RequestBatch is a VerifyBatch (the pipeline runs on it unchanged) that also knows,
# for each request, its connection, id, items and arrival time.  Requests come in
# through add_frames (the fast path: raw payloads parsed in C) or add_request (ones
# parse_request read in Python).

from libc.string cimport strlen

from engine.includes.presentation cimport esc_parsed
from engine.includes.verdicts cimport ESC_BUSY, ESC_OK
from engine.includes.wire cimport (
    esc_claims,
    esc_encode_batch_response,
    esc_encode_verify_response,
    esc_parse_verify_request,
    esc_request,
    esc_response_bound,
    esc_result,
)


cdef class RequestBatch(VerifyBatch):
    """A server batch: presentations verified together, and the requests they came in.

    ``contexts[r]`` is request r's context (merchant_id / terminal_id) or None, where
    it was kept; ``first_arrival`` is the arrival time of the first request.
    """

    def __cinit__(self, *args, **kwargs):
        # VerifyBatch.__cinit__ has run with the same arguments; there must be none:
        # every presentation of a RequestBatch comes with its request.
        if args or kwargs:
            raise TypeError("RequestBatch() takes no arguments: add requests to it")
        self.contexts = []

    def __dealloc__(self):
        free(self.reqs)

    @property
    def requests(self):
        """How many requests the batch holds."""
        return self.nreq

    cdef int _add_request(self, uint64_t rid, uint32_t slot, uint8_t is_batch, uint32_t first,
                          uint32_t count, double now, object context) except -1:
        """Records a request: its presentations are items [first, first + count)."""
        if self.nreq == self.reqcap:
            self.reqcap = max(16, 2 * self.reqcap)
            self.reqs = <_Request *>_grow(self.reqs, self.reqcap * sizeof(_Request))
        if self.nreq == 0:
            self.first_arrival = now
        self.reqs[self.nreq].id = rid
        self.reqs[self.nreq].slot = slot
        self.reqs[self.nreq].first = first
        self.reqs[self.nreq].count = count
        self.reqs[self.nreq].is_batch = is_batch
        self.reqs[self.nreq].arrival = now
        self.contexts.append(context)
        self.nreq += 1
        return 0

    def add_request(self, uint32_t slot, uint64_t rid, bint is_batch, presentations,
                    double now, context=None):
        """One verify (one presentation) or verify_batch request parsed in Python."""
        if self.checked:
            raise RuntimeError("the batch has already been checked")
        cdef Py_ssize_t first = self.n
        self.add(presentations)  # all of them or, raising, none
        self._add_request(rid, slot, is_batch, <uint32_t>first, <uint32_t>(self.n - first), now,
                          context)

    def add_frames(self, uint32_t slot, list payloads, Py_ssize_t start, double now,
                   Py_ssize_t item_limit, Py_ssize_t conn_budget, Py_ssize_t server_budget,
                   uint32_t max_items, bytes server_reason=b"server in-flight limit", *,
                   bint keep_contexts=False):
        """Takes the verify and verify_batch requests of payloads[start:] in C.

        Stops before a request that would make the batch hold more than
        ``item_limit`` presentations (an empty batch takes any one request whole): the
        caller then seals this batch and goes on with a new one.  A request beyond what
        the connection or the server may still have in flight (``conn_budget``,
        ``server_budget``, decreasing as requests are taken) is answered BUSY at once
        (for the server's, with ``server_reason``).  Returns
        (next index, presentations taken, indexes of payloads left to the Python path,
        BUSY response frames as bytes, presentations answered BUSY for the connection's
        limit, and for the server's).  With ``keep_contexts`` each request taken keeps
        its context in ``contexts`` as parse_request reads it (for audit logging);
        without, None.
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
                if not PyBytes_Check(payload):
                    raise TypeError(f"payloads[{i}]: expected bytes, got {type(payload).__name__}")
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
                self._reserve(req.n_items)
                self._add_request(req.id, slot, req.is_batch, <uint32_t>self.n, req.n_items,
                                  now, _request_context(p, &req) if keep_contexts else None)
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
        cdef _Request *q
        if not 0 <= r < self.nreq:
            raise IndexError(r)
        q = &self.reqs[r]
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
            self._require_checked()
            if res == NULL or cl == NULL or order == NULL:
                raise MemoryError()
            for i in range(self.n):
                res[i].verdict = self.verdict[i]
                res[i].reason = NULL
                res[i].reason_len = 0
                res[i].claims = NULL
                res[i].repeat = 0
                if self.verdict[i] == ESC_OK:
                    res[i].repeat = self.repeat[i]
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
                if not PyBytes_Check(reason):
                    raise TypeError(f"reasons[{i}]: expected bytes, got {type(reason).__name__}")
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


cdef object _request_context(const uint8_t *p, const esc_request *req):
    """The request's context as parse_request reads it (merchant_id / terminal_id, the
    keys present), or None for none.  The values are ASCII: the parser takes only
    [A-Za-z0-9._:-]{1,64}, as parse_request does."""
    if not req.merchant_len and not req.terminal_len:
        return None
    cdef dict context = {}
    if req.merchant_len:
        context["merchant_id"] = _ascii(p, req.merchant_off, req.merchant_len)
    if req.terminal_len:
        context["terminal_id"] = _ascii(p, req.terminal_off, req.terminal_len)
    return context
