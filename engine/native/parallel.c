#include "parallel.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#define ESC_MAX_THREADS 256

typedef struct {
    esc_range_fn fn;
    void *ctx;
    size_t begin, end;
} range_job;

static uint64_t cpu_ns_total;

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t esc_parallel_cpu_ns(void) { return __atomic_load_n(&cpu_ns_total, __ATOMIC_RELAXED); }

static void *run_range(void *arg)
{
    range_job *job = (range_job *)arg;
    uint64_t start = thread_cpu_ns();
    job->fn(job->ctx, job->begin, job->end);
    __atomic_fetch_add(&cpu_ns_total, thread_cpu_ns() - start, __ATOMIC_RELAXED);
    return NULL;
}

int esc_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

int esc_parallel_for(size_t n, int threads, size_t min_chunk, esc_range_fn fn, void *ctx)
{
    range_job jobs[ESC_MAX_THREADS];
    pthread_t tids[ESC_MAX_THREADS];
    int started[ESC_MAX_THREADS];
    size_t parts, i, step, pos;

    if (n == 0)
        return 0;
    if (min_chunk < 1)
        min_chunk = 1;
    if (threads < 1)
        threads = 1;
    if (threads > ESC_MAX_THREADS)
        threads = ESC_MAX_THREADS;
    parts = (size_t)threads;
    if (parts > n / min_chunk)
        parts = n / min_chunk;
    if (parts < 1)
        parts = 1;
    if (parts == 1) {
        jobs[0].fn = fn;
        jobs[0].ctx = ctx;
        jobs[0].begin = 0;
        jobs[0].end = n;
        run_range(&jobs[0]);
        return 1;
    }
    step = n / parts;
    pos = 0;
    for (i = 0; i < parts; i++) {
        jobs[i].fn = fn;
        jobs[i].ctx = ctx;
        jobs[i].begin = pos;
        /* The first n % parts ranges take one extra item. */
        pos += step + (i < n % parts ? 1 : 0);
        jobs[i].end = pos;
    }
    for (i = 1; i < parts; i++)
        started[i] = pthread_create(&tids[i], NULL, run_range, &jobs[i]) == 0;
    run_range(&jobs[0]);
    for (i = 1; i < parts; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else
            run_range(&jobs[i]); /* could not start a thread: do it here */
    }
    return (int)parts;
}
