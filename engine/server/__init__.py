"""The verification server: the process ops run (docs/OPERATIONS.md).

A request's way through: ``connection`` reads frames off a socket and hands them on;
``batcher`` parses verify requests (in C where it can), admits them against the
in-flight limits (``admission``), fills a batch, and hands it to a worker thread that
runs ``engine.verifier.Verifier.run`` and encodes the responses; the loop delivers them
back to each connection.  ``reload`` swaps trust list and revocation data in while
serving.  ``config`` is the TOML settings, ``metrics`` the Prometheus endpoint,
``logs`` the JSON-lines logs.
"""
