/* Points of the twisted Edwards curve -x^2 + y^2 = 1 + d x^2 y^2 over GF(2^255 - 19).
 *
 * Representations (the usual ones of Hisil-Wong-Carter-Dawson for a = -1):
 * - ge_p2:     projective (X : Y : Z), x = X/Z, y = Y/Z;
 * - ge_p3:     extended (X : Y : Z : T), additionally T = XY/Z;
 * - ge_p1p1:   "completed" ((E : G), (H : F)), x = E/G, y = H/F: what an addition or
 *              doubling produces before the last multiplications, so the caller pays
 *              for T only when the next operation needs it (p3) and not otherwise (p2);
 * - ge_cached: (Y + X, Y - X, 2Z, 2dT), the second operand of an addition;
 * - ge_niels:  the affine cached form (y + x, y - x, 2dxy) with Z = 1 implied, used
 *              for the precomputed multiples of the base point (one multiplication less).
 * Additions use the unified a = -1 formulas, which are complete on this curve, so
 * they are valid for doubling, the identity and torsion points alike.
 */
#ifndef ESC_ED25519_POINT_H
#define ESC_ED25519_POINT_H

#include <stddef.h>

#include "ed25519_field.h"

typedef struct {
    fe X, Y, Z;
} ge_p2;

typedef struct {
    fe X, Y, Z, T;
} ge_p3;

typedef struct {
    fe E, H, G, F;
} ge_p1p1;

typedef struct {
    fe YplusX, YminusX, Z2, T2d;
} ge_cached;

typedef struct {
    fe ypx, ymx, xy2d;
} ge_niels;

static inline void ge_p3_0(ge_p3 *r)
{
    fe_0(&r->X);
    fe_1(&r->Y);
    fe_1(&r->Z);
    fe_0(&r->T);
}

static inline void ge_p1p1_to_p2(ge_p2 *r, const ge_p1p1 *p)
{
    fe_mul(&r->X, &p->E, &p->F);
    fe_mul(&r->Y, &p->H, &p->G);
    fe_mul(&r->Z, &p->G, &p->F);
}

static inline void ge_p1p1_to_p3(ge_p3 *r, const ge_p1p1 *p)
{
    fe_mul(&r->X, &p->E, &p->F);
    fe_mul(&r->Y, &p->H, &p->G);
    fe_mul(&r->Z, &p->G, &p->F);
    fe_mul(&r->T, &p->E, &p->H);
}

static inline void ge_p3_to_cached(ge_cached *r, const ge_p3 *p)
{
    fe_add(&r->YplusX, &p->Y, &p->X);
    fe_sub(&r->YminusX, &p->Y, &p->X);
    fe_add(&r->Z2, &p->Z, &p->Z);
    fe_mul(&r->T2d, &p->T, &fe_d2);
}

static inline void ge_p3_neg(ge_p3 *r, const ge_p3 *p)
{
    fe_neg(&r->X, &p->X);
    r->Y = p->Y;
    r->Z = p->Z;
    fe_neg(&r->T, &p->T);
}

/* 2p, from the projective coordinates only. */
static inline void ge_p2_dbl(ge_p1p1 *r, const ge_p2 *p)
{
    fe a, b, c, s;
    fe_sq(&a, &p->X);
    fe_sq(&b, &p->Y);
    fe_sq2(&c, &p->Z);
    fe_add(&s, &p->X, &p->Y);
    fe_sq(&s, &s);
    fe_add(&r->H, &a, &b);
    fe_sub(&r->E, &r->H, &s);
    fe_sub(&r->G, &a, &b);
    fe_add(&r->F, &c, &r->G);
}

static inline void ge_p3_dbl(ge_p1p1 *r, const ge_p3 *p)
{
    ge_p2_dbl(r, (const ge_p2 *)p); /* ge_p3 begins with the fields of ge_p2 */
}

/* p + q and p - q. */
static inline void ge_add(ge_p1p1 *r, const ge_p3 *p, const ge_cached *q)
{
    fe a, b, c, d, ypx, ymx;
    fe_add(&ypx, &p->Y, &p->X);
    fe_sub(&ymx, &p->Y, &p->X);
    fe_mul(&a, &ymx, &q->YminusX);
    fe_mul(&b, &ypx, &q->YplusX);
    fe_mul(&c, &p->T, &q->T2d);
    fe_mul(&d, &p->Z, &q->Z2);
    fe_sub(&r->E, &b, &a);
    fe_add(&r->H, &b, &a);
    fe_add(&r->G, &d, &c);
    fe_sub(&r->F, &d, &c);
}

static inline void ge_sub(ge_p1p1 *r, const ge_p3 *p, const ge_cached *q)
{
    fe a, b, c, d, ypx, ymx;
    fe_add(&ypx, &p->Y, &p->X);
    fe_sub(&ymx, &p->Y, &p->X);
    fe_mul(&a, &ymx, &q->YplusX);
    fe_mul(&b, &ypx, &q->YminusX);
    fe_mul(&c, &p->T, &q->T2d);
    fe_mul(&d, &p->Z, &q->Z2);
    fe_sub(&r->E, &b, &a);
    fe_add(&r->H, &b, &a);
    fe_sub(&r->G, &d, &c);
    fe_add(&r->F, &d, &c);
}

/* p + q and p - q for an affine precomputed q. */
static inline void ge_madd(ge_p1p1 *r, const ge_p3 *p, const ge_niels *q)
{
    fe a, b, c, d, ypx, ymx;
    fe_add(&ypx, &p->Y, &p->X);
    fe_sub(&ymx, &p->Y, &p->X);
    fe_mul(&a, &ymx, &q->ymx);
    fe_mul(&b, &ypx, &q->ypx);
    fe_mul(&c, &p->T, &q->xy2d);
    fe_add(&d, &p->Z, &p->Z);
    fe_sub(&r->E, &b, &a);
    fe_add(&r->H, &b, &a);
    fe_add(&r->G, &d, &c);
    fe_sub(&r->F, &d, &c);
}

static inline void ge_msub(ge_p1p1 *r, const ge_p3 *p, const ge_niels *q)
{
    fe a, b, c, d, ypx, ymx;
    fe_add(&ypx, &p->Y, &p->X);
    fe_sub(&ymx, &p->Y, &p->X);
    fe_mul(&a, &ymx, &q->ypx);
    fe_mul(&b, &ypx, &q->ymx);
    fe_mul(&c, &p->T, &q->xy2d);
    fe_add(&d, &p->Z, &p->Z);
    fe_sub(&r->E, &b, &a);
    fe_add(&r->H, &b, &a);
    fe_sub(&r->G, &d, &c);
    fe_add(&r->F, &d, &c);
}

/* Full p3 + p3 (for sums of accumulated points). */
static inline void ge_add_p3(ge_p3 *r, const ge_p3 *p, const ge_p3 *q)
{
    ge_cached qc;
    ge_p1p1 t;
    ge_p3_to_cached(&qc, q);
    ge_add(&t, p, &qc);
    ge_p1p1_to_p3(r, &t);
}

/* The base point B and its odd multiples B, 3B, ..., (2 ESC_BASE_TABLE - 1) B, filled
 * in by ge_init(). */
#define ESC_BASE_WNAF_WIDTH 8
#define ESC_BASE_TABLE (1 << (ESC_BASE_WNAF_WIDTH - 2))
extern ge_p3 ge_base;
extern ge_niels ge_base_odd[ESC_BASE_TABLE];

/* Fills in the tables above; safe to call from any thread, any number of times. */
void ge_init(void);

/* 1 iff s encodes y < p (bit 255 is the sign of x and not part of y). */
int ge_is_canonical(const uint8_t s[32]);

/* 1 iff s (a canonical encoding) encodes one of the 8 points of small order. */
int ge_is_small_order(const uint8_t s[32]);

/* Decodes s into r.  Returns 0, or -1 when y >= p, when no x exists, or when x = 0
 * and the sign bit is set (the points with x = 0 have one encoding only). */
int ge_decompress(ge_p3 *r, const uint8_t s[32]);

/* ge_decompress for n points: ok[i] = 1 and *out[i] set where enc[i] decodes.  The
 * exponentiations run eight at a time with AVX-512 IFMA where the CPU has it, else
 * two at a time interleaved (about 1.5x faster per point than one by one). */
void ge_decompress_many(ge_p3 *const *out, const uint8_t *const *enc, int *ok, size_t n);

void ge_compress(uint8_t s[32], const ge_p3 *p);
void ge_p2_compress(uint8_t s[32], const ge_p2 *p);

/* 1 iff [8]p is the identity (p is a torsion point, or the identity). */
int ge_p3_is_small_order(const ge_p3 *p);
int ge_p2_times8_is_identity(const ge_p2 *p);

#endif
