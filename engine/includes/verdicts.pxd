# The verdict codes, their one native definition (engine/native/verdicts.h).

cdef extern from "native/verdicts.h":
    enum:
        ESC_OK
        ESC_MALFORMED
        ESC_UNKNOWN_ISSUER
        ESC_BAD_ISSUER_SIGNATURE
        ESC_BAD_HOLDER_SIGNATURE
        ESC_ISSUER_INVALID
        ESC_UNKNOWN_CHANNEL
        ESC_CHANNEL_REVOKED
        ESC_NOT_YET_VALID
        ESC_EXPIRED
        ESC_STALE
        ESC_REVOCATION_DATA_STALE
        ESC_CARD_REVOKED
        ESC_CREDENTIAL_REVOKED
        ESC_REPLAYED
        ESC_BUSY
