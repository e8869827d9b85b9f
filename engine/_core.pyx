# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The engine's native core.

Every entry point takes a whole batch, does the work in C with the GIL released
(split across threads where it pays), and returns numpy arrays.  Stages that a server
batch makes into microseconds of work (replay, revocation look-ups) keep the GIL below
``_NOGIL_ITEMS`` items: handing it over and back would cost more in thread switches.
The C sources live in ``engine/native/``, their declarations for Cython in
``engine/includes/`` (one ``.pxd`` per C unit or family), and the core's own classes
are declared in ``_core.pxd``.  Each subsystem's Cython binding is an include file
beside this one, so the boundary stays small and readable:

- ``_core_util.pxi``: what every include shares (common cimports, small helpers).
- ``_core_sodium.pxi``: libsodium, loaded from PyNaCl's bundled copy at import.
- ``_core_sigbatch.pxi``: batch Ed25519 verification and signing.
- ``_core_pipeline.pxi``: the trust list laid out for C, the presentation parser.
- ``_core_wire.pxi``: the request/response codec of the hot path, and its entry points
  for the differential tests and benchmarks.
- ``_core_batch.pxi``: a batch's verdicts stage by stage, and the one-time-nonce table.
- ``_core_requests.pxi``: the server's batches: the requests they came in, and the
  responses encoded in C.
- ``_core_redis.pxi``: the shared replay store's batch work: key slots, commands, answers.
- ``_core_framing.pxi``: splitting a connection's byte stream into frames.
- ``_core_revocation.pxi``: revocation look-ups (Bloom filter, exact tier, deltas).
- ``_core_ed25519.pxi``: test-only entry points into the Ed25519 arithmetic.
"""

include "_core_util.pxi"
include "_core_sodium.pxi"
include "_core_sigbatch.pxi"
include "_core_pipeline.pxi"
include "_core_wire.pxi"
include "_core_batch.pxi"
include "_core_requests.pxi"
include "_core_redis.pxi"
include "_core_framing.pxi"
include "_core_revocation.pxi"
include "_core_ed25519.pxi"
