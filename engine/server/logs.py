"""Structured logs: one JSON object per line, one line per event.

Events carry ids (request ids, merchant and terminal ids, sequence numbers, peer
addresses), never personal data: no card numbers, citizen digests or presentation
bytes are ever passed to the logger.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

LOGGER = "essc"

# Fields every line of this process carries (a supervised worker: its index).
_context: dict[str, Any] = {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        doc.update(_context)
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(doc, separators=(",", ":"), default=str)


def setup(level: str = "info", stream: TextIO | None = None) -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    logger.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


def context(**fields: Any) -> None:
    """Adds ``fields`` to every line this process logs from now on."""
    _context.update(fields)


def event(level: int, name: str, **fields: Any) -> None:
    logging.getLogger(LOGGER).log(level, name, extra={"fields": fields})


class RateLimited:
    """Logs an event at most once per ``interval`` seconds, with how many were skipped."""

    def __init__(self, interval: float = 10.0):
        self.interval = interval
        self._last = 0.0
        self._skipped = 0

    def __call__(self, level: int, name: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._skipped += 1
            return
        if self._skipped:
            fields["suppressed"] = self._skipped
        self._last, self._skipped = now, 0
        event(level, name, **fields)
