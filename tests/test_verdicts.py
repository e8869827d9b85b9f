"""The verdict codes have one definition on each side of the native boundary
(engine/native/verdicts.h, engine/verdicts.py); they must agree, name for name."""

from engine import _core
from engine.verdicts import MEANINGS, Verdict


def test_native_and_python_verdict_codes_agree():
    assert {v.name: int(v) for v in Verdict} == _core.VERDICT_CODES


def test_every_verdict_has_a_meaning_and_codes_are_dense():
    assert sorted(int(v) for v in Verdict) == list(range(len(Verdict)))
    assert all(MEANINGS[v] for v in Verdict)
