"""The exception types users catch, and the one way an exception becomes a one-line message.

Every error w2v raises for bad input is one of these, with a message of one
line that names the input and says what was wrong; the CLI prints it after
``error:`` and exits with the code the README documents.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or converted; the message names the file and the problem."""


class HubError(CheckpointError):
    """A hub id that cannot be resolved: not installed, offline, not found, or not convertible."""


class AudioError(ValueError):
    """One audio input cannot be used; the message is a single line saying why."""


class UsageError(ValueError):
    """Bad arguments: no inputs, colliding outputs, an unknown model, a layer out of range."""


def one_line(e: BaseException, limit: int | None = None) -> str:
    """``e``'s message on one line (whitespace collapsed), cut to ``limit`` characters when
    given (for messages that may quote a whole damaged file); the exception's type name
    when it has no message."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
