"""The engine's one error vocabulary.

Every exception the engine raises on purpose derives from ``EsscError``, so a caller
(the command line above all, engine/cli/main.py) can tell "this input or this file is
wrong", reported as one line, from a bug, which keeps its traceback.  Errors about
malformed data also derive from ``ValueError`` and errors about unreadable files from
``OSError``, so code written against the standard classes keeps working.
"""

from __future__ import annotations


class EsscError(Exception):
    """Base of every error the engine and its tools raise deliberately."""
