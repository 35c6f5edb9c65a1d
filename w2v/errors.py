"""The exception types users catch, and the one way an exception becomes a one-line message.

Every error w2v raises for bad input is one of these, with a message of one
line that names the input and says what was wrong; the CLI prints it after
``error:`` and exits with the code the README documents. Text taken from an
input (a key, a module name, a path, a config value) enters a message only
through :func:`shown`, so a hostile file cannot clear the screen, fake a
success line or flood the terminal.
"""

from __future__ import annotations

import reprlib
import unicodedata

MAX_SHOWN = 200
"""Characters of one piece of input-supplied text (a key, a name, a value) quoted in a message."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or converted; the message names the file and the problem.

    The message is kept to one terminal-safe line whatever went into it: newlines and other
    control characters are escaped as :func:`shown` does (its pieces are cut by ``shown``).
    """

    def __init__(self, message: object = "", *args: object):
        super().__init__(_escape(str(message)), *args)


class HubError(CheckpointError):
    """A hub id that cannot be resolved: not installed, offline, not found, or not convertible."""


class AudioError(ValueError):
    """One audio input cannot be used; the message is a single line saying why."""


class UsageError(ValueError):
    """Bad arguments: no inputs, colliding outputs, an unknown model, a layer out of range."""


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, MAX_SHOWN, MAX_SHOWN


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """``value`` safe to print on a terminal: a str as is, an exception as its message,
    anything else as a ``repr`` that looks only a few levels and items deep (a value built of
    shared references may stand for billions of items).

    Control and format characters (newlines, ``ESC`` of ANSI sequences, bidi
    overrides, line separators) are written as Python escapes (``\\n``,
    ``\\x1b``, ``\\u202e``), and the text is cut to ``limit`` characters.
    """
    if isinstance(value, str):
        text = value
    elif isinstance(value, BaseException):
        text = str(value)
    elif isinstance(value, int) and value.bit_length() > 64:
        text = f"<int of {value.bit_length()} bits>"
    else:
        try:
            text = _repr.repr(value)
        except Exception:  # noqa: BLE001 - the repr of hostile data may fail in any way
            text = f"<{type(value).__name__}>"
    text = _escape(text[: limit + 1])  # escape only what can be shown: a key may be megabytes
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(value: object, limit: int = 80) -> str:
    """A value from an input as a message quotes it: a str in quotes (``'gelu_new'``),
    anything else as :func:`shown` writes it; escaped and cut to ``limit`` characters."""
    return shown(repr(value[: limit + 1]) if isinstance(value, str) else value, limit)


def escaped(text: str) -> str:
    """``text`` with control and format characters escaped as :func:`shown` does, but not
    cut: for a whole line built of pieces already cut (a notice that names its input)."""
    return _escape(text)


def _escape(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(
        c
        if c == " " or unicodedata.category(c)[0] not in "CZ"
        else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def one_line(e: BaseException, limit: int | None = None) -> str:
    """``e``'s message on one line (whitespace collapsed, control characters escaped as
    :func:`shown` does), cut to ``limit`` characters when given (for messages that may
    quote a whole damaged file); the exception's type name when it has no message."""
    text = _escape(" ".join(str(e).split())) or type(e).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
