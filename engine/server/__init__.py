"""The verification server: the process ops run (docs/OPERATIONS.md).

A request's way through, and the file of each stage:

1. ``server.py``: ``Server`` accepts the TCP (or TLS) connection and counts it against
   the connection limit (``admission.connection_limit``).
2. ``connection.py``: the ``Connection`` splits the bytes it reads into frames and
   hands them to the batcher.
3. ``batcher.py``: ``Batcher.handle_frames`` parses verify requests in C straight into
   the batch being filled (the rest, in Python), admitting each against the in-flight
   and queue-time limits (``admission.py``: ``Admission``) or answering BUSY at once.
   Requests that verify nothing (ping, status, revocation_check) go back to the
   ``Server`` to be answered.
4. ``batcher.py``: a full batch, or one whose latency budget is up, goes to a
   verification thread, which runs ``engine.verifier.Verifier.run`` and encodes the
   responses in C; the loop counts the metrics and sends each connection its buffer.

Beside the path: ``reload.py`` opens the trust list and revocation data and swaps
them in while serving (SIGHUP, the file watcher, unreadable data); ``config.py`` is
the TOML settings, ``metrics.py`` the Prometheus metrics, ``logs.py`` the JSON-lines
logs; ``notify.py`` the systemd notify protocol and the event loop's watchdog task;
``supervisor.py`` runs several such processes on one port (``server.processes``).
The modules import downwards only: ``supervisor`` forks ``server`` processes;
``server`` composes ``batcher``, ``reload``, ``connection`` and ``admission``;
``batcher`` knows connections by their methods, and ``connection`` knows nothing
above it.
"""
