"""The one base class of every problem a user can fix, whatever the surface.

A :class:`MedsegError`'s message says what is wrong *and* what to do; the surfaces show it as
it is: the CLI as one line and exit code 2, the widget as a notification. Anything else that
escapes is a bug and is reported as unexpected. Subclasses only say where the problem was
found, so that callers can catch the kind they can handle; none adds behaviour.

``ValueError`` is the base for backwards compatibility: callers that caught the old
``ValueError`` subclasses (``InputError``, ``CheckpointError``) keep working.
"""

from __future__ import annotations


class MedsegError(ValueError):
    """A problem the user can fix; the message says how."""


class InputError(MedsegError):
    """The image or the scribbles cannot be used."""


class CheckpointError(MedsegError):
    """A checkpoint that cannot be used (missing, corrupt, unsafe, or for other inputs)."""


class ConfigError(MedsegError):
    """A setting that does not exist here: an unknown preset, model, device or prior."""


class OutputError(MedsegError):
    """An output folder or file that cannot be written (or would replace an input)."""


def choices_error(what: str, value: object, choices) -> ConfigError:
    """``unknown <what> 'x'; choose one of: a, b`` — the one wording for a bad choice."""
    return ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(map(str, choices))}")
