"""Layer specs: ``"all"``, ``"12"``, ``"0,6,12"``, ``"4-8"``, ``"-1"``, or indices.

Index 0 is the transformer input, k the output of layer k (before any final
LayerNorm); negatives count from the end (-1 is the last layer). Parsing needs
no model; turning indices into layers of a given depth is the model's own rule
(:func:`w2v.nn.model.layer_indices`, behind ``Model.resolve_layers``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from w2v.errors import UsageError, quoted
from w2v.nn.model import layer_index, layer_indices

LayerSpec = str | int | Sequence[int] | None

MAX_INDEX_DIGITS = 6
"""Digits of a layer index in a spec at most: far past any model's depth, and a longer
number is refused as such rather than parsed (a 5,000-digit int costs time to parse)."""

_INT = r"-?[0-9]+"  # ASCII digits only: "١٢" is not read as 12
_RANGE = re.compile(rf"({_INT})-({_INT})")


def parse_layers(spec: LayerSpec) -> list[int | tuple[int, int]] | None:
    """``"all"`` → None; ``"12"``, ``"0,6,12"``, ``"-1"`` → indices; ``"4-8"`` → ``(4, 8)``,
    an inclusive range.

    Indices stay as written (negatives need the model's depth, see
    :func:`resolve_layers`). Raises :class:`UsageError` on bad syntax, TypeError for an
    index that is not an integer (a float or a bool is never truncated to one).
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        if isinstance(spec, Iterable) and not isinstance(spec, bytes):
            return [layer_index(i) for i in spec]
        try:
            return [layer_index(spec)]
        except TypeError:
            raise TypeError(
                "layers must be 'all', an index, a list of indices or a spec string "
                f"('0,6,12', '4-8', '-1'); got {type(spec).__name__} {spec!r:.40}"
            ) from None
    text = spec.strip().lower()
    if text == "all":
        return None
    out: list[int | tuple[int, int]] = []
    for token in text.split(","):
        token = token.strip()
        if re.fullmatch(_INT, token):
            out.append(_index(token, spec))
            continue
        m = _RANGE.fullmatch(token)
        if not m:
            raise UsageError(
                f"bad layer spec {quoted(spec)}: expected 'all', an index ('12', '-1'), a list "
                "('0,6,12') or an inclusive range ('4-8')"
            )
        lo, hi = _index(m.group(1), spec), _index(m.group(2), spec)
        # "-3--1" is in order, "8-4" is not; "2--1" (2 to the last) is decided once the depth is known
        if lo > hi and not (lo >= 0 > hi):
            raise UsageError(
                f"bad layer range {quoted(token)} in {quoted(spec)}: start is after end"
            )
        out.append((lo, hi))
    return out


def _index(digits: str, spec: str) -> int:
    if len(digits.lstrip("-")) > MAX_INDEX_DIGITS:
        raise UsageError(
            f"layer index {quoted(digits, 20)} in {quoted(spec)} is out of range "
            f"(more than {MAX_INDEX_DIGITS} digits)"
        )
    return int(digits)


def resolve_layers(spec: LayerSpec, num_layers: int) -> list[int]:
    """Layer indices in ``0..num_layers`` for ``spec``, in the order given, duplicates dropped.

    Raises :class:`UsageError` naming the valid range for an index out of range.
    """
    parsed = parse_layers(spec)
    if parsed is None:
        return _indices(None, num_layers)
    out: list[int] = []
    for item in parsed:
        if isinstance(item, tuple):
            lo, hi = _indices(item, num_layers)
            if lo > hi:
                raise UsageError(f"bad layer range {item[0]}-{item[1]}: start is after end")
            idx = list(range(lo, hi + 1))
        else:
            idx = _indices([item], num_layers)
        out.extend(i for i in idx if i not in out)
    if not out:
        raise UsageError("no layers asked for")
    return out


def _indices(layers: Sequence[int] | None, num_layers: int) -> list[int]:
    """The model's rule, its error a usage error (the user named the layer)."""
    try:
        return layer_indices(layers, num_layers)
    except ValueError as e:
        raise UsageError(str(e)) from None
