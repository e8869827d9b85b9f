/* Splitting a batch across threads.
 *
 * The native core is called with whole batches and the GIL released; each call
 * splits its items into contiguous ranges, runs them on short-lived pthreads (the
 * calling thread takes the first range) and joins before returning, so no state
 * outlives a call and no pool has to be shut down at interpreter exit.
 */
#ifndef ESC_PARALLEL_H
#define ESC_PARALLEL_H

#include <stddef.h>
#include <stdint.h>

typedef void (*esc_range_fn)(void *ctx, size_t begin, size_t end);

/* Runs fn(ctx, begin, end) over [0, n) in at most `threads` ranges of at least
 * `min_chunk` items.  Falls back to fewer threads (down to the caller alone) when
 * a thread cannot be created, so it always completes.  Returns the number of
 * ranges used. */
int esc_parallel_for(size_t n, int threads, size_t min_chunk, esc_range_fn fn, void *ctx);

/* Number of online CPUs (at least 1). */
int esc_cpu_count(void);

/* CPU time (nanoseconds, all threads) spent inside esc_parallel_for work since the
 * process started: what the server reports as time in native verification. */
uint64_t esc_parallel_cpu_ns(void);

#endif
