"""The native Ed25519 arithmetic, cross-checked value by value.

Field operations against Python integers; point operations, scalar multiplication and
scalar reduction against libsodium's crypto_core_ed25519_* / crypto_scalarmult_* (via
PyNaCl) and, for torsion points that libsodium refuses to multiply, against the
Python reference in ed25519_ref.py.  Seeds are fixed, so failures reproduce.
"""

from __future__ import annotations

import itertools
import random

import ed25519_ref as ref
import nacl.bindings as nb
import pytest

from engine import _core

P = ref.P
L = ref.L


def le(v: int, n: int = 32) -> bytes:
    return v.to_bytes(n, "little")


def num(b: bytes) -> int:
    return int.from_bytes(b, "little")


def random_point(rng: random.Random) -> bytes:
    """A random point of the prime-order subgroup, from libsodium."""
    return nb.crypto_scalarmult_ed25519_base_noclamp(le(rng.randrange(1, L)))


TORSION = [ref.encode(p) for p in ref.small_order_points()]
HAVE_SIMD = _core.ed25519_simd()
MSM_ALGOS = ["straus", "pippenger", "pippenger_simd"]


def need(algo: str) -> None:
    if algo == "pippenger_simd" and not HAVE_SIMD:
        pytest.skip("this CPU has no AVX-512 IFMA")


def test_field_constants():
    d, d2, sqrtm1 = _core._ed25519_test_field_constants()
    assert num(d) == (-121665 * pow(121666, P - 2, P)) % P
    assert num(d2) == 2 * num(d) % P
    assert pow(num(sqrtm1), 2, P) == P - 1


FIELD_EDGES = [0, 1, 2, 19, P - 2, P - 1, P, P + 1, P + 18, 2**255 - 1, 2**254, 2**51 - 1, 2**51]


def test_field_operations_match_integers():
    rng = random.Random(11)
    values = FIELD_EDGES + [rng.randrange(2**255) for _ in range(3000)]
    # All-ones limbs and values just around limb boundaries stress the carries.
    values += [
        sum(((2**51 - 1) if rng.random() < 0.7 else 0) << (51 * i) for i in range(5)) % 2**255
        for _ in range(300)
    ]
    for i, a in enumerate(values):
        b = values[(i * 7 + 3) % len(values)] if i % 3 else rng.randrange(2**255)
        add, sub, mul, sq, inv, pow22523 = (
            num(x) for x in _core._ed25519_test_field_ops(le(a), le(b))
        )
        assert add == (a + b) % P
        assert sub == (a - b) % P
        assert mul == a * b % P
        assert sq == a * a % P
        assert inv == pow(a, P - 2, P)  # 0 maps to 0
        assert pow22523 == pow(a, (P - 5) // 8, P)


def test_field_long_chains_stay_within_limb_bounds():
    rng = random.Random(12)
    for a in [*FIELD_EDGES, *(rng.randrange(2**255) for _ in range(40))]:
        x, y = a % P, a % P
        for _ in range(200):
            x = (x * (x + y) - y * y) % P
        assert num(_core._ed25519_test_field_chain(le(a), 200)) == x


def test_point_add_sub_double_match_libsodium():
    rng = random.Random(13)
    for _ in range(400):
        p, q = random_point(rng), random_point(rng)
        s, d, dbl = _core._ed25519_test_point_ops(p, q)
        assert s == nb.crypto_core_ed25519_add(p, q)
        assert d == nb.crypto_core_ed25519_sub(p, q)
        assert dbl == nb.crypto_core_ed25519_add(p, p)
    # The formulas are complete: P + P, P - P (the identity), P + (-P).
    p = random_point(rng)
    s, d, _ = _core._ed25519_test_point_ops(p, p)
    assert d == ref.encode(ref.IDENTITY)


def test_point_ops_with_torsion_match_reference():
    rng = random.Random(14)
    for t in TORSION:
        for _ in range(5):
            p = random_point(rng)
            mixed = nb.crypto_core_ed25519_add(p, t)  # libsodium adds any curve points
            s, d, dbl = _core._ed25519_test_point_ops(mixed, t)
            pm, pt = ref.decode(mixed), ref.decode(t)
            assert s == ref.encode(ref.add(pm, pt))
            assert d == ref.encode(ref.add(pm, ref.neg(pt)))
            assert dbl == ref.encode(ref.add(pm, pm))


def test_decompress_matches_reference_on_random_encodings():
    rng = random.Random(15)
    decoded = 0
    for _ in range(3000):
        enc = rng.randbytes(32)
        point = ref.decode(enc)
        got = _core._ed25519_test_decompress(enc)
        if point is None:
            assert got is None
        else:
            decoded += 1
            assert got == enc == ref.encode(point)
    assert 1200 < decoded < 1800  # about half of all y have a point


def test_noncanonical_and_small_order_encodings():
    # y = p + v for small v: not canonical, whether or not v itself has a point.
    for v in range(19):
        for sign in (0, 1):
            enc = le((P + v) | (sign << 255))
            canonical, _, _ = _core._ed25519_test_encoding_checks(enc)
            assert not canonical
            assert _core._ed25519_test_decompress(enc) is None
    # x = 0 (y = 1 or y = -1) with the sign bit set: rejected at decoding.
    for y in (1, P - 1):
        assert _core._ed25519_test_decompress(le(y | (1 << 255))) is None
        assert _core._ed25519_test_decompress(le(y)) == le(y)
    # The 8 small-order points: flagged by their encoding and by [8]P = 0.
    assert len(set(TORSION)) == 8
    for t in TORSION:
        assert _core._ed25519_test_encoding_checks(t) == (True, True, True)
    rng = random.Random(16)
    for _ in range(200):
        p = random_point(rng)
        assert _core._ed25519_test_encoding_checks(p) == (True, False, False)
        # A torsion component makes it mixed order: not small order.
        mixed = nb.crypto_core_ed25519_add(p, TORSION[rng.randrange(1, 8)])
        assert _core._ed25519_test_encoding_checks(mixed) == (True, False, False)


def test_scalar_reduction_matches_libsodium():
    rng = random.Random(17)
    edges = [
        0,
        1,
        L - 1,
        L,
        L + 1,
        2 * L,
        2**252,
        2**253 - 1,
        2**256 - 1,
        2**512 - 1,
        (2**512 // L) * L,
        (2**512 // L) * L - 1,
    ]
    for v in edges + [rng.randrange(2**512) for _ in range(3000)]:
        got = _core._ed25519_test_scalar_reduce(le(v, 64))
        assert num(got) == v % L
        assert got == nb.crypto_core_ed25519_scalar_reduce(le(v, 64))


def test_scalar_canonical_check():
    for v, want in [
        (0, True),
        (L - 1, True),
        (L, False),
        (L + 1, False),
        (2**253, False),
        (2**256 - 1, False),
        (2**252, True),
    ]:
        assert _core._ed25519_test_scalar_is_canonical(le(v)) is want


@pytest.mark.parametrize("w", [2, 3, 4, 5, 6, 8])
def test_wnaf_reconstructs_the_scalar(w):
    rng = random.Random(18 + w)
    for v in [0, 1, 2**256 - 1, 2**255, L - 1] + [rng.randrange(2**256) for _ in range(300)]:
        digits = _core._ed25519_test_wnaf(le(v), w)
        assert sum(d << p for p, d in digits) == v
        positions = [p for p, _ in digits]
        assert all(b - a >= w for a, b in itertools.pairwise(positions))
        assert all(d % 2 == 1 and abs(d) < 2 ** (w - 1) for _, d in digits)


@pytest.mark.parametrize("c", [4, 5, 6, 7, 8, 9, 10, 11, 13, 16])
def test_signed_radix_reconstructs_the_scalar(c):
    rng = random.Random(30 + c)
    for v in [0, 1, 2**253 - 1, L - 1] + [rng.randrange(2**253) for _ in range(200)]:
        digits = _core._ed25519_test_signed_radix(le(v), c)
        assert sum(d << (c * i) for i, d in enumerate(digits)) == v
        assert all(-(2 ** (c - 1)) < d <= 2 ** (c - 1) for d in digits)


@pytest.mark.parametrize("algo", MSM_ALGOS)
def test_scalarmult_matches_libsodium(algo):
    need(algo)
    rng = random.Random(19)
    for _ in range(100):
        p = random_point(rng)
        n = rng.randrange(1, L)
        assert _core._ed25519_test_msm([le(n)], [p], algo=algo) == (
            nb.crypto_scalarmult_ed25519_noclamp(le(n), p)
        )
        assert _core._ed25519_test_msm([], [], le(n), algo=algo) == (
            nb.crypto_scalarmult_ed25519_base_noclamp(le(n))
        )


def sum_of_products(scalars, points, base_scalar):
    """The expected MSM, from libsodium one term at a time."""
    acc = nb.crypto_scalarmult_ed25519_base_noclamp(le(base_scalar))
    for s, p in zip(scalars, points):
        acc = nb.crypto_core_ed25519_add(acc, nb.crypto_scalarmult_ed25519_noclamp(le(s), p))
    return acc


@pytest.mark.parametrize("algo", [*MSM_ALGOS, "auto"])
@pytest.mark.parametrize("m", [1, 2, 3, 7, 31, 64, 200])
def test_msm_matches_libsodium(algo, m):
    need(algo)
    rng = random.Random(m * 3 + len(algo))
    points = [random_point(rng) for _ in range(m)]
    # The batch equation's mix: 128-bit coefficients and full-size scalars; repeated
    # points too.
    scalars = [rng.randrange(1, 2**128) if i % 2 else rng.randrange(1, L) for i in range(m)]
    if m > 3:
        points[1] = points[0]
    b = rng.randrange(1, L)
    got = _core._ed25519_test_msm([le(s) for s in scalars], points, le(b), algo)
    assert got == sum_of_products(scalars, points, b)


@pytest.mark.parametrize("algo", ["pippenger", "pippenger_simd"])
@pytest.mark.parametrize("window", [4, 5, 6, 7, 8, 9, 12])
def test_pippenger_windows(algo, window):
    need(algo)
    rng = random.Random(40 + window)
    points = [random_point(rng) for _ in range(20)]
    scalars = [rng.randrange(1, 2**253) for _ in points]
    scalars[3] = 2**253 - 1  # every window's digit at its extreme
    scalars[4] = sum((2 ** (window - 1)) << (window * i) for i in range(253 // window)) % 2**253
    got = _core._ed25519_test_msm([le(s) for s in scalars], points, None, algo, window)
    acc = ref.IDENTITY
    for s, p in zip(scalars, points):
        acc = ref.add(acc, ref.mul(s, ref.decode(p)))
    assert got == ref.encode(acc)


@pytest.mark.parametrize("algo", MSM_ALGOS)
def test_msm_with_torsion_points_and_full_width_scalars(algo):
    """Points with torsion components and scalars up to 2^253 (not reduced mod L):
    the MSM must be exact, not only correct modulo L, since the cofactored check
    multiplies the result by 8 only at the end."""
    need(algo)
    rng = random.Random(41)
    points, scalars = [], []
    for i in range(12):
        p = ref.mul(rng.randrange(1, L), ref.B)
        if i % 2:
            p = ref.add(p, ref.decode(TORSION[rng.randrange(8)]))
        points.append(ref.encode(p))
        scalars.append(rng.randrange(2**253))
    b = rng.randrange(2**253)
    got = _core._ed25519_test_msm([le(s) for s in scalars], points, le(b), algo)
    acc = ref.mul(b, ref.B)
    for s, p in zip(scalars, points):
        acc = ref.add(acc, ref.mul(s, ref.decode(p)))
    assert got == ref.encode(acc)


def test_msm_zero_scalars_and_empty():
    rng = random.Random(42)
    p = random_point(rng)
    identity = ref.encode(ref.IDENTITY)
    for algo in MSM_ALGOS if HAVE_SIMD else MSM_ALGOS[:2]:
        assert _core._ed25519_test_msm([], [], None, algo) == identity
        assert _core._ed25519_test_msm([le(0)], [p], le(0), algo) == identity
        assert _core._ed25519_test_msm([le(L)], [p], None, algo) == identity


@pytest.fixture(params=[True, False], ids=["simd", "scalar"])
def simd(request):
    """Runs a test with the AVX-512 IFMA path on (where the CPU has it) and off."""
    was = _core.ed25519_simd(request.param)
    yield _core.ed25519_simd()
    _core.ed25519_simd(was)


def test_pow22523_eight_lanes_and_two_lanes():
    rng = random.Random(50)
    edge = [le(v) for v in FIELD_EDGES]
    for trial in range(400):
        n = 8 if trial % 4 else rng.randrange(1, 9)
        values = [rng.choice(edge) if rng.random() < 0.2 else rng.randbytes(32) for _ in range(n)]
        values = [bytes([*v[:31], v[31] & 0x7F]) for v in values]
        lanes8, lanes2 = _core._ed25519_test_pow22523_lanes(values)
        want = [le(pow(num(v), (P - 5) // 8, P)) for v in values]
        assert lanes8 == (want if HAVE_SIMD else None)
        assert lanes2 == want


def test_decompress_many_matches_one_by_one(simd):
    rng = random.Random(51)
    for n in [*range(1, 20), 64, 101]:
        encs = []
        for _ in range(n):
            kind = rng.randrange(5)
            if kind == 0:
                encs.append(random_point(rng))
            elif kind == 1:
                encs.append(rng.choice(TORSION))
            elif kind == 2:
                encs.append(le(P + rng.randrange(19)))  # non-canonical
            else:
                encs.append(rng.randbytes(32))  # on the curve about half the time
        assert _core._ed25519_test_decompress_many(encs) == [
            _core._ed25519_test_decompress(e) for e in encs
        ]
