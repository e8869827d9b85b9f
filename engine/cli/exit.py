"""The one error policy of every command line (``python -m engine`` and the load
generator): exit status 0 when the command did what was asked, 1 when it ran and its
answer is negative (a presentation not OK, a load run that missed its targets), 2 when
it could not run: bad arguments or input, a file that cannot be read, a server that
cannot be reached.  A status-2 error is one ``error:`` line on stderr, never a
traceback; anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from engine.errors import EsscError

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT

A = TypeVar("A")


def run_command(command: Callable[[A], int], args: A) -> int:
    """Runs ``command(args)`` under the policy above and returns the exit status."""
    try:
        return command(args)
    except (EsscError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


class CommandError(EsscError):
    """A command's arguments or input are unusable (status 2, one ``error:`` line)."""
