#include "fault_guard.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>

/* initial-exec: the handler must not make the TLS allocator run (not async-signal-safe). */
static __thread sigjmp_buf *guard_jmp __attribute__((tls_model("initial-exec")));
static struct sigaction previous;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int install_rc = -1;
static unsigned long caught;

static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    sigjmp_buf *jb = guard_jmp;
    if (jb != NULL) {
        guard_jmp = NULL;
        __atomic_fetch_add(&caught, 1, __ATOMIC_RELAXED);
        siglongjmp(*jb, 1);
    }
    /* Not ours: hand it on as if we were not here. */
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction != NULL) {
            previous.sa_sigaction(sig, info, uctx);
            return;
        }
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    /* Default action: restore it and return; the faulting access runs again and the
     * process ends with SIGBUS, as it would have without the guard. */
    signal(sig, SIG_DFL);
}

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    install_rc = sigaction(SIGBUS, &sa, &previous) == 0 ? 0 : -1;
}

int esc_fault_guard_install(void)
{
    pthread_once(&once, install);
    return install_rc;
}

int esc_guarded_call(esc_guarded_fn fn, void *ctx, size_t begin, size_t end)
{
    sigjmp_buf jb;
    sigjmp_buf *volatile outer = guard_jmp;
    /* No signal mask saved (a syscall per call): the handler runs with SA_NODEFER, so
     * SIGBUS is not blocked when it jumps back here. */
    if (sigsetjmp(jb, 0) != 0) {
        guard_jmp = outer;
        return -1;
    }
    guard_jmp = &jb;
    fn(ctx, begin, end);
    guard_jmp = outer;
    return 0;
}

unsigned long esc_fault_guard_caught(void) { return __atomic_load_n(&caught, __ATOMIC_RELAXED); }
