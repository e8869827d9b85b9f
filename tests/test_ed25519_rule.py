"""The validation rule of docs/FORMATS.md section 7 on constructed edge cases.

Each case is built by hand (tests/ed25519_ref.py) so that the cofactored equation
holds wherever that makes the case interesting: a small-order A or R, a
non-canonical encoding or an unreduced S is then rejected by its own rule and not
merely because the equation fails.  Mixed-order A and R (a valid point plus a
torsion component) pass the cofactored equation and fail libsodium's cofactorless
one, which is where the paths could disagree; every case must get the same verdict
alone, as a batch of one, at every position of batches of valid signatures, with
either MSM algorithm, and through the bisection fallback.
"""

from __future__ import annotations

import random

import ed25519_ref as ref
import nacl.bindings as nb
import nacl.exceptions
import numpy as np
import pytest

from engine import _core
from engine.sigverify import METHODS, keypairs_from_seeds, sign_batch, verify_batch

P, L = ref.P, ref.L
TORSION = ref.small_order_points()  # TORSION[0] is the identity


def le(v: int, n: int = 32) -> bytes:
    return v.to_bytes(n, "little")


def libsodium_accepts(msg: bytes, sig: bytes, pk: bytes) -> bool:
    try:
        nb.crypto_sign_open(sig + msg, pk)
    except (nacl.exceptions.BadSignatureError, ValueError, nacl.exceptions.ValueError):
        return False
    return True


def build_cases() -> list[tuple[str, bytes, bytes, bytes, bool]]:
    """(name, message, signature, public key, expected verdict)."""
    rng = random.Random(2024)
    a = rng.randrange(1, L)
    pk = ref.encode(ref.mul(a, ref.B))
    cases = []

    def add(name, msg, sig, key, expected):
        cases.append((name, msg, sig, key, expected))

    msg = b"edge case"
    r = rng.randrange(1, L)
    sig, _ = ref.sign_with_scalar(a, r, msg)
    add("valid", msg, sig, pk, True)
    add("valid, other message", msg + b"!", sig, pk, False)

    # Rule 4: small-order A or R, with signatures for which the cofactored equation
    # holds (S B - k T - R = -k T, or S B - k A - T = -T).
    for i, t in enumerate(TORSION):
        t_enc = ref.encode(t)
        r_enc = ref.encode(ref.mul(r, ref.B))
        add(f"small-order A #{i}", msg, r_enc + le(r), t_enc, False)
        k = ref.hash_scalar(t_enc, pk, msg)
        add(f"small-order R #{i}", msg, t_enc + le(k * a % L), pk, False)
        add(f"small-order A and R #{i}", msg, t_enc + le(0), t_enc, False)

    # Rule 3: non-canonical encodings of small-order points (the only points whose
    # non-canonical encodings have a known discrete log), used as A and as R.
    noncanonical = {
        "y = p + 1 (identity)": le(P + 1),
        "y = p (order 4), x even": le(P),
        "y = p (order 4), x odd": le(P | 1 << 255),
        "y = 1, sign bit set": le(1 | 1 << 255),
        "y = p - 1, sign bit set": le((P - 1) | 1 << 255),
    }
    for label, enc in noncanonical.items():
        point = ref.decode(enc, allow_noncanonical=True)
        if point is None:  # x = 0 with the sign bit: the point is (0, y)
            y = int.from_bytes(enc, "little") & ((1 << 255) - 1)
            point = ref.point_from_xy(0, y)
        assert ref.is_identity(ref.mul(8, point))
        r_enc = ref.encode(ref.mul(r, ref.B))
        add(f"non-canonical A: {label}", msg, r_enc + le(r), enc, False)
        k = ref.hash_scalar(enc, pk, msg)
        add(f"non-canonical R: {label}", msg, enc + le(k * a % L), pk, False)

    # Rule 2: S >= L while S mod L satisfies the equation.
    s = int.from_bytes(sig[32:], "little")
    add("S + L", msg, sig[:32] + le(s + L), pk, False)
    big = s + L * ((2**253 - s) // L + 1)
    assert 2**253 <= big < 2**256
    add("S + nL >= 2^253", msg, sig[:32] + le(big), pk, False)
    add("S = L", msg, sig[:32] + le(L), pk, False)
    add("S = 2^256 - 1", msg, sig[:32] + le(2**256 - 1), pk, False)

    # Mixed order: valid under the cofactored equation, refused (mostly) by libsodium.
    base_a = ref.mul(a, ref.B)
    for i, t in enumerate(TORSION[1:], 1):
        for j in range(2):
            m = b"mixed A %d %d" % (i, j)
            pk_mixed = ref.encode(ref.add(base_a, t))
            sig_m, _ = ref.sign_with_scalar(a, rng.randrange(1, L), m, pk=pk_mixed)
            add(f"mixed-order A #{i}.{j}", m, sig_m, pk_mixed, True)
            add(f"mixed-order A #{i}.{j}, other message", m + b"?", sig_m, pk_mixed, False)
        rr = rng.randrange(1, L)
        r_mixed = ref.encode(ref.add(ref.mul(rr, ref.B), t))
        m = b"mixed R %d" % i
        sig_r, _ = ref.sign_with_scalar(a, rr, m, rpoint=r_mixed)
        add(f"mixed-order R #{i}", m, sig_r, pk, True)
        add(
            f"mixed-order R #{i}, S + 1",
            m,
            sig_r[:32] + le((int.from_bytes(sig_r[32:], "little") + 1) % L),
            pk,
            False,
        )
        t2 = TORSION[(i % 7) + 1]
        pk_mixed = ref.encode(ref.add(base_a, t2))
        sig_b, _ = ref.sign_with_scalar(a, rr, m, pk=pk_mixed, rpoint=r_mixed)
        add(f"mixed-order A and R #{i}", m, sig_b, pk_mixed, True)

    # Rule 1 and decoding failures.
    add("signature 63 bytes", msg, sig[:63], pk, False)
    add("signature 65 bytes", msg, sig + b"\0", pk, False)
    add("key 31 bytes", msg, sig, pk[:31], False)
    off_curve = next(le(y) for y in range(2, 1000) if ref.recover_x(y, 0) is None)
    add("A not on the curve", msg, sig, off_curve, False)
    add("R not on the curve", msg, off_curve + sig[32:], pk, False)
    return cases


CASES = build_cases()
IDS = [c[0] for c in CASES]


def test_cases_are_what_they_claim():
    """The expected verdicts follow from the rule as the Python reference states it,
    and the mixed-order cases are ones libsodium (cofactorless) refuses."""
    refused = 0
    for name, msg, sig, pk, expected in CASES:
        assert ref.verify_rule(msg, sig, pk) is expected, name
        if expected:
            refused += name.startswith("mixed") and not libsodium_accepts(msg, sig, pk)
        else:
            assert not libsodium_accepts(msg, sig, pk), name
    assert refused >= 14  # most of the 21 mixed-order signatures


@pytest.fixture(scope="module")
def valid_items():
    rng = random.Random(7)
    seeds = np.frombuffer(rng.randbytes(32 * 40), dtype=np.uint8).reshape(40, 32)
    pks, sks = keypairs_from_seeds(seeds)
    msgs = [rng.randbytes(rng.randrange(80)) for _ in range(320)]
    keys = [i % 40 if i % 3 else i % 5 for i in range(320)]  # some keys repeat a lot
    sigs = sign_batch(msgs, [sks[k].tobytes() for k in keys])
    return [(m, sigs[i].tobytes(), pks[k].tobytes()) for i, (m, k) in enumerate(zip(msgs, keys))]


def verdicts(items, how, **kw):
    m, s, k = (list(x) for x in zip(*items))
    if how in ("single", "batch", "auto"):
        return verify_batch(m, s, k, method=how, **kw).tolist()
    if how == "cofactored":
        return _core._ed25519_test_verify_each(m, s, k, "cofactored")
    ok, _, _ = _core._ed25519_test_verify_batch(m, s, k, how)
    return ok.tolist()


@pytest.mark.parametrize("how", ["single", "batch", "auto", "cofactored", "straus", "pippenger"])
def test_each_case_alone(how):
    for name, msg, sig, pk, expected in CASES:
        assert verdicts([(msg, sig, pk)], how) == [expected], name


@pytest.fixture(params=[True, False], ids=["simd", "scalar"])
def simd(request):
    """With the AVX-512 IFMA point decoding on (where the CPU has it) and off."""
    was = _core.ed25519_simd(request.param)
    yield
    _core.ed25519_simd(was)


@pytest.mark.parametrize("how", ["single", "batch", "straus", "pippenger"])
def test_all_cases_in_one_batch(how, valid_items, simd):
    items = [c[1:4] for c in CASES] + valid_items[:50]
    expected = [c[4] for c in CASES] + [True] * 50
    rng = random.Random(len(how))
    order = list(range(len(items)))
    rng.shuffle(order)
    got = verdicts([items[i] for i in order], how)
    assert got == [expected[i] for i in order]


@pytest.mark.parametrize("msm", ["straus", "pippenger"])
@pytest.mark.parametrize("size", [2, 13])
def test_every_case_at_every_position(valid_items, msm, size):
    for name, msg, sig, pk, expected in CASES:
        for pos in range(size):
            items = valid_items[: size - 1]
            items = [*items[:pos], (msg, sig, pk), *items[pos:]]
            want = [True] * size
            want[pos] = expected
            assert verdicts(items, msm) == want, (name, pos)


@pytest.mark.parametrize("msm", ["straus", "pippenger", "auto"])
def test_cases_in_large_batches(valid_items, msm):
    """First, middle and last position of a 300-item batch (Pippenger territory)."""
    for name, msg, sig, pk, expected in CASES:
        for pos in (0, 150, 299):
            items = valid_items[:299]
            items = [*items[:pos], (msg, sig, pk), *items[pos:]]
            want = [True] * 300
            want[pos] = expected
            assert verdicts(items, msm) == want, (name, pos)


def test_cases_through_the_fallback(valid_items):
    """With a bad signature elsewhere in the batch, the equation fails and bisection
    has to resolve the edge case inside a sub-batch or on its own."""
    m0, s0, k0 = valid_items[0]
    bad = (m0, s0[:40] + bytes([s0[40] ^ 4]) + s0[41:], k0)
    for name, msg, sig, pk, expected in CASES:
        for pos, bad_pos in ((0, 1), (5, 20), (31, 0), (17, 16)):
            items = list(valid_items[1:32])
            items[bad_pos] = bad
            items.insert(pos, (msg, sig, pk))
            want = [True] * 32
            want[bad_pos if bad_pos < pos else bad_pos + 1] = False
            want[pos] = expected
            for msm in ("straus", "pippenger"):
                m, s, k = zip(*items)
                ok, equations, _ = _core._ed25519_test_verify_batch(m, s, k, msm)
                assert ok.tolist() == want, (name, pos, bad_pos, msm)
                assert equations > 1  # the batch failed and was bisected


def test_repeated_mixed_order_key_merged_across_a_batch():
    """A key with a torsion component used by many items: its terms are merged into
    one MSM term whose coefficient is the sum; the verdicts must not change."""
    rng = random.Random(99)
    a = rng.randrange(1, L)
    pk = ref.encode(ref.add(ref.mul(a, ref.B), TORSION[5]))
    items, want = [], []
    for i in range(60):
        msg = b"presentation %d" % i
        sig, _ = ref.sign_with_scalar(a, rng.randrange(1, L), msg, pk=pk)
        if i % 9 == 4:
            msg += b"x"
        items.append((msg, sig, pk))
        want.append(i % 9 != 4)
    for how in ("single", "batch", "straus", "pippenger", "cofactored"):
        assert verdicts(items, how) == want, how


def test_identical_items_repeated():
    _, msg, sig, pk, _ = CASES[0]
    items = [(msg, sig, pk)] * 20 + [(msg + b"x", sig, pk)] * 3
    for how in ("batch", "straus", "pippenger"):
        assert verdicts(items, how) == [True] * 20 + [False] * 3


@pytest.mark.parametrize("how", ["single", "batch", "auto", "cofactored", "straus", "pippenger"])
def test_wycheproof_every_path(wycheproof_ed25519, how):
    items = [c[:3] for c in wycheproof_ed25519]
    expected = [c[3] for c in wycheproof_ed25519]
    assert verdicts(items, how) == expected
    # One at a time, for the batch paths too.
    if how in ("batch", "straus"):
        for item, want, case in zip(items, expected, wycheproof_ed25519):
            assert verdicts([item], how) == [want], case[4]


def test_wycheproof_agrees_with_the_reference_rule(wycheproof_ed25519):
    for msg, sig, pk, expected, tc in wycheproof_ed25519:
        assert ref.verify_rule(msg, sig, pk) is expected, tc


def test_methods_and_default():
    assert set(METHODS) == {"auto", "batch", "single"}
    import inspect

    assert inspect.signature(verify_batch).parameters["method"].default == "auto"


def test_prechecks_isolate_rules_1_to_4():
    """Rules 1-4 on encodings alone, including non-canonical y = p + v of points that
    are not small order (no signature can be made for those, so only this shows
    rule 3 rejecting them rather than the equation)."""
    rng = random.Random(5)
    sig = ref.encode(ref.mul(rng.randrange(1, L), ref.B)) + le(rng.randrange(L))
    pk = ref.encode(ref.mul(rng.randrange(1, L), ref.B))
    check = _core._ed25519_test_verify_each
    assert check([b"m"], [sig], [pk], "prechecks") == [True]
    for v in range(2, 19):
        enc = le(P + v)
        assert check([b"m"], [sig], [enc], "prechecks") == [False]
        assert check([b"m"], [enc + sig[32:]], [pk], "prechecks") == [False]
    assert check([b"m"], [sig[:32] + le(L)], [pk], "prechecks") == [False]
    assert check([b"m"], [sig[:32] + le(L - 1)], [pk], "prechecks") == [True]
