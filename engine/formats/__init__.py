"""Every byte the engine signs, checks or stores (docs/FORMATS.md, sections 1-7).

- ``encoding``: canonical msgpack, the one encoding every signed structure uses, and
  ``FormatError``.
- ``credentials``: the credential the issuer signs and the presentation the holder signs.
- ``trustlist``: issuer keys and channels, signed by the trust root.
- ``keys``: key files (trust root, issuer, holder).
- ``wallets``: issued credentials with their holders' seeds (demos, tests, load).
- ``files``: atomic file writing, so a reader never sees half a file.

Nothing here imports the rest of the engine: formats are the bottom floor.
"""
