"""A slow, obviously-correct Ed25519 reference in Python integers, for the tests.

It builds inputs that honest signers never produce (torsion components, non-canonical
encodings, small-order points) and states the validation rule of docs/FORMATS.md
section 7 independently of the C code.  Nothing here is constant time or fast.
"""

from __future__ import annotations

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

# Points are extended coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, xy = T/Z.
IDENTITY = (0, 1, 1, 0)


def add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * D * t1 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def neg(p):
    x, y, z, t = p
    return (-x % P, y, z, -t % P)


def mul(k: int, p):
    q = IDENTITY
    if k < 0:
        k, p = -k, neg(p)
    while k:
        if k & 1:
            q = add(q, p)
        p = add(p, p)
        k >>= 1
    return q


def affine(p) -> tuple[int, int]:
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    return x * zi % P, y * zi % P


def equal(p, q) -> bool:
    return affine(p) == affine(q)


def is_identity(p) -> bool:
    return equal(p, IDENTITY)


def encode(p) -> bytes:
    x, y = affine(p)
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def recover_x(y: int, sign: int) -> int | None:
    """x with the given parity on the curve at y, or None (any y < P)."""
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    x2 = u * pow(v, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def decode(s: bytes, *, allow_noncanonical: bool = False):
    """The point s encodes, or None.  Non-canonical y (y >= p) is rejected unless asked."""
    if len(s) != 32:
        return None
    v = int.from_bytes(s, "little")
    y, sign = v & ((1 << 255) - 1), v >> 255
    if y >= P:
        if not allow_noncanonical:
            return None
        y -= P
    x = recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def point_from_xy(x: int, y: int):
    return (x % P, y % P, 1, x * y % P)


B = point_from_xy(recover_x(4 * pow(5, P - 2, P) % P, 0), 4 * pow(5, P - 2, P) % P)


def small_order_points() -> list:
    """The 8 points of order dividing 8 (the torsion subgroup)."""
    # (+-sqrt(-1), 0) have order 4 and (0, -1) order 2.  An order-8 point T has
    # y(2T) = (y^2 + x^2) / (1 - d x^2 y^2) = 0, so x^2 = -y^2; on the curve that gives
    # 2u = 1 - d u^2 for u = y^2, i.e. u = (-1 +- sqrt(1 + d)) / d.
    pts = [IDENTITY, point_from_xy(0, -1), point_from_xy(SQRT_M1, 0), point_from_xy(-SQRT_M1, 0)]
    disc = (1 + D) % P
    r = pow(disc, (P + 3) // 8, P)
    if (r * r - disc) % P:
        r = r * SQRT_M1 % P
    assert (r * r - disc) % P == 0
    for root in (r, -r):
        u = (-1 + root) * pow(D, P - 2, P) % P
        y = pow(u, (P + 3) // 8, P)
        if (y * y - u) % P:
            y = y * SQRT_M1 % P
        if (y * y - u) % P:
            continue
        for yy in (y, P - y):
            for sign in (0, 1):
                x = recover_x(yy, sign)
                if x is not None:
                    pts.append(point_from_xy(x, yy))
    assert len(pts) == 8, len(pts)
    for p in pts:
        assert is_identity(mul(8, p))
    return pts


def hash_scalar(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little") % L


def sign_with_scalar(a: int, r: int, msg: bytes, *, pk=None, rpoint=None) -> tuple[bytes, bytes]:
    """(signature, public key) for secret scalar a and nonce r; pk / rpoint override the
    encodings of A and R (e.g. with a torsion component added) that go into the hash."""
    pk = pk if pk is not None else encode(mul(a, B))
    rb = rpoint if rpoint is not None else encode(mul(r, B))
    k = hash_scalar(rb, pk, msg)
    s = (r + k * a) % L
    return rb + s.to_bytes(32, "little"), pk


def verify_rule(msg: bytes, sig: bytes, pk: bytes) -> bool:
    """docs/FORMATS.md section 7, written out in the most direct way."""
    if len(sig) != 64 or len(pk) != 32:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    a = decode(pk)
    r = decode(sig[:32])
    if a is None or r is None:
        return False
    if encode(a) != pk or encode(r) != sig[:32]:  # x = 0 with the sign bit set
        return False
    if is_identity(mul(8, a)) or is_identity(mul(8, r)):
        return False
    k = hash_scalar(sig[:32], pk, msg)
    check = add(add(mul(s, B), neg(mul(k, a))), neg(r))
    return is_identity(mul(8, check))


def verify_cofactorless(msg: bytes, sig: bytes, pk: bytes) -> bool:
    """The same checks, with the cofactorless equation (what the bundled libsodium does)."""
    if not verify_rule(msg, sig, pk):
        return False
    s = int.from_bytes(sig[32:], "little")
    k = hash_scalar(sig[:32], pk, msg)
    return equal(add(mul(s, B), neg(mul(k, decode(pk)))), decode(sig[:32]))
