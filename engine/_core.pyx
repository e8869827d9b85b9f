# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The engine's native core.

Every entry point takes a whole batch, does the work in C with the GIL released
(split across threads where it pays), and returns numpy arrays.  Stages that a server
batch makes into microseconds of work (replay, revocation look-ups) keep the GIL below
``_NOGIL_ITEMS`` items: handing it over and back would cost more in thread switches.
The C sources live in ``engine/native/``; each subsystem's Cython binding is an
include file beside this one, so the boundary stays small and readable:

- ``_core_sodium.pxi``: libsodium, loaded from PyNaCl's bundled copy at import.
- ``_core_sigbatch.pxi``: batch Ed25519 verification and signing.
- ``_core_pipeline.pxi``: the verification hot path over whole batches of presentations.
- ``_core_batch.pxi``: a batch's verdicts stage by stage, and the one-time-nonce table.
- ``_core_framing.pxi``: splitting a connection's byte stream into frames.
- ``_core_revocation.pxi``: revocation look-ups (Bloom filter, exact tier, deltas).
- ``_core_ed25519.pxi``: test-only entry points into the Ed25519 arithmetic.
- ``_core_wire.pxi``: the request/response codec of the hot path (test entry points).
"""

cimport numpy as cnp

from engine.errors import EsscError  # a leaf module: the core's errors share the base

cnp.import_array()

cdef Py_ssize_t _NOGIL_ITEMS = 2048

include "_core_sodium.pxi"
include "_core_sigbatch.pxi"
include "_core_pipeline.pxi"
include "_core_wire.pxi"
include "_core_batch.pxi"
include "_core_framing.pxi"
include "_core_revocation.pxi"
include "_core_ed25519.pxi"
