/* Multi-scalar multiplication: sum_i s_i P_i (+ b B), variable time.
 *
 * Two algorithms, picked by size (ed25519_msm_pick):
 * - Straus ("interleaved wNAF"): one shared chain of doublings; each point gets a
 *   table of its odd multiples P, 3P, ..., 15P (width-5 NAF, about one addition per
 *   6 bits of scalar), the base point uses a static width-8 table.  Cost grows with
 *   the number of points times the scalar length.
 * - Pippenger (bucket method): signed radix-2^c digits; per window every point is
 *   added into one of 2^(c-1) buckets, which are then summed with 2^c additions.
 *   Cost per point falls as the batch grows, so it wins for large batches.  Where
 *   the CPU has AVX-512 IFMA, eight windows run at once in vector lanes
 *   (ed25519_msm_ifma.c), about 2.5x faster, which moves the crossover with Straus
 *   down to a handful of signatures.
 * Scalars must be below 2^253 (anything reduced mod L); shorter scalars (the 128-bit
 * coefficients of the batch equation) cost proportionally less in both.
 */
#ifndef ESC_ED25519_MSM_H
#define ESC_ED25519_MSM_H

#include <stddef.h>

#include "ed25519_point.h"
#include "ed25519_scalar.h"

enum { ESC_MSM_AUTO = 0, ESC_MSM_STRAUS = 1, ESC_MSM_PIPPENGER = 2 };

/* out = sum_{i < m} s[i] pts[i] + b B (b may be NULL).  Returns 0, or -1 when out of
 * memory (out is then untouched); with m <= 2 it allocates nothing and cannot fail. */
int ed25519_msm_straus(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m, const sc *b);

/* Same, Pippenger with window c (0: chosen by size).  b B is added as one more point. */
int ed25519_msm_pippenger(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m, const sc *b,
                          int c);

/* Pippenger with eight windows at a time in AVX-512 IFMA lanes (ed25519_msm_ifma.c);
 * only when fe_simd_enabled(), else it is ed25519_msm_pippenger.  c as above but
 * required (no 0). */
int ed25519_msm_pippenger_ifma(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m,
                               const sc *b, int c);

/* Either, as asked, or (algo ESC_MSM_AUTO) the one ed25519_msm_pick chooses.
 * ESC_MSM_PIPPENGER means the IFMA version where fe_simd_enabled(). */
int ed25519_msm(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m, const sc *b, int algo);

/* The faster algorithm by cost models fitted to measurements, counting scalars below
 * 2^128 apart from full-length ones; *window gets Pippenger's best window.  With the
 * batch equation's scalars, Straus wins up to about 80 distinct-key signatures
 * (160 points) against scalar Pippenger, and up to about 6 against the AVX-512 IFMA
 * Pippenger. */
int ed25519_msm_pick(const sc *s, size_t m, int with_base, int *window);

/* Pippenger's best window for m full-length scalars (for the IFMA version where
 * that is in use). */
int ed25519_pippenger_window(size_t m);

#endif
