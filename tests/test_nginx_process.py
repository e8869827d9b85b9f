"""nginx over a publication directory (engine/tools/nginx_process.py): what a polling
client relies on — byte-exact files, 304 for a matching If-None-Match, 206 for a
resumed download — and the runner itself: its access log, stop, restart, a crash."""

from __future__ import annotations

import errno
import os
import socket

import pytest
import trustme
import urllib3
from realservers import NginxServer, nginx_server, wait_for

from engine.tools.processes import ProcessError, connects, find_program

SIZE = 300_000


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "pub"
    d.mkdir()
    (d / "index.json").write_bytes(b'{"serial": 7}\n')
    (d / "crl.bin").write_bytes(os.urandom(SIZE))
    return d


@pytest.fixture
def http():
    with urllib3.PoolManager(retries=False, timeout=10) as pool:
        yield pool


def refused(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        return s.connect_ex((host, port)) == errno.ECONNREFUSED


def test_serves_files_byte_exact_with_etag(tmp_path, root, http):
    with nginx_server(tmp_path / "w", root) as n:
        r = http.request("GET", n.url + "crl.bin")
        assert r.status == 200
        assert r.data == (root / "crl.bin").read_bytes()
        assert r.headers["Accept-Ranges"] == "bytes"
        # nginx's ETag is mtime (whole seconds) and size in hex, not a digest.
        st = (root / "crl.bin").stat()
        assert r.headers["ETag"] == f'"{int(st.st_mtime):x}-{st.st_size:x}"'
        assert n.access_log()[-1].status == 200


def test_if_none_match_with_the_etag_answers_304(tmp_path, root, http):
    with nginx_server(tmp_path / "w", root) as n:
        etag = http.request("GET", n.url + "index.json").headers["ETag"]
        r = http.request("GET", n.url + "index.json", headers={"If-None-Match": etag})
        assert (r.status, r.data) == (304, b"")
        assert r.headers["ETag"] == etag
        other = http.request("GET", n.url + "index.json", headers={"If-None-Match": '"x"'})
        assert other.status == 200
        log = n.access_log()
        assert [(e.status, e.if_none_match) for e in log] == [
            (200, None),
            (304, etag),
            (200, '"x"'),
        ]


def test_same_size_and_second_keeps_the_etag(tmp_path, root, http):
    """A publisher must change a file's mtime or size: new content alone is a 304."""
    path = root / "index.json"
    with nginx_server(tmp_path / "w", root) as n:
        etag = http.request("GET", n.url + "index.json").headers["ETag"]
        st = path.stat()
        path.write_bytes(b'{"serial": 8}\n')  # same size
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        r = http.request("GET", n.url + "index.json", headers={"If-None-Match": etag})
        assert r.status == 304


def test_range_from_an_offset_answers_206_with_the_tail(tmp_path, root, http):
    data = (root / "crl.bin").read_bytes()
    offset = 123_457
    with nginx_server(tmp_path / "w", root) as n:
        r = http.request("GET", n.url + "crl.bin", headers={"Range": f"bytes={offset}-"})
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes {offset}-{SIZE - 1}/{SIZE}"
        assert r.data == data[offset:]
        beyond = http.request("GET", n.url + "crl.bin", headers={"Range": f"bytes={SIZE}-"})
        assert beyond.status == 416
        entry = n.access_log()[0]
        assert (entry.method, entry.uri, entry.status) == ("GET", "/crl.bin", 206)
        assert (entry.range, entry.bytes, entry.completed) == (
            f"bytes={offset}-",
            SIZE - offset,
            True,
        )


def test_a_transfer_cut_off_under_limit_rate_is_logged_as_such(tmp_path, root, http):
    with nginx_server(tmp_path / "w", root, limit_rate="64k") as n:
        r = http.request("GET", n.url + "crl.bin", preload_content=False)
        assert r.status == 200
        head = r.read(10_000)
        r.close()  # the client goes away mid-transfer
        assert head == (root / "crl.bin").read_bytes()[:10_000]
        wait_for(lambda: n.access_log(), timeout=10, what="the cut-off request's log entry")
        entry = n.access_log()[0]
        assert entry.status == 200 and not entry.completed
        assert 10_000 <= entry.bytes < SIZE


def test_stop_leaves_nothing_listening_and_start_again_works(tmp_path, root, http):
    n = NginxServer(tmp_path / "w", root).start()
    try:
        assert http.request("GET", n.url + "index.json").status == 200
        n.stop()
        assert refused(n.host, n.port)
        n.stop()  # idempotent
        n.start()
        assert http.request("GET", n.url + "index.json").status == 200
        n.kill()
        assert refused(n.host, n.port)
        assert [e.status for e in n.access_log()] == [200, 200]
    finally:
        n.stop()


def test_ipv6_loopback(tmp_path, root, http):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    with nginx_server(tmp_path / "w", root, host="::1") as n:
        assert n.url == f"http://[::1]:{n.port}/"
        assert http.request("GET", n.url + "index.json").data == b'{"serial": 7}\n'
    assert not connects("::1", n.port)


def test_tls(tmp_path, root):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls = (tmp_path / "cert.pem", tmp_path / "key.pem")
    with (
        nginx_server(tmp_path / "w", root, tls=tls) as n,
        urllib3.PoolManager(ca_certs=str(tmp_path / "ca.pem"), retries=False) as pool,
    ):
        assert n.url.startswith("https://")
        r = pool.request("GET", n.url + "crl.bin", headers={"Range": "bytes=0-99"})
        assert (r.status, r.data) == (206, (root / "crl.bin").read_bytes()[:100])


def test_a_bad_configuration_fails_start_with_the_error_log(tmp_path, root):
    n = NginxServer(tmp_path / "w", root, limit_rate="fast")
    with pytest.raises(ProcessError, match="invalid value"):
        n.start()
    assert n.proc is None


def test_missing_program_names_the_package():
    with pytest.raises(ProcessError, match="Debian package nginx"):
        find_program("essc-no-such-program", package="nginx")
