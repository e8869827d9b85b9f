# A batch of presentations on its way through the pipeline, and the one-time-nonce table.
#
# The stages (engine/verifier.py drives them) each work on the whole batch in C:
# check (parse, trust, time, both signatures; engine/native/presentation.c), the
# revocation verdicts for the ids it hands out as numpy arrays, and the replay check
# (engine/native/replay_table.c).  No stage creates a Python object per presentation.

import collections

from engine.includes.presentation cimport esc_check_presentations, esc_parsed
from engine.includes.replay_table cimport (
    ESC_REPLAY_NO_ROOM,
    ESC_REPLAY_SEEN,
    esc_replay_budgets,
    esc_replay_check,
    esc_replay_debug,
    esc_replay_delete,
    esc_replay_live,
    esc_replay_max_slots,
    esc_replay_new,
    esc_replay_seen,
    esc_replay_test_die,
)
from engine.includes.verdicts cimport (
    ESC_BAD_HOLDER_SIGNATURE,
    ESC_BAD_ISSUER_SIGNATURE,
    ESC_BUSY,
    ESC_CARD_REVOKED,
    ESC_CHANNEL_REVOKED,
    ESC_CREDENTIAL_REVOKED,
    ESC_EXPIRED,
    ESC_ISSUER_INVALID,
    ESC_MALFORMED,
    ESC_NOT_YET_VALID,
    ESC_OK,
    ESC_REPLAYED,
    ESC_REVOCATION_DATA_STALE,
    ESC_STALE,
    ESC_UNKNOWN_CHANNEL,
    ESC_UNKNOWN_ISSUER,
)
from engine.includes.sigbatch cimport ESC_VERIFY_AUTO

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

# The states set_replay_states takes: those of ReplayTable.check_and_record, and those a
# replay store outside the process adds (engine/replay.py): it could not be asked; the
# key was recorded before for the same relying party (a safe retry: OK again, marked
# repeat); the key is refused under the lost-store rule (REPLAYED).
cdef enum:
    _STORE_UNAVAILABLE = 3
    _STORE_REPEAT = 4
    _STORE_LOST = 5

# esc_parsed.verdict of an item the check stage ran out of memory on.
cdef enum:
    _CHECK_NO_MEMORY = 0xff


cdef class ReplayTable:
    """One-time nonces: 32-byte keys (serial + nonce) remembered until they expire.

    ``check_and_record(keys, expires_ms, now_ms, tags=None)`` gives, for each key in
    order (tags are ignored: this table keeps none),
    0 (fresh, now recorded), 1 (seen before and not expired) or 2 (no room: the table
    holds ``capacity`` live keys; nothing live is ever forgotten to make room).

    ``shared=True``: the table lives in memory shared with the processes forked after
    it is made (one table for a host's worker processes; replay_table.h).
    """

    def __cinit__(self, size_t capacity=10_000_000, bint shared=False):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        cdef uint64_t seed = int.from_bytes(os.urandom(8), "little")
        self.table = esc_replay_new(capacity, seed, shared)
        if self.table == NULL:
            raise MemoryError()
        self.capacity = capacity
        self.shared = shared

    def __dealloc__(self):
        esc_replay_delete(self.table)  # shared: this process's mapping only

    def check_and_record(self, keys, expires_ms, uint64_t now_ms, tags=None):
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
            esc_replay_check(self.table, col.ptrs, <const uint64_t *>cnp.PyArray_DATA(exp),
                             <size_t>n, now_ms, <uint8_t *>cnp.PyArray_DATA(states))
        return states.tolist()

    def seen(self, keys, uint64_t now_ms):
        """For each 32-byte key, whether it has a live record (a bool array); records
        nothing: the look-up of a first-level filter."""
        cdef _Column col = _Column(keys, "keys")
        cdef Py_ssize_t i, n = col.n
        for i in range(n):
            if col.lens[i] != 32:
                raise ValueError(f"keys[{i}]: expected 32 bytes, got {col.lens[i]}")
        cdef cnp.ndarray out = np.zeros(n, dtype=np.uint8)
        with nogil:
            esc_replay_seen(self.table, col.ptrs, <size_t>n, now_ms,
                            <uint8_t *>cnp.PyArray_DATA(out))
        return out.astype(bool)

    def live(self, uint64_t now_ms):
        """Keys not expired at ``now_ms``."""
        return esc_replay_live(self.table, now_ms)

    cdef int _check(self, const uint8_t *const *keys, const uint64_t *expires, size_t n,
                    uint64_t now_ms, uint8_t *states) noexcept nogil:
        # -1 (out of memory) needs no handling: the states are then NO_ROOM (BUSY).
        return esc_replay_check(self.table, keys, expires, n, now_ms, states)

    def _upkeep(self):
        """For tests: the table's incremental upkeep as of the last check, and how
        many times a lock holder was found dead."""
        cdef size_t out[7]
        esc_replay_debug(self.table, out)
        return {"moved": out[0], "counted": out[1], "live_bound": out[2], "slots": out[3],
                "migrating": bool(out[4]), "counting": bool(out[5]),
                "owner_deaths": out[6]}

    @staticmethod
    def _budgets(size_t n):
        """For tests: the most slots a check of n keys moves, and counts."""
        cdef size_t move, count
        esc_replay_budgets(n, &move, &count)
        return move, count

    @staticmethod
    def _max_slots(size_t capacity):
        """For tests: the most slots a table of this capacity ever has (a shared
        table's halves)."""
        return esc_replay_max_slots(capacity)

    @staticmethod
    def _die_at(int point, size_t after=0):
        """For tests: this process kills itself with SIGKILL, holding the table's lock,
        the (after + 1)th time it passes ``point`` (ESC_REPLAY_DIE_*: 1 after a key, 2
        after an entry migrated, 3/4 a migration's start recorded / half applied, 5/6
        its end, 7 a piece of a retired table given back, not counted); 0 disarms."""
        esc_replay_test_die(point, after)


PresentationFields = collections.namedtuple(
    "PresentationFields",
    ["issuer_key_id", "card_number", "region", "channel", "serial", "nonce",
     "timestamp_ms", "purpose", "not_after"],
    module="engine._core",
)
PresentationFields.__doc__ = """The fields of a well-formed presentation (VerifyBatch.fields)."""

# tuple.__new__ fills a PresentationFields from a tuple without the generated
# __new__'s Python frame: a third of the time.
cdef object _tuple_new = tuple.__new__


cdef class VerifyBatch:
    """Presentations verified together; the verdicts fill in stage by stage.

    Verdict 0 means "not failed yet" until the replay stage, after which it is OK.
    ``check`` runs first; the stages and accessors that read what it parsed refuse to
    run before it.  The server's batches are RequestBatch, which also records the
    requests the presentations came in.
    """

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
        free(self.repeat)

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
        self.repeat = <uint8_t *>_grow(self.repeat, cap)
        # Items are only added before check, which writes every verdict: zeros here
        # make the verdicts read before it "not failed yet", never stale memory.
        memset(self.verdict + self.cap, 0, cap - self.cap)
        memset(self.repeat + self.cap, 0, cap - self.cap)
        self.cap = cap
        return 0

    cdef int _require_checked(self) except -1:
        if not self.checked:
            raise RuntimeError("the batch has not been checked yet")
        return 0

    def add(self, presentations):
        """Appends presentations (bytes objects): all of them or, raising, none."""
        cdef object p
        if self.checked:
            raise RuntimeError("the batch has already been checked")
        for p in presentations:
            if not PyBytes_Check(p):
                raise TypeError(f"presentations must be bytes, not {type(p).__name__}")
        self._reserve(len(presentations))
        for p in presentations:
            self.ptrs[self.n] = <const uint8_t *>PyBytes_AS_STRING(p)
            self.lens[self.n] = <size_t>PyBytes_GET_SIZE(p)
            self.n += 1
            self.keep.append(p)

    def check(self, TrustTable table, int64_t now_ms, int64_t freshness_ms,
              int64_t skew_ms, threads=None, int method=ESC_VERIFY_AUTO):
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
                # The stage ran out of memory: never OK, the caller retries.
                self.verdict[i] = (ESC_BUSY if self.parsed[i].verdict == _CHECK_NO_MEMORY
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

    def repeats(self):
        """Indices (intp) of the OK items answered as a repeat (a safe retry)."""
        cdef Py_ssize_t i
        return np.array([i for i in range(self.n) if self.repeat[i] and self.verdict[i] == 0],
                        dtype=np.intp)

    def verdict_of(self, Py_ssize_t i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.verdict[i]

    def detail(self, Py_ssize_t i):
        """What the check stage found wrong with item i (presentation.h's detail codes)."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        self._require_checked()
        return self.parsed[i].detail

    def presentation(self, Py_ssize_t i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return _bytes(self.ptrs[i], 0, self.lens[i])

    def fields(self, Py_ssize_t i):
        """The PresentationFields of a well-formed item; None for a malformed one."""
        cdef esc_parsed *o
        cdef const uint8_t *d
        if not 0 <= i < self.n:
            raise IndexError(i)
        self._require_checked()
        o = &self.parsed[i]
        d = self.ptrs[i]
        if o.verdict == ESC_MALFORMED or o.verdict == _CHECK_NO_MEMORY:
            return None
        return _tuple_new(PresentationFields, (
            _ascii(d, o.key_id, o.key_id_len),
            _ascii(d, o.card, 9),
            _ascii(d, o.region, 6),
            _ascii(d, o.channel, o.channel_len),
            _bytes(d, o.serial, 16),
            _bytes(d, o.nonce, 16),
            o.timestamp_ms,
            o.purpose,
            o.not_after,
        ))

    cdef Py_ssize_t _undecided(self) noexcept nogil:
        """How many items have no verdict yet."""
        cdef Py_ssize_t i, m = 0
        for i in range(self.n):
            m += self.verdict[i] == 0
        return m

    def candidates(self):
        """(indices, card numbers as S9, serials as S16) of the items still without a verdict."""
        self._require_checked()
        cdef Py_ssize_t i, k = 0, m = self._undecided()
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

    # --- the replay stage -----------------------------------------------------------
    # In process: replay(), one native call.  Against a replay store outside the
    # process: replay_candidates() gives the keys to ask it about, set_replay_states()
    # takes its answers; the two give the verdicts replay() gives for the same answers.

    cdef Py_ssize_t _replay_keys(self, uint8_t *keys, uint64_t *expires, Py_ssize_t *owner,
                                 uint64_t horizon_ms) noexcept nogil:
        """The replay key (serial, then nonce), expiry and index of each item still
        without a verdict, in order (room for _undecided() of each); returns how many."""
        cdef Py_ssize_t i, m = 0
        for i in range(self.n):
            if self.verdict[i] != 0:
                continue
            memcpy(keys + 32 * m, self.ptrs[i] + self.parsed[i].serial, 16)
            memcpy(keys + 32 * m + 16, self.ptrs[i] + self.parsed[i].nonce, 16)
            expires[m] = self.parsed[i].timestamp_ms + horizon_ms
            owner[m] = i
            m += 1
        return m

    def replay(self, ReplayTable table, uint64_t now_ms, uint64_t horizon_ms):
        """The last stage: records the nonces of the items still without a verdict, in
        order; a pair already recorded makes the item REPLAYED, a full table BUSY."""
        self._require_checked()
        cdef uint8_t *keys = <uint8_t *>malloc(32 * self.n + 1)
        cdef const uint8_t **kp = <const uint8_t **>malloc(sizeof(uint8_t *) * (self.n + 1))
        cdef uint64_t *exp = <uint64_t *>malloc(sizeof(uint64_t) * (self.n + 1))
        cdef Py_ssize_t *owner = <Py_ssize_t *>malloc(sizeof(Py_ssize_t) * (self.n + 1))
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
                      uint64_t *exp, Py_ssize_t *owner, uint8_t *states, uint64_t now_ms,
                      uint64_t horizon_ms) noexcept nogil:
        cdef Py_ssize_t i, m = self._replay_keys(keys, exp, owner, horizon_ms)
        for i in range(m):
            kp[i] = keys + 32 * i
        table._check(kp, exp, m, now_ms, states)
        for i in range(m):
            self._replay_verdict(owner[i], states[i])

    cdef void _replay_verdict(self, Py_ssize_t i, uint8_t state) noexcept nogil:
        """Item i's verdict from its replay state (the one mapping of both paths):
        seen before is REPLAYED; no room, or a store that could not answer, BUSY."""
        if state == ESC_REPLAY_SEEN or state == _STORE_LOST:
            self.verdict[i] = ESC_REPLAYED
        elif state == _STORE_REPEAT:
            self.repeat[i] = 1
        elif state == ESC_REPLAY_NO_ROOM or state == _STORE_UNAVAILABLE:
            self.verdict[i] = ESC_BUSY

    def replay_candidates(self, uint64_t horizon_ms):
        """(idx intp (m,), keys uint8 (m, 32), expires uint64 (m,)) of the items still
        without a verdict, in order: each item's replay key (its 16-byte serial, then
        its 16-byte nonce, as replay() records it) and timestamp_ms + horizon_ms."""
        self._require_checked()
        cdef Py_ssize_t m = self._undecided()
        idx = np.empty(m, dtype=np.intp)
        keys = np.empty((m, 32), dtype=np.uint8)
        expires = np.empty(m, dtype=np.uint64)
        self._replay_keys(<uint8_t *>cnp.PyArray_DATA(keys),
                          <uint64_t *>cnp.PyArray_DATA(expires),
                          <Py_ssize_t *>cnp.PyArray_DATA(idx), horizon_ms)
        return idx, keys, expires

    def set_replay_states(self, idx, states):
        """The replay store's answers for the items at ``idx`` (replay_candidates'):
        0 fresh (no change), 1 replayed (REPLAYED), 2 no room or 3 store unavailable
        (BUSY), 4 repeat (OK again, marked repeat: a safe retry), 5 refused under the
        lost-store rule (REPLAYED).  Only items still without a verdict change.
        Everything is checked before anything changes: an index out of range raises
        IndexError, a state outside 0-5 or lengths that differ ValueError."""
        cdef cnp.ndarray ia = np.asarray(idx, dtype=np.intp)
        cdef cnp.ndarray sa = np.asarray(states)
        if ia.ndim != 1 or sa.ndim != 1:
            raise ValueError("idx and states must be 1-D")
        if ia.shape[0] != sa.shape[0]:
            raise ValueError(f"idx and states differ in length ({ia.shape[0]}, {sa.shape[0]})")
        if sa.shape[0] and (sa.dtype.kind not in "iu" or sa.min() < 0
                            or sa.max() > _STORE_LOST):
            raise ValueError("replay states must be integers 0-5")
        ia = np.ascontiguousarray(ia)
        sa = np.ascontiguousarray(sa, dtype=np.uint8)
        cdef Py_ssize_t *ip = <Py_ssize_t *>cnp.PyArray_DATA(ia)
        cdef const uint8_t *sp = <const uint8_t *>cnp.PyArray_DATA(sa)
        cdef Py_ssize_t j, i, m = ia.shape[0]
        for j in range(m):
            if not 0 <= ip[j] < self.n:
                raise IndexError(ip[j])
        for j in range(m):
            i = ip[j]
            if self.verdict[i] == 0:
                self._replay_verdict(i, sp[j])
