"""The node pulling from a publication point (engine/revocation/sync.py), against a real
nginx on loopback: install order, conditional polls, deltas only, resumed downloads,
and every check a file or an index must pass before anything is installed."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import threading
import time

import nacl.signing
import numpy as np
import pytest
import trustme
from realservers import NginxServer, nginx_server, wait_for
from revocation_helpers import random_cards, write_list

from engine import _core
from engine.revocation.accepted import AcceptedState
from engine.revocation.build import Signer
from engine.revocation.format import CRC_OFFSET, HEADER_SIZE, read_header, seal_header
from engine.revocation.publication import (
    INDEX_FILE,
    Index,
    PublicationError,
    file_sha256,
    publish,
)
from engine.revocation.store import RevocationStore, SignaturePolicy
from engine.revocation.sync import ETAG_FILE, PARTIAL_DIR, RevocationSync, SyncError, local_files
from engine.tools import pki as pkitool

CARD, LATER = b"G12345678", b"H00000001"


@dataclasses.dataclass
class World:
    tmp: pathlib.Path
    pki: pkitool.Pki
    signer: Signer
    pub: pathlib.Path  # the publication directory nginx serves
    node: pathlib.Path  # the node's sync directory
    accepted: AcceptedState
    _mtime: int = 0

    @property
    def publishers(self):
        return self.pki.trust_list.publishers

    def publish(self, **kw):
        """publish, then give the index an mtime of its own: nginx's ETag is mtime
        (seconds) and size, and these tests publish several times a second."""
        done = publish(self.pub, self.signer, **kw)
        self._mtime = self._mtime + 1 if self._mtime else int(time.time()) - 1000
        os.utime(self.pub / INDEX_FILE, (self._mtime, self._mtime))
        return done

    def sync(self, url, node=None, **kw):
        kw.setdefault("accepted", self.accepted)
        return RevocationSync(url, node or self.node, publishers=lambda: self.publishers, **kw)

    def store(self, node=None, **kw):
        snap, deltas, _ = local_files(node or self.node, self.publishers)
        return RevocationStore(
            snap,
            deltas,
            signatures=SignaturePolicy(self.publishers),
            private_dir=self.tmp / "private",
            **kw,
        )


@pytest.fixture(scope="module")
def own_pki(tmp_path_factory):
    return pkitool.init(tmp_path_factory.mktemp("sync") / "pki")


@pytest.fixture
def w(tmp_path, own_pki):
    pub = tmp_path / "pub"
    pub.mkdir()
    return World(
        tmp_path,
        own_pki,
        Signer.from_file(own_pki.publisher_key_path),
        pub,
        tmp_path / "node",
        # Where the server keeps it by default: in the sync directory, never pruned.
        AcceptedState(tmp_path / "node" / "accepted.json"),
    )


@pytest.fixture
def nginx(w):
    with nginx_server(w.tmp / "nginx", w.pub) as n:
        yield n


def cards(w, name, *ids):
    return write_list(w.tmp / name, cards=ids)


def requests(n: NginxServer, since: int = 0, at_least: int = 0) -> list[str]:
    return [e.uri for e in n.access_log(at_least)[since:]]


def node_files(w) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in w.node.iterdir() if p.is_file()}


def fails(kind, sync, match=None) -> SyncError:
    with pytest.raises(SyncError, match=match) as e:
        sync.sync_once()
    assert e.value.kind == kind, str(e.value)
    return e.value


def tamper(path: pathlib.Path) -> None:
    """Flips a byte of the first data section and reseals both CRC32C fields: a file
    only the signed manifest's section digests can tell from the real one."""
    offset, _ = read_header(path).sections[0]
    data = bytearray(path.read_bytes())
    data[offset + 7] ^= 0x40
    packed = bytes(data[:CRC_OFFSET])
    crc = _core.crc32c(bytes(data[HEADER_SIZE:]), _core.crc32c(packed))
    data[:HEADER_SIZE] = seal_header(packed, crc)
    path.write_bytes(bytes(data))


# --- 1-3: install, deltas only, conditional polls ----------------------------------------------


def test_first_sync_installs_the_snapshot_then_the_index(w, nginx):
    first = w.publish(snapshot=[cards(w, "ids.txt", CARD)])
    sync = w.sync(nginx.url)
    out = sync.sync_once()
    name = first.entry.name
    assert (out.changed, out.sequence, out.snapshot_sequence, out.fetched) == (True, 1, 1, [name])
    assert out.bytes == first.entry.size == sync.bytes_total
    assert (w.node / INDEX_FILE).read_bytes() == (w.pub / INDEX_FILE).read_bytes()
    assert (w.node / name).read_bytes() == (w.pub / name).read_bytes()
    snap, deltas, index = local_files(w.node, w.publishers)
    assert (snap, deltas, index.sequence) == (str(w.node / name), [], 1)
    store = w.store()
    assert store.contains("card", [CARD, LATER]).tolist() == [True, False]
    assert not list((w.node / PARTIAL_DIR).iterdir())
    status = sync.status()
    assert status["source_url"] == nginx.url and status["sequence"] == 1
    assert status["syncs_total"] == 1 and status["failures"] == {} and status["last_error"] is None
    assert status["last_success_at"] >= status["last_attempt_at"]


def test_nothing_installed_yet(w):
    assert local_files(w.node, w.publishers) is None


def test_a_new_delta_costs_the_index_and_that_delta(w, nginx):
    first = w.publish(snapshot=[cards(w, "ids.txt", CARD)])
    sync = w.sync(nginx.url)
    sync.sync_once()
    store = w.store(accepted=w.accepted)
    seen = len(nginx.access_log(sync.requests_total))
    second = w.publish(add=[cards(w, "add.txt", LATER)])
    out = sync.sync_once()
    assert (out.changed, out.sequence, out.snapshot_sequence) == (True, 2, 1)
    assert out.fetched == [second.entry.name] and out.bytes == second.entry.size
    assert requests(nginx, seen, sync.requests_total) == ["/" + INDEX_FILE, "/" + second.entry.name]
    assert first.entry.name in os.listdir(w.node)
    store.reload(*local_files(w.node, w.publishers)[:2])
    assert store.contains("card", [CARD, LATER]).tolist() == [True, True]
    assert store.sequence == 2 and w.accepted.read().sequence == 2
    # A new snapshot: the files the new index does not name are removed, the state
    # file is not.
    third = w.publish(snapshot=[cards(w, "all.txt", CARD, LATER)])
    out = sync.sync_once()
    assert out.fetched == [third.entry.name]
    assert sorted(node_files(w)) == sorted(
        [INDEX_FILE, ETAG_FILE, "accepted.json", third.entry.name]
    )


def test_an_unchanged_index_is_a_304(w, nginx):
    w.publish(snapshot=[cards(w, "ids.txt", CARD)])
    sync = w.sync(nginx.url)
    sync.sync_once()
    before = node_files(w)
    seen = len(nginx.access_log(sync.requests_total))
    out = sync.sync_once()
    assert (out.changed, out.sequence, out.fetched, out.bytes) == (False, 1, [], 0)
    [entry] = nginx.access_log(sync.requests_total)[seen:]
    assert (entry.uri, entry.status) == ("/" + INDEX_FILE, 304)
    assert entry.if_none_match == before[ETAG_FILE].decode()
    assert node_files(w) == before and sync.syncs_total == 2


def test_an_etag_of_an_index_modified_this_second_is_not_kept(w, nginx):
    """nginx's ETag could survive a same-size replacement within the second: the next
    poll asks without one (and gets the index in full)."""
    w.publish(snapshot=[cards(w, "ids.txt", CARD)])
    future = int(time.time()) + 3600  # modified "now or later" as far as Date can tell
    os.utime(w.pub / INDEX_FILE, (future, future))
    sync = w.sync(nginx.url)
    sync.sync_once()
    assert not (w.node / ETAG_FILE).exists()
    seen = len(nginx.access_log(sync.requests_total))
    assert not sync.sync_once().changed
    [entry] = nginx.access_log(sync.requests_total)[seen:]
    assert (entry.status, entry.if_none_match) == (200, None)


# --- 4, 5, 9: interrupted transfers, the source away, a bad partial ---------------------------


def test_an_interrupted_snapshot_download_resumes_with_range(w, tmp_path):
    first = w.publish(snapshot=[cards(w, "ids.txt", CARD)])
    n = NginxServer(w.tmp / "nginx", w.pub)
    try:
        n.start()
        sync = w.sync(n.url)
        sync.sync_once()
        installed = node_files(w)
        rng = np.random.default_rng(7)
        big = write_list(tmp_path / "big.txt", cards=[*random_cards(rng, 200_000), LATER])
        entry = w.publish(snapshot=[big]).entry
        assert entry.size > 3_000_000
        n.stop()
        n.limit_rate = "256k"  # slow enough to be cut off mid-file
        n.start()
        partial = w.node / PARTIAL_DIR / entry.sha256.hex()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            job = pool.submit(sync.sync_once)
            wait_for(lambda: partial.exists() and partial.stat().st_size > 0, what="a partial")
            n.kill()
            error = job.exception(timeout=30)
        assert isinstance(error, SyncError) and error.kind in ("partial", "unreachable"), error
        assert sync.failures == {error.kind: 1}
        assert node_files(w) == installed
        assert local_files(w.node, w.publishers)[2].snapshot == first.entry
        kept = partial.stat().st_size
        assert 0 < kept < entry.size
        n.limit_rate = None
        n.start()
        out = sync.sync_once()
        assert out.fetched == [entry.name] and out.bytes == entry.size - kept
        wait_for(
            lambda: any(e.uri == "/" + entry.name and e.range for e in n.access_log()),
            what="the resumed request's log entry",
        )
        resumed = [e for e in n.access_log() if e.uri == "/" + entry.name][-1]
        assert (resumed.status, resumed.range, resumed.completed) == (206, f"bytes={kept}-", True)
        assert file_sha256(w.node / entry.name) == (entry.size, entry.sha256)
        assert not partial.exists() and first.entry.name not in os.listdir(w.node)
        assert w.store().contains("card", [CARD, LATER]).tolist() == [False, True]
    finally:
        n.stop()


def test_the_source_away_is_unreachable_and_counted(w, nginx):
    w.publish(snapshot=[cards(w, "ids.txt", CARD)])
    sync = w.sync(nginx.url, timeout_s=5)
    nginx.stop()
    error = fails("unreachable", sync)
    assert nginx.url in str(error) and sync.failures == {"unreachable": 1}
    assert sync.last_error.startswith("unreachable: ") and sync.last_success_at is None
    nginx.start()
    assert sync.sync_once().changed
    assert sync.last_error is None and sync.failures == {"unreachable": 1}


def test_a_wrong_partial_is_discarded_and_fetched_again(w, nginx):
    entry = w.publish(snapshot=[cards(w, "ids.txt", CARD)]).entry
    partial = w.node / PARTIAL_DIR / entry.sha256.hex()
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"not the file" * 100)
    sync = w.sync(nginx.url)
    fails("digest", sync, match="discarded")
    assert nginx.access_log(sync.requests_total)[-1].range == "bytes=1200-"
    assert not partial.exists() and not (w.node / INDEX_FILE).exists()
    out = sync.sync_once()
    assert out.changed and nginx.access_log(sync.requests_total)[-1].range is None
    assert file_sha256(w.node / entry.name) == (entry.size, entry.sha256)


# --- 6-8: tampered files, forged and replayed and expired indexes ------------------------------


def test_a_tampered_file_is_refused_at_every_level(w, nginx):
    entry = w.publish(snapshot=[cards(w, "ids.txt", CARD)]).entry
    path = w.pub / entry.name
    tamper(path)
    sync = w.sync(nginx.url)
    fails("digest", sync, match=entry.name)
    assert sorted(os.listdir(w.node)) == [PARTIAL_DIR]
    # An index re-made for the tampered file, by a key of the same id the trust list
    # does not know ...
    index = Index.decode((w.pub / INDEX_FILE).read_bytes(), w.publishers)
    _, digest = file_sha256(path)
    remade = dataclasses.replace(index, snapshot=dataclasses.replace(index.snapshot, sha256=digest))
    (w.pub / INDEX_FILE).write_bytes(remade.signed(nacl.signing.SigningKey.generate()).encode())
    fails("index", sync, match="does not verify")
    # ... and by the publisher's own key: the manifest's section digest still fails.
    (w.pub / INDEX_FILE).write_bytes(remade.signed(w.signer.key).encode())
    fails("file", sync, match="SHA-256 in the signed manifest")
    assert sorted(os.listdir(w.node)) == [PARTIAL_DIR]
    assert not os.listdir(w.node / PARTIAL_DIR)
    assert sync.failures == {"digest": 1, "index": 1, "file": 1}


def test_an_older_index_is_a_rollback(w, nginx):
    w.publish(snapshot=[cards(w, "ids.txt", CARD)])
    old = (w.pub / INDEX_FILE).read_bytes()
    w.publish(add=[cards(w, "add.txt", LATER)])
    sync = w.sync(nginx.url)
    sync.sync_once()
    w.store(accepted=w.accepted)  # what the server does: records sequence 2
    installed = node_files(w)
    (w.pub / INDEX_FILE).write_bytes(old)
    fails("rollback", sync, match="sequence 1 is older than the installed 2")
    assert node_files(w) == installed
    # After a restart: the installed index is the floor.
    restarted = w.sync(nginx.url)
    assert restarted.status()["sequence"] == 2
    fails("rollback", restarted, match="older than the installed")
    # A node whose sync directory was lost: the rollback state is the floor.
    fresh = w.tmp / "fresh"
    fails("rollback", w.sync(nginx.url, fresh), match="already accepted")
    assert not (fresh / INDEX_FILE).exists()
    # The same sequence with other contents is no update either.
    index = Index.decode(installed[INDEX_FILE], w.publishers)
    other = dataclasses.replace(index, published_at=index.published_at + 1).signed(w.signer.key)
    (w.pub / INDEX_FILE).write_bytes(other.encode())
    fails("rollback", sync, match="sequence 2 is installed with other contents")
    # Nor is a newer index that names another file for a sequence installed.
    [d2] = index.deltas
    d3 = dataclasses.replace(d2, name="delta-3.essc", sequence=3)
    forked = dataclasses.replace(index, sequence=3, deltas=(dataclasses.replace(d2, size=1), d3))
    (w.pub / INDEX_FILE).write_bytes(forked.signed(w.signer.key).encode())
    fails("rollback", sync, match="delta 2 is installed with other contents")
    assert node_files(w) == installed


def test_an_expired_index_is_refused(w, nginx):
    w.signer = dataclasses.replace(w.signer, expires_in_s=600)
    w.publish(snapshot=[cards(w, "ids.txt", CARD)], now=int(time.time()) - 3600)
    sync = w.sync(nginx.url)
    fails("expired", sync, match="expired at")
    assert sorted(os.listdir(w.node)) == [PARTIAL_DIR]


def test_an_installed_index_past_its_expiry_is_refused_on_a_304(w, nginx):
    w.publish(snapshot=[cards(w, "ids.txt", CARD)])
    index = Index.decode((w.pub / INDEX_FILE).read_bytes(), w.publishers)
    now = [time.time()]
    sync = w.sync(nginx.url, clock=lambda: now[0])
    sync.sync_once()
    now[0] = index.expires_at + 1  # the publication point froze: 304 ever after
    fails("expired", sync)
    assert nginx.access_log(sync.requests_total)[-1].status == 304


def test_https_verifies_the_certificate_against_ca_file(w, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    w.publish(snapshot=[cards(w, "ids.txt", CARD)])
    tls = (tmp_path / "cert.pem", tmp_path / "key.pem")
    with nginx_server(w.tmp / "nginx", w.pub, tls=tls) as n:
        fails("unreachable", w.sync(n.url), match="CERTIFICATE_VERIFY_FAILED")
        assert w.sync(n.url, ca_file=str(tmp_path / "ca.pem")).sync_once().changed


def test_a_missing_index_is_an_http_error(w, nginx):
    fails("http", w.sync(nginx.url), match="404")


# --- run -----------------------------------------------------------------------------------


def test_run_polls_until_stopped_and_reports(w, nginx):
    w.publish(snapshot=[cards(w, "ids.txt", CARD)])
    sync = w.sync(nginx.url)
    stop = threading.Event()
    changes, polls, errors = [], [], []

    def on_poll(outcome):
        polls.append(outcome)
        if len(polls) == 2:
            nginx.stop()

    def on_error(error):
        errors.append(error)
        stop.set()

    thread = threading.Thread(
        target=sync.run,
        args=(stop, 0.0, changes.append),
        kwargs={"on_error": on_error, "on_poll": on_poll},
    )
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert [o.changed for o in polls] == [True, False] and changes == polls[:1]
    assert [e.kind for e in errors] == ["unreachable"]
    assert sync.status()["failures"] == {"unreachable": 1}


def test_local_files_verifies_the_index(w, nginx):
    w.publish(snapshot=[cards(w, "ids.txt", CARD)])
    w.sync(nginx.url).sync_once()
    data = bytearray((w.node / INDEX_FILE).read_bytes())
    data[-1] ^= 1
    (w.node / INDEX_FILE).write_bytes(bytes(data))
    with pytest.raises(PublicationError, match=f"{INDEX_FILE}: .*does not verify"):
        local_files(w.node, w.publishers)
