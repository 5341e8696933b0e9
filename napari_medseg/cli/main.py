"""``napari-medseg``'s entry point: parse, run the command, turn errors into one line.

Every error ends the program with exit code 2 and one line saying what went wrong and what to
do: a :class:`~napari_medseg.errors.MedsegError`'s message as it is; anything else gets a hint
that it was unexpected (``MEDSEG_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..errors import MedsegError
from .parser import build_parser

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .commands import run_command

    try:
        return run_command(args)
    except KeyboardInterrupt:
        print("napari-medseg: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, no traceback: the message says what to do
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"napari-medseg: error: {msg}", file=sys.stderr)
        if not is_user_error(e):
            print("  (unexpected; rerun with MEDSEG_DEBUG=1 for a traceback)", file=sys.stderr)
            if os.environ.get("MEDSEG_DEBUG"):
                raise
        return EXIT_USAGE


def is_user_error(e: BaseException) -> bool:
    """A problem the user can fix: ours (:class:`MedsegError`), or the file system's.

    Plain ``ValueError``/``KeyError`` count too: readers of third-party formats raise them
    for files they cannot interpret.
    """
    return isinstance(e, MedsegError | ValueError | OSError | KeyError)
