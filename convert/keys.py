"""The key-table engine both converters use: a source checkpoint's keys → w2v's keys.

A :class:`Table` says what happens to every key a checkpoint may hold:

* ``keys``: source template → w2v template. A ``{}`` segment is a layer index,
  carried over to the target in order; a segment of digits is literal
  (fairseq's ``nn.Sequential`` slots: ``conv_layers.{}.0.weight`` is each
  layer's conv, ``conv_layers.{}.2.1.weight`` the LayerNorm inside slot 2); a
  template without ``{}`` is an exact key.
* ``ignored``: source template → why it is dropped. A last segment ``*``
  stands for one or more further segments (``quantizer.*``).
* ``transforms``: a quirk in how a checkpoint stores one w2v weight, undone
  after renaming (:class:`Transform`).
* ``fills``: a w2v weight some checkpoints leave out, made when no key gives
  it (:class:`Fill`).
* ``hints``: keys of models w2v does not read (templates as in ``ignored``)
  → a hint added to the unknown-key error.

:func:`convert` renames a state dict through a table and checks the result
against the model the config describes (:func:`check_state`, which also
checks a w2v checkpoint's own weights). Every failure is a
:class:`CheckpointError` naming the source key: a key the table does not know,
two keys giving one w2v key, a weight that is not a tensor, a weight the
model has no place for, a weight it needs that nothing gives, a wrong shape.

The model the config describes is built (on the meta device: sizes cost
nothing) only after the number of layers and blocks it repeats agrees with
the weights (:data:`REPEATS`), so a config naming 10**5 layers beside weights
of 2 is refused at once; a fill never makes a weight larger than all the
given weights together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from w2v.config import Config
from w2v.errors import CheckpointError, shown
from w2v.nn.model import Model

SLOT = "{}"
REST = "*"


@dataclass(frozen=True)
class Transform:
    """Undo a checkpoint quirk: ``fn(weight, expected)`` → the weight as w2v stores it.

    ``target`` is the w2v key; ``expected`` the model's tensor for it (on the meta
    device: shape and dtype only). Applied whichever source key gave the weight.
    """

    target: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    reason: str


@dataclass(frozen=True)
class Fill:
    """Make the w2v weight ``target`` when no source key gives it and the model needs it.

    ``fn(expected, converted)`` → the weight; ``converted`` is everything renamed
    so far (to match its dtype).
    """

    target: str
    fn: Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]
    reason: str


class _Pattern:
    """One template, split at dots: names match themselves, ``{}`` any index, ``*`` the rest."""

    def __init__(self, template: str, rest_allowed: bool = False):
        segments = template.split(".")
        self.template = template
        self.rest = segments[-1] == REST
        self.segments = tuple(segments[:-1] if self.rest else segments)
        if (self.rest and not rest_allowed) or any(
            REST in s or (SLOT in s and s != SLOT) for s in self.segments
        ):
            raise ValueError(f"bad key template {template!r}")
        self.slots = self.segments.count(SLOT)
        self.shape = _shape(self.segments)

    def match(self, segments: tuple[str, ...]) -> list[str] | None:
        """The indices the key puts in the ``{}`` slots, or None when it does not match."""
        if self.rest:
            if len(segments) <= len(self.segments):
                return None
            segments = segments[: len(self.segments)]
        elif len(segments) != len(self.segments):
            return None
        indices = []
        for want, got in zip(self.segments, segments, strict=True):
            if want == SLOT and _is_index(got):
                indices.append(got)
            elif want != got:
                return None
        return indices

    def overlaps(self, other: _Pattern) -> bool:
        """Whether some key matches both (only asked of patterns of the same shape)."""
        return all(
            a == b or SLOT in (a, b) for a, b in zip(self.segments, other.segments, strict=True)
        )


def _is_index(segment: str) -> bool:
    return segment.isascii() and segment.isdigit()


def _shape(segments: tuple[str, ...]) -> tuple[str, ...]:
    """Segments with every index (``{}`` or digits) alike: the lookup key of a table."""
    return tuple(SLOT if s == SLOT or _is_index(s) else s for s in segments)


class Table:
    """A key table (see the module docstring). Tables combine with ``|``.

    Raises ValueError when built from a malformed template, a target whose
    ``{}`` slots differ from its source's, or two entries a key could match both.
    """

    def __init__(
        self,
        keys: Mapping[str, str] | None = None,
        ignored: Mapping[str, str] | None = None,
        transforms: tuple[Transform, ...] = (),
        fills: tuple[Fill, ...] = (),
        hints: Mapping[str, str] | None = None,
    ):
        self.keys = dict(keys or {})
        self.ignored = dict(ignored or {})
        self.transforms = {t.target: t for t in transforms}
        self.fills = {f.target: f for f in fills}
        self.hints = dict(hints or {})
        if len(self.transforms) != len(transforms) or len(self.fills) != len(fills):
            raise ValueError("two transforms or two fills for one w2v key")
        self._renames: dict[tuple[str, ...], list[tuple[_Pattern, str]]] = {}
        self._targets: list[tuple[_Pattern, _Pattern]] = []
        for source, target in self.keys.items():
            src, dst = _Pattern(source), _Pattern(target)
            if src.slots != dst.slots:
                raise ValueError(f"{source!r} → {target!r}: the {SLOT} slots differ")
            same_shape = self._renames.setdefault(src.shape, [])
            clash = next((p.template for p, _ in same_shape if p.overlaps(src)), None)
            if clash is not None:
                raise ValueError(f"key templates {clash!r} and {source!r} overlap")
            same_shape.append((src, target))
            self._targets.append((dst, src))
        self._ignored = [_Pattern(t, rest_allowed=True) for t in self.ignored]
        self._hints = [(_Pattern(t, rest_allowed=True), h) for t, h in self.hints.items()]

    def __or__(self, other: Table) -> Table:
        for mine, theirs in ((self.keys, other.keys), (self.ignored, other.ignored)):
            for key in mine.keys() & theirs.keys():
                if mine[key] != theirs[key]:
                    raise ValueError(f"tables disagree about {key!r}")
        return Table(
            {**self.keys, **other.keys},
            {**self.ignored, **other.ignored},
            (*self.transforms.values(), *other.transforms.values()),
            (*self.fills.values(), *other.fills.values()),
            {**self.hints, **other.hints},
        )

    def prefixed(self, prefix: str) -> Table:
        """The same table for keys stored under ``prefix`` (w2v keys unchanged)."""
        return Table(
            {prefix + k: v for k, v in self.keys.items()},
            {prefix + k: v for k, v in self.ignored.items()},
            tuple(self.transforms.values()),
            tuple(self.fills.values()),
            {prefix + k: v for k, v in self.hints.items()},
        )

    def target(self, key: str) -> str | None:
        """The w2v key ``key`` becomes, or None when the table does not rename it."""
        segments = tuple(key.split("."))
        for pattern, target in self._renames.get(_shape(segments), ()):
            indices = pattern.match(segments)
            if indices is not None:
                return target.format(*indices)
        return None

    def ignores(self, key: str) -> bool:
        segments = tuple(key.split("."))
        return any(p.match(segments) is not None for p in self._ignored)

    def hint(self, key: str) -> str | None:
        segments = tuple(key.split("."))
        return next((h for p, h in self._hints if p.match(segments) is not None), None)

    def source_of(self, target: str) -> str | None:
        """The first source key that would give the w2v key ``target``, or None."""
        segments = tuple(target.split("."))
        for dst, src in self._targets:
            indices = dst.match(segments)
            if indices is not None:
                return src.template.format(*indices)
        return None


def expected_state(config: Config) -> dict[str, torch.Tensor]:
    """The w2v model's state dict for ``config``, on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return Model(config).state_dict()


# Blocks the model repeats, by w2v key prefix: what the config calls the count, and the count.
REPEATS: tuple[tuple[str, str, Callable[[Config], int]], ...] = (
    ("feature_extractor.conv_layers.", "conv layers", lambda c: len(c.conv_dim)),
    ("encoder.layers.", "layers", lambda c: c.num_layers),
    (
        "encoder.pos_conv_embed.layers.",
        "positional conv blocks",
        lambda c: c.pos_conv_depth if c.pos_conv == "stack" else 0,
    ),
)


def convert(
    state: Mapping[str, object], table: Table, config: Config, source: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename ``state`` through ``table`` → (w2v state dict, source keys dropped as ignored).

    Then transforms and fills apply, and the result must be exactly the state
    dict of the model ``config`` describes (keys and shapes, :func:`check_state`).
    Pure: the input is not modified and tensors are only copied where a
    transform does so. ``source`` (a file name) starts every error message.
    """
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}  # w2v key → the source key that gave it
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        target = table.target(key) if isinstance(key, str) else None
        if target is not None:
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(
                    f"{source}: {shown(key)} is a {type(value).__name__}, not a tensor"
                )
            if target in out:
                raise CheckpointError(
                    f"{source}: {shown(origin[target])} and {shown(key)} both give {target}"
                )
            out[target], origin[target] = value, key
        elif isinstance(key, str) and table.ignores(key):
            dropped.append(key)
        else:
            unknown.append(key)
    if unknown:
        hint = next((h for k in unknown if isinstance(k, str) and (h := table.hint(k))), None)
        raise CheckpointError(
            f"{source}: unknown weight keys: {some(unknown)}" + (f" ({hint})" if hint else "")
        )

    def named(target: str) -> str:
        # the key the user would look for in their checkpoint, and w2v's when it differs
        key = origin.get(target) or table.source_of(target) or target
        return key if key == target else f"{key} (w2v {target})"

    check_shared(out, source)
    _check_repeats(out, config, source, named)
    expected = expected_state(config)
    for target, transform in table.transforms.items():
        if target in out and target in expected:
            out[target] = transform.fn(out[target], expected[target])
    given = sum(t.numel() for t in out.values())
    for target, fill in table.fills.items():
        if target not in out and target in expected:
            if expected[target].numel() > given:
                raise CheckpointError(
                    f"{source}: {named(target)} is missing, and the config makes it larger "
                    "than all the given weights together; the config and weights disagree"
                )
            out[target] = fill.fn(expected[target], out)
    check_state(out, config, source, named, expected)
    return out, dropped


def check_state(
    state: Mapping[str, torch.Tensor],
    config: Config,
    source: str,
    named: Callable[[str], str] = str,
    expected: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` (w2v keys) is exactly the state dict of
    the model ``config`` describes: the same keys, each a tensor of the same shape.

    ``named(w2v_key)`` → the key as the user's checkpoint spells it, for messages;
    ``expected``: :func:`expected_state` when the caller has it.
    """
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: {shown(key)} is a {type(value).__name__}, not a tensor"
            )
    if expected is None:
        _check_repeats(state, config, source, named)
        expected = expected_state(config)
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(
            f"{source}: weights the configured architecture has no place for: "
            f"{some([named(k) for k in extra])} (config: {config.num_layers} layers, "
            f"conv_norm {config.conv_norm!r}, pos_conv {config.pos_conv!r}); "
            "the checkpoint's config and weights disagree"
        )
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{source}: missing weight keys: {some([named(k) for k in missing])}")
    for k, want in expected.items():
        if state[k].shape != want.shape:
            raise CheckpointError(
                f"{source}: {shown(named(k))} has shape {tuple(state[k].shape)}, "
                f"the config implies {tuple(want.shape)}"
            )


def check_shared(tensors: Mapping[str, object], source: str) -> None:
    """Raise :class:`CheckpointError` when ``tensors`` claim more bytes together than the
    memory under them holds: keys sharing one storage (views of the same bytes).

    A pickle can name one storage under thousands of keys at the cost of a few bytes each;
    copying them (saving, filling, building the model) would allocate each in full, so a
    file of megabytes would cost gigabytes. Views that split a storage without overlapping,
    as some exporters write, stay within it.
    """
    spans = []
    claimed = 0
    for value in tensors.values():
        if isinstance(value, torch.Tensor) and not value.is_meta:
            storage = value.untyped_storage()
            spans.append((storage.data_ptr(), storage.data_ptr() + storage.nbytes()))
            claimed += value.numel() * value.element_size()
    held, end = 0, None  # bytes of the union of the storages' spans
    for start, stop in sorted(spans):
        if end is None or start >= end:
            held, end = held + stop - start, stop
        elif stop > end:
            held, end = held + stop - end, stop
    if claimed > held:
        raise CheckpointError(
            f"{source}: the weights claim {claimed} bytes but share {held} bytes of data "
            "(several keys are views of the same storage); refused"
        )


def _check_repeats(
    state: Mapping[str, object], config: Config, source: str, named: Callable[[str], str]
) -> None:
    """The blocks the config repeats (:data:`REPEATS`) are the ones the weights have: checked
    before the model is built, which takes time in proportion to the count."""
    for prefix, what, count in REPEATS:
        want = count(config)
        indexed = {
            k: _index(k, prefix) for k in state if isinstance(k, str) and k.startswith(prefix)
        }
        beyond = [k for k, i in indexed.items() if i is not None and i >= want]
        if beyond:
            raise CheckpointError(
                f"{source}: weights the configured architecture has no place for: "
                f"{some([named(k) for k in beyond])} (config: {want} {what}); "
                "the checkpoint's config and weights disagree"
            )
        found = len({i for i in indexed.values() if i is not None})
        if found < want:
            raise CheckpointError(
                f"{source}: the config has {want} {what} but the weights have {found}; "
                "the checkpoint's config and weights disagree"
            )


def _index(key: str, prefix: str) -> int | None:
    """The block index right after ``prefix`` in ``key``, or None when there is none."""
    head = key[len(prefix) :].split(".", 1)[0]
    return int(head) if head.isascii() and head.isdigit() and len(head) <= 9 else None


def some(names: list, limit: int = 5) -> str:
    """The first ``limit`` of ``names`` (keys from the file, so each :func:`shown`), and how
    many more."""
    more = len(names) - limit
    return ", ".join(shown(n) for n in names[:limit]) + (f" (+{more} more)" if more > 0 else "")
