/* The verdict codes (docs/PROTOCOL.md section 4): their one definition on the native
 * side.  engine/verdicts.py is the Python one; tests/test_verdicts.py checks that the
 * two agree, through _core.VERDICT_CODES, which is built from this enum. */
#ifndef ESC_VERDICTS_H
#define ESC_VERDICTS_H

enum {
    ESC_OK = 0,
    ESC_MALFORMED = 1,
    ESC_UNKNOWN_ISSUER = 2,
    ESC_BAD_ISSUER_SIGNATURE = 3,
    ESC_BAD_HOLDER_SIGNATURE = 4,
    ESC_ISSUER_INVALID = 5,
    ESC_UNKNOWN_CHANNEL = 6,
    ESC_CHANNEL_REVOKED = 7,
    ESC_NOT_YET_VALID = 8,
    ESC_EXPIRED = 9,
    ESC_STALE = 10,
    ESC_REVOCATION_DATA_STALE = 11,
    ESC_CARD_REVOKED = 12,
    ESC_CREDENTIAL_REVOKED = 13,
    ESC_REPLAYED = 14,
    ESC_BUSY = 15,
};

#endif
