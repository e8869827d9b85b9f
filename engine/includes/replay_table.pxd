# The one-time-nonce table (engine/native/replay_table.h).

from libc.stdint cimport uint8_t, uint64_t

cdef extern from "native/replay_table.h" nogil:
    ctypedef struct esc_replay_table:
        pass
    enum:
        ESC_REPLAY_FRESH
        ESC_REPLAY_SEEN
        ESC_REPLAY_NO_ROOM
    esc_replay_table *esc_replay_new(size_t max_live, uint64_t seed, int shared)
    void esc_replay_delete(esc_replay_table *t)
    int esc_replay_check(esc_replay_table *t, const uint8_t *const *keys,
                         const uint64_t *expires_ms, size_t n, uint64_t now_ms,
                         uint8_t *states)
    size_t esc_replay_live(esc_replay_table *t, uint64_t now_ms)
    void esc_replay_seen(esc_replay_table *t, const uint8_t *const *keys, size_t n,
                         uint64_t now_ms, uint8_t *seen)
    void esc_replay_budgets(size_t n, size_t *move, size_t *count)
    size_t esc_replay_max_slots(size_t max_live)
    void esc_replay_debug(esc_replay_table *t, size_t out[7])
    void esc_replay_test_die(int point, size_t after)
