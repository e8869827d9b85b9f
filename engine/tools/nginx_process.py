"""nginx as a child process serving a directory as static files: the publication
directory the revocation-distribution tests and benchmarks poll (conditional GET with
If-None-Match, resumed downloads with Range).  Everything it writes (configuration,
pid file, logs, temp paths) lies in ``workdir``, so it needs no root.

nginx forms a file's ETag from its mtime (whole seconds) and size, ``"<mtime hex>-<size
hex>"``: two versions of a file of one size written within the same second look the
same to a client polling with If-None-Match.
"""

from __future__ import annotations

import grp
import json
import os
import pathlib
import signal
import subprocess
from dataclasses import dataclass
from types import TracebackType

from engine.tools.processes import (
    ProcessError,
    connects,
    die_with_parent,
    find_program,
    free_port,
    wait_until,
)

# One JSON object a line (escape=json quotes what a client sends); a header the
# request did not carry is logged as "".
LOG_FORMAT = (
    '{"method":"$request_method","uri":"$request_uri","status":"$status",'
    '"bytes":"$body_bytes_sent","range":"$http_range",'
    '"if_none_match":"$http_if_none_match","completion":"$request_completion"}'
)


@dataclass(frozen=True)
class AccessEntry:
    """One request as the access log records it."""

    method: str
    uri: str
    status: int
    bytes: int  # body bytes sent (fewer than asked when the client went away)
    range: str | None  # the Range header, None where absent
    if_none_match: str | None
    completed: bool  # nginx sent the whole response


class NginxProcess:
    """nginx serving ``root`` on ``host:port`` (port None: a free one; "::1" works),
    ETags on, sendfile on; ``limit_rate`` ("64k") slows every response so a test can
    interrupt one; ``tls`` = (certificate, key) paths serves HTTPS.  One process
    (``master_process off``): ``kill()`` is a crash of the very process serving, and
    nothing is left behind to outlive it."""

    def __init__(
        self,
        workdir: pathlib.Path,
        root: pathlib.Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        limit_rate: str | None = None,
        tls: tuple[pathlib.Path, pathlib.Path] | None = None,
    ):
        self.binary = find_program("nginx", package="nginx")
        self.workdir = pathlib.Path(workdir).resolve()
        self.root = pathlib.Path(root).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.limit_rate = limit_rate
        self.tls = tls
        self.config_path = self.workdir / "nginx.conf"
        self.pid_path = self.workdir / "nginx.pid"
        self.error_log_path = self.workdir / "error.log"
        self.access_log_path = self.workdir / "access.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    def _config(self) -> str:
        w = self.workdir
        listen = f"[{self.host}]" if ":" in self.host else self.host
        tls = ""
        if self.tls:
            cert, key = (pathlib.Path(p).resolve() for p in self.tls)
            tls = f"ssl_certificate {cert};\n        ssl_certificate_key {key};"
        # Run by root, nginx would hand its temp directories to nobody: name root's
        # own user (for anyone else the directive is ignored with a warning).
        user = ""
        if os.geteuid() == 0:
            user = f"user root {grp.getgrgid(os.getegid()).gr_name};"
        return f"""\
{user}
daemon off;
master_process off;
worker_processes 1;
pid {self.pid_path};
error_log {self.error_log_path} notice;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    types {{ application/json json; text/plain txt; }}
    log_format essc escape=json '{LOG_FORMAT}';
    access_log {self.access_log_path} essc;
    client_body_temp_path {w}/client_body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    sendfile on;
    etag on;
    server_tokens off;
    server {{
        listen {listen}:{self.port}{" ssl" if self.tls else ""};
        {tls}
        root {self.root};
        {f"limit_rate {self.limit_rate};" if self.limit_rate else ""}
    }}
}}
"""

    def start(self, timeout: float = 20.0) -> NginxProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config())
        self.pid_path.unlink(missing_ok=True)
        with open(self.error_log_path, "ab") as log:
            self.proc = subprocess.Popen(
                # -p, -e: not even the compiled-in prefix or error log outside workdir.
                [self.binary, "-p", f"{self.workdir}/", "-e", str(self.error_log_path),
                 "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        try:
            wait_until(self._ready, timeout, f"nginx on {self.host}:{self.port}")
        except ProcessError as e:
            self.stop()
            raise ProcessError(f"{e}; error log: {self.error_log()[-2000:]}") from None
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessError(f"nginx exited with {self.proc.returncode}")
        # nginx writes its pid file once it has bound the port: a connection alone
        # could reach another server holding the port while nginx retries bind().
        try:
            ours = self.proc is not None and int(self.pid_path.read_text()) == self.proc.pid
        except (FileNotFoundError, ValueError):
            return False
        return ours and connects(self.host, self.port)

    def error_log(self) -> str:
        path = self.error_log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self, at_least: int = 0, timeout: float = 10.0) -> list[AccessEntry]:
        """Every request logged so far, across restarts (nginx logs one when its
        response ends: sent, or abandoned by the client).  The line is written after
        the response's last byte is sent, so a client can have its answer before the
        line exists: ``at_least`` waits until that many entries are there."""
        wait_until(lambda: len(self._entries()) >= at_least, timeout, f"{at_least} log entries")
        return self._entries()

    def _entries(self) -> list[AccessEntry]:
        if not self.access_log_path.exists():
            return []
        entries = []
        for line in self.access_log_path.read_text().splitlines():
            d = json.loads(line)
            entries.append(
                AccessEntry(
                    method=d["method"],
                    uri=d["uri"],
                    status=int(d["status"]),
                    bytes=int(d["bytes"]),
                    range=d["range"] or None,
                    if_none_match=d["if_none_match"] or None,
                    completed=d["completion"] == "OK",
                )
            )
        return entries

    def kill(self) -> None:
        """SIGKILL: a crash, mid-response for whatever it was sending."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), SIGKILL after 10 s; idempotent."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> NginxProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
