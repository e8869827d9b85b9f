"""The e-SSC verification engine.

Checks electronic social security card presentations: two Ed25519 signatures each
(issuer over the credential, holder over the presentation), trust-list, validity,
freshness, revocation and replay checks, in whole batches through a native core.
"""

__version__ = "0.1.0"
