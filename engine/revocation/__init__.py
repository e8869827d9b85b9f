"""Revocation data: what the verifier asks of it, and the files that hold it
(docs/FORMATS.md, section 8).

- ``source``: the interface (``RevocationSource``), the id kinds, and an in-memory
  implementation for tests, demos and baselines.
- ``store``: the production source: snapshot plus deltas, memory-mapped from private
  copies, looked up in the native core (Bloom filter, then the exact tier).
- ``private``: the engine's own read-only copies of the configured files, so that an
  operator overwriting or truncating a file can never change what is mapped.
- ``format``: the file layout (header, Bloom filter, fingerprint set) and its checks.
- ``build``: writing snapshots and deltas from lists of ids.
- ``input``: reading those lists (text, one id per line).
"""

from engine.revocation.source import CARD, CREDENTIAL, KINDS, RevocationSource, SetRevocation

__all__ = ["CARD", "CREDENTIAL", "KINDS", "RevocationSource", "SetRevocation"]
