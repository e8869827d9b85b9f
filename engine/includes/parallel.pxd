# The thread pool of the batch calls (engine/native/parallel.h).

cdef extern from "native/parallel.h":
    int esc_cpu_count()
    unsigned long long esc_parallel_cpu_ns()
