"""PKI set-up, issuance, wallet files and the command line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from engine.cli.main import build_parser, main
from engine.formats import wallets
from engine.formats.credentials import Credential, Presentation
from engine.formats.trustlist import Status, TrustList
from engine.sigverify import verify_batch
from engine.tools import issuance
from engine.tools.pki import Pki, PkiError, init, update_trust_list
from engine.tools.regions import PROVINCES
from engine.verdicts import Verdict
from engine.verifier import Verifier


def test_pki_init_layout_and_modes(pki):
    d = pki.directory
    for name in ("root.key", "digest.key"):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600
    keys = sorted((d / "issuers").iterdir())
    assert len(keys) == 31
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    assert stat.S_IMODE((d / "issuers").stat().st_mode) == 0o700
    trust = TrustList.load(d / "trustlist.essc", pki.root_public_key)
    assert sorted(k.region for k in trust.issuers.values()) == sorted(p.code for p in PROVINCES)
    assert {"hrss-app", "icbc", "alipay", "wechat-pay"} <= set(trust.channels)
    manifest = json.loads((d / "pki.json").read_text())
    assert "seed" not in json.dumps(manifest)


def test_pki_init_refuses_to_overwrite(pki):
    with pytest.raises(PkiError, match="refusing"):
        init(pki.directory)


def test_pki_update_increments_sequence(tmp_path):
    p = init(tmp_path / "pki")
    t2 = update_trust_list(p, channel_status={"alipay": Status.SUSPENDED})
    reopened = Pki.open(tmp_path / "pki")
    assert reopened.trust_list.sequence == t2.sequence == 2
    assert reopened.trust_list.channels["alipay"].status is Status.SUSPENDED
    assert t2.may_replace(p.trust_list) and not p.trust_list.may_replace(t2)
    with pytest.raises(PkiError, match="unknown channel"):
        update_trust_list(reopened, channel_status={"nope": Status.ACTIVE})


def test_issue_to_file_population(pki, tmp_path):
    out = tmp_path / "w.essc"
    n = issuance.issue_to_file(pki, 2500, out, rng_seed=3, progress=False)
    assert n == 2500
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    items = list(wallets.read(out))
    creds = [Credential.decode_with_body(w.credential) for w in items]
    cards = [c.card_number for c, _ in creds]
    assert len(set(cards)) == len(cards)
    trust = pki.trust_list
    ok = verify_batch(
        [body for _, body in creds],
        [c.signature for c, _ in creds],
        [trust.issuers[c.issuer_key_id].public_key for c, _ in creds],
    )
    assert ok.all()
    assert all(trust.issuers[c.issuer_key_id].covers_region(c.region) for c, _ in creds)
    provinces = {c.region[:2] for c, _ in creds}
    assert len(provinces) > 25  # spread across the country
    # Guangdong (127 M) issues far more than Tibet (4 M).
    gd = sum(c.region.startswith("44") for c, _ in creds)
    xz = sum(c.region.startswith("54") for c, _ in creds)
    assert gd > 5 * max(xz, 1)
    # Holder seeds match the holder keys in the credentials.
    import nacl.signing

    for w, (c, _) in zip(items[:20], creds[:20]):
        assert bytes(nacl.signing.SigningKey(w.holder_seed).verify_key) == c.holder_key


def test_issue_is_reproducible_with_a_seed(pki, tmp_path):
    def run(seed):
        issuer = issuance.Issuer(pki, rng_seed=seed)
        return [w for chunk in issuer.issue(50, now=1_800_000_000) for w in chunk]

    a, b, c = run(9), run(9), run(10)
    assert a == b
    assert len(a) == 50 and a != c


def test_citizen_id_check_digit():
    # GB 11643-1999 example id: 11010519491231002X.
    assert issuance.citizen_id("110105", "19491231", 2) == "11010519491231002X"


def test_wallet_file_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x81\xa6format\xa4nope")
    with pytest.raises(wallets.WalletFileError, match="not a wallet file"):
        list(wallets.read(bad))
    with pytest.raises(wallets.WalletFileError, match="cannot read"):
        list(wallets.read(tmp_path / "missing"))
    short = tmp_path / "short"
    wallets.write(short, {"count": 1}, [[wallets.Wallet(b"x", bytes(32))]])
    data = short.read_bytes()
    short.write_bytes(data[:-10])
    with pytest.raises(wallets.WalletFileError, match="header says 1 wallets, found 0"):
        list(wallets.read(short))


def _subcommands(parser, prefix=()):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _subcommands(sub, (*prefix, name))


def test_every_command_has_help(capsys):
    commands = list(_subcommands(build_parser()))
    assert ("pki", "init") in commands and ("issue",) in commands
    for cmd in [(), *commands]:
        with pytest.raises(SystemExit) as info:
            main([*cmd, "--help"])
        assert info.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_cli_end_to_end(tmp_path, capsys):
    d = tmp_path / "pki"
    assert main(["pki", "init", str(d)]) == 0
    out = capsys.readouterr().out
    assert "31 issuer keys" in out
    assert '"seed"' not in out
    w = tmp_path / "w.essc"
    assert main(["issue", "--pki", str(d), "--count", "20", "--out", str(w), "--quiet"]) == 0
    p = tmp_path / "p.bin"
    assert main(["present", "--wallets", str(w), "--index", "4", "--out", str(p)]) == 0
    assert main(["verify", "--pki", str(d), str(p)]) == 0
    assert ": OK (0)" in capsys.readouterr().out
    # Fixed time, nonce and purpose for tests.
    assert (
        main(
            [
                "present",
                "--wallets",
                str(w),
                "--index",
                "1",
                "--time-ms",
                "1000",
                "--nonce",
                "00" * 16,
                "--purpose",
                "identity",
                "--out",
                str(p),
            ]
        )
        == 0
    )
    pres = Presentation.decode(p.read_bytes())
    assert (pres.timestamp_ms, pres.nonce, pres.purpose.name) == (1000, bytes(16), "IDENTITY")
    assert main(["verify", "--pki", str(d), str(p)]) == 1
    assert "STALE" in capsys.readouterr().out
    capsys.readouterr()
    assert (
        main(["inspect", "--pki", str(d), str(p), str(d / "trustlist.essc"), str(d / "root.key")])
        == 0
    )
    out = capsys.readouterr().out
    assert '"type": "presentation"' in out and '"root_signature": "valid"' in out
    assert "<redacted>" in out
    seed = json.loads((d / "root.key").read_text())["seed"]
    assert seed not in out
    # Errors are one clear line, not a traceback.
    assert main(["present", "--wallets", str(w), "--index", "99", "--out", str(p)]) == 2
    assert "no wallet with index 99" in capsys.readouterr().err
    assert main(["present", "--wallets", str(w), "--nonce", "zz", "--out", str(p)]) == 2
    assert "--nonce" in capsys.readouterr().err


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(50))
    assert main(["inspect", str(junk)]) == 2
    assert "not an e-SSC object" in capsys.readouterr().err
    assert main(["issue", "--pki", str(tmp_path), "--count", "1", "--out", str(junk)]) == 2
    assert "not a PKI directory" in capsys.readouterr().err


def test_vectors_command_matches_committed(capsys):
    from engine.tools import testvectors

    assert main(["vectors"]) == 0
    assert capsys.readouterr().out == testvectors.dumps()


def test_demo_prints_every_verdict_class(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for v in Verdict:
        if v is not Verdict.BUSY:
            assert f" {v.name} " in proc.stdout
    assert "all verdicts as expected" in proc.stdout


def test_verifier_accepts_issued_wallets(pki, tmp_path):
    from engine.tools.holder import HolderKeys, present_batch

    ws = [w for chunk in issuance.Issuer(pki).issue(40) for w in chunk]
    keys = HolderKeys([w.holder_seed for w in ws])
    import time

    now_ms = int(time.time() * 1000)
    batch = present_batch([w.credential for w in ws], keys, range(40), [now_ms] * 40, [2] * 40)
    results = Verifier(pki.trust_list).verify(batch, now_ms)
    assert [r.verdict for r in results] == [Verdict.OK] * 40
    assert np.unique([r.claims["serial"] for r in results]).size == 40


def test_every_command_line_shares_one_error_policy(tmp_path, capsys):
    """engine/cli/exit.py: bad input anywhere is one "error:" line and status 2, in the
    engine's commands, its command groups and the load generator alike; a bug keeps
    its traceback."""
    from engine.cli.exit import EXIT_UNUSABLE, run_command
    from loadgen.cli import main as loadgen_main

    cases = [
        (main, ["revocation", "check", str(tmp_path / "absent.snap"), "card:G12345678"]),
        (main, ["revocation", "build", "--out", str(tmp_path / "x.snap"), "--fpr", "2", "-"]),
        (main, ["client", "--target", "nowhere", "ping"]),
        (main, ["client", "--target", "127.0.0.1:1", "revocation-check", "card:bad"]),
        (
            loadgen_main,
            ["run", "--target", "127.0.0.1:1", "--corpus", str(tmp_path), "--rate", "1"],
        ),
    ]
    for entry, argv in cases:
        assert entry(argv) == EXIT_UNUSABLE, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, (argv, err)

    def bug(_args):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_command(bug, None)
