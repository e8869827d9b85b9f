"""The e-SSC verification engine.

Checks electronic social security card presentations: two Ed25519 signatures each
(issuer over the credential, holder over the presentation), trust-list, validity,
freshness, revocation and replay checks, in whole batches through a native core.

Where a request goes (docs/PROTOCOL.md; each package's docstring says more):

    engine.server   the process: connections, admission, micro-batches, workers, reload
       |                        (the wire messages: engine.wire, parsed in C where it can)
    engine.verifier the pipeline over one batch, stage by stage:
       |              check (parse, trust, time, both signatures: engine.sigverify's core)
       |              -> revocation (engine.revocation, a RevocationSource)
       |              -> replay (engine.replay, a ReplayStore)
    engine._core    the native core (engine/_core.pyx, engine/native/*.c), once per stage
       |
    engine.formats  every byte signed or read; engine.verdicts the answers

``engine.tools`` (issuer and holder side) and ``engine.cli`` (the command line) sit
beside and above; the serving path never imports them.  The names below are the
library's public surface.
"""

from engine._version import __version__
from engine.errors import EsscError
from engine.formats.encoding import FormatError
from engine.formats.trustlist import TrustList
from engine.replay import MemoryReplayCache, ReplayStore
from engine.revocation import CARD, CREDENTIAL, RevocationSource, SetRevocation
from engine.revocation.store import RevocationStore
from engine.sigverify import verify_batch
from engine.verdicts import Result, Verdict
from engine.verifier import Verifier, VerifierConfig
from engine.wire.client import Client, ServerError
from engine.wire.pool import FleetClient

__all__ = [
    "CARD",
    "CREDENTIAL",
    "Client",
    "EsscError",
    "FleetClient",
    "FormatError",
    "MemoryReplayCache",
    "ReplayStore",
    "Result",
    "RevocationSource",
    "RevocationStore",
    "ServerError",
    "SetRevocation",
    "TrustList",
    "Verdict",
    "Verifier",
    "VerifierConfig",
    "__version__",
    "verify_batch",
]
