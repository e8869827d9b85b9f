/* Reads of memory-mapped files that fail instead of killing the process.
 *
 * A page of a file mapping whose file was truncated (or whose storage failed) raises
 * SIGBUS on access, which would kill every process mapping the file.  The engine maps
 * only private copies that nobody else writes (engine/revocation/private.py), so this
 * is defence in depth: code that reads mappings runs under esc_guarded_call, and a
 * SIGBUS in it returns an error from the call instead of ending the process.  Faults
 * elsewhere go to the handler that was installed before (or the default action), as
 * if this guard did not exist.
 */
#ifndef ESC_FAULT_GUARD_H
#define ESC_FAULT_GUARD_H

#include <stddef.h>

typedef void (*esc_guarded_fn)(void *ctx, size_t begin, size_t end);

/* Installs the SIGBUS handler once per process (later calls do nothing); 0 on
 * success, -1 if sigaction failed. */
int esc_fault_guard_install(void);

/* Runs fn(ctx, begin, end) on this thread; 0 when it finished, -1 when it was cut
 * short by a SIGBUS (what it wrote so far is incomplete). */
int esc_guarded_call(esc_guarded_fn fn, void *ctx, size_t begin, size_t end);

/* SIGBUS faults caught since the process started. */
unsigned long esc_fault_guard_caught(void);

#endif
