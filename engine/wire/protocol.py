"""The request/response protocol (docs/PROTOCOL.md): parsing requests, building responses.

Everything here is a pure function of bytes and values, shared by the server, the
client library and the load generator, so the document, the server and the clients
cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import msgpack

from engine.errors import EsscError
from engine.formats.credentials import CARD_NUMBER_RE, SERIAL_BYTES
from engine.verdicts import Verdict
from engine.wire.framing import encode as encode_frame

VERIFY = "verify"
VERIFY_BATCH = "verify_batch"
REVOCATION_CHECK = "revocation_check"
STATUS = "status"
PING = "ping"

# Error codes (the "error" field of an error response).
FRAME_TOO_LARGE = "frame_too_large"  # connection closed
FRAME_TIMEOUT = "frame_timeout"  # connection closed
TOO_MANY_ERRORS = "too_many_errors"  # connection closed
SERVER_FULL = "server_full"  # connection closed
UNDECODABLE = "undecodable"
BAD_REQUEST = "bad_request"
UNKNOWN_TYPE = "unknown_type"
TOO_MANY_ITEMS = "too_many_items"
NO_REVOCATION_DATA = "no_revocation_data"
INTERNAL_ERROR = "internal_error"

MAX_REQUEST_ID = 2**64 - 1
CONTEXT_KEYS = ("merchant_id", "terminal_id")
_CONTEXT_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")

_packer = msgpack.Packer(use_bin_type=True)


class RequestError(EsscError):
    """A request the server answers with an error response (connection stays open)."""

    def __init__(self, code: str, message: str, request_id: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class Request(NamedTuple):
    type: str
    id: int
    presentations: list[bytes]  # verify (one item), verify_batch
    context: dict[str, Any] | None
    message: dict[str, Any]  # the decoded request, for the less frequent types


class _Map(dict[str, Any]):
    """A decoded msgpack map: its str keys, and how many keys it had that are neither
    str nor bin (bin keys are unknown keys, ignored like any other)."""

    __slots__ = ("bin_keys", "other_keys")
    bin_keys: int
    other_keys: int


def _map(pairs: list[Any]) -> _Map:
    # Maps are built here rather than by msgpack so that a key of another type (an
    # int, or an array, which could not even be a dict key) still leaves a map whose
    # id can be read: the error then names the request.
    out = _Map()
    out.bin_keys = out.other_keys = 0
    for key, value in pairs:
        if type(key) is str:
            out[key] = value
        elif type(key) is bytes:
            out.bin_keys += 1
        else:
            out.other_keys += 1
    return out


def parse_request(payload: bytes, max_items: int) -> Request:
    """Decode and validate one request frame; RequestError says what is wrong."""
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=False, object_pairs_hook=_map)
    except Exception:
        raise RequestError(UNDECODABLE, "the frame is not one valid msgpack value") from None
    if type(msg) is not _Map:
        raise RequestError(BAD_REQUEST, "a request must be a msgpack map")
    rid = msg.get("id")
    if type(rid) is not int or not 0 <= rid <= MAX_REQUEST_ID:
        raise RequestError(BAD_REQUEST, "'id' must be an unsigned 64-bit integer")
    if msg.other_keys:
        raise RequestError(BAD_REQUEST, "the keys of a request map must be str (or bin)", rid)
    kind = msg.get("type")
    context = msg.get("context")
    if context is not None:
        context = _context(context, rid)
    if kind == VERIFY:
        pres = msg.get("presentation")
        if type(pres) is not bytes:
            raise RequestError(BAD_REQUEST, "'presentation' must be bin", rid)
        return Request(VERIFY, rid, [pres], context, msg)
    if kind == VERIFY_BATCH:
        items = msg.get("presentations")
        if type(items) is not list or not items:
            raise RequestError(BAD_REQUEST, "'presentations' must be a non-empty array", rid)
        if len(items) > max_items:
            raise RequestError(
                TOO_MANY_ITEMS, f"{len(items)} presentations exceeds the limit of {max_items}", rid
            )
        for item in items:
            if type(item) is not bytes:
                raise RequestError(BAD_REQUEST, "'presentations' must hold bin values", rid)
        return Request(VERIFY_BATCH, rid, items, context, msg)
    if kind == REVOCATION_CHECK:
        cards = msg.get("cards", [])
        serials = msg.get("credentials", [])
        if type(cards) is not list or any(type(c) is not str for c in cards):
            raise RequestError(BAD_REQUEST, "'cards' must be an array of str", rid)
        if type(serials) is not list or any(type(s) is not bytes for s in serials):
            raise RequestError(BAD_REQUEST, "'credentials' must be an array of bin", rid)
        if not cards and not serials:
            raise RequestError(BAD_REQUEST, "give at least one id in 'cards' or 'credentials'", rid)
        if len(cards) + len(serials) > max_items:
            raise RequestError(TOO_MANY_ITEMS, f"more than {max_items} ids", rid)
        # An id that cannot exist is an error, not "not revoked": the answer would be
        # indistinguishable from a real look-up.
        for k, card in enumerate(cards):
            if not CARD_NUMBER_RE.match(card):
                raise RequestError(
                    BAD_REQUEST,
                    f"cards[{k}] is not a card number (a capital letter and 8 digits)",
                    rid,
                )
        for k, serial in enumerate(serials):
            if len(serial) != SERIAL_BYTES:
                raise RequestError(
                    BAD_REQUEST,
                    f"credentials[{k}] is not a 16-byte serial ({len(serial)} bytes)",
                    rid,
                )
        return Request(REVOCATION_CHECK, rid, [], context, msg)
    if kind == STATUS:
        return Request(STATUS, rid, [], context, msg)
    if kind == PING:
        return Request(PING, rid, [], context, msg)
    if type(kind) is not str:
        raise RequestError(BAD_REQUEST, "'type' must be str", rid)
    raise RequestError(UNKNOWN_TYPE, f"unknown request type {kind[:40]!r}", rid)


def _context(value: Any, rid: int) -> dict[str, Any]:
    if type(value) is not _Map:
        raise RequestError(BAD_REQUEST, "'context' must be a map", rid)
    if value.other_keys or value.bin_keys:
        raise RequestError(BAD_REQUEST, "the keys of 'context' must be str", rid)
    for key, v in value.items():
        if key not in CONTEXT_KEYS:
            raise RequestError(BAD_REQUEST, f"unknown context key {str(key)[:40]!r}", rid)
        if type(v) is not str or not _CONTEXT_RE.match(v):
            raise RequestError(BAD_REQUEST, f"context {key} must be 1-64 of [A-Za-z0-9._:-]", rid)
    return value


# --- responses -------------------------------------------------------------------------


def result_map(
    verdict: int, reason: str | None, claims: dict[str, Any] | None, repeat: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {"verdict": int(verdict)}
    if reason:
        out["reason"] = reason
    if claims is not None:
        out["claims"] = claims
    if repeat:  # a safe retry: the answer the same relying party got before
        out["repeat"] = True
    return out


def verify_response(
    rid: int,
    verdict: int,
    reason: str | None,
    claims: dict[str, Any] | None,
    repeat: bool = False,
) -> bytes:
    return encode_frame(_packer.pack({"id": rid, **result_map(verdict, reason, claims, repeat)}))


def batch_response(rid: int, results: list[dict[str, Any]]) -> bytes:
    return encode_frame(_packer.pack({"id": rid, "results": results}))


def busy_response(rid: int, kind: str, count: int, reason: str) -> bytes:
    if kind == VERIFY:
        return verify_response(rid, Verdict.BUSY, reason, None)
    return batch_response(rid, [{"verdict": int(Verdict.BUSY), "reason": reason}] * count)


def error_response(rid: int | None, code: str, message: str) -> bytes:
    return encode_frame(_packer.pack({"id": rid, "error": code, "message": message}))


def response(rid: int, fields: dict[str, Any]) -> bytes:
    return encode_frame(_packer.pack({"id": rid, **fields}))


# --- requests (for clients) ------------------------------------------------------------


def request(rid: int, kind: str, **fields: Any) -> bytes:
    """One request frame: ``request(7, "verify", presentation=b"...")``."""
    return encode_frame(_packer.pack({"id": rid, "type": kind, **fields}))
