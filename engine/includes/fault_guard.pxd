# The SIGBUS guard of look-ups in mapped revocation data (engine/native/fault_guard.h).

cdef extern from "native/fault_guard.h" nogil:
    int esc_fault_guard_install()
    unsigned long esc_fault_guard_caught()
