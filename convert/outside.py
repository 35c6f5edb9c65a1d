"""Weights outside the backbone: a task head w2v runs, or weights w2v keeps without running.

A fine-tuned checkpoint stores its backbone (the encoder w2v computes) beside task heads.
:func:`split` sorts a source state dict at the backbone's edge:

* what the key table reads (the backbone, the CTC head, keys dropped with a reason) and
  every key *inside* the backbone goes to :func:`w2v.convert.keys.convert`, where an
  unknown or missing key is an error as always;
* the weights of the head the config names (:class:`~w2v.nn.heads.HeadConfig`) become the
  head's state dict, when they are exactly the weights of that head module;
* the other keys outside the backbone are kept, unchanged, as ``extra`` (non-strict), or
  handed to the key table too, which refuses them (strict): today's ``unknown weight keys``.

Only plausible module paths (``my_head.dense.weight``) holding tensors are kept aside; any
other key (control characters, a value that is not a tensor) stays an error, and a kept
tensor may not claim more elements than its storage holds (an expanded view would be
copied in full when saved).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from w2v.convert.keys import Table, check_shared, some

from w2v.config import Config
from w2v.errors import CheckpointError, shown
from w2v.nn.heads import HeadConfig, build_head

EXTRA_FILE = "extra.safetensors"
"""Where ``w2v convert`` writes the weights it keeps without running (named in notices)."""

MAX_KEY = 300
"""Longest key kept aside; transformers' and fairseq's own are under 100 characters."""

_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")


@dataclass(frozen=True)
class Outside:
    """A source state dict split at the backbone's edge (see the module docstring).

    * ``inner``: the keys for the key table, values unchanged.
    * ``head`` / ``head_state``: the head w2v runs and its weights in the head module's key
      names (None / empty when there is none).
    * ``extra``: keys outside the backbone that w2v does not run, unchanged.
    * ``remarks``: one-line notices (a head the config names whose weights do not fit it).
    """

    inner: dict[str, object]
    head: HeadConfig | None = None
    head_state: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    remarks: tuple[str, ...] = ()


def split(
    state: Mapping[str, object],
    table: Table,
    inside: Callable[[str], bool],
    head: HeadConfig | None,
    config: Config,
    *,
    strict: bool,
    source: str,
) -> Outside:
    """Sort ``state`` at the backbone's edge: ``inside(key)`` says whether a key the table
    does not know lies inside the backbone. ``head``: the head the config names.

    Strict: a head whose weights do not fit is a :class:`CheckpointError`, and unknown keys
    outside the backbone go to ``inner`` (the key table refuses them). Pure: tensors are
    not copied.
    """
    inner: dict[str, object] = {}
    outside: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if (
            isinstance(key, str)
            and table.target(key) is None
            and not table.ignores(key)
            and not inside(key)
            and _keepable(key, value)
        ):
            outside[key] = value
        else:
            inner[key] = value
    remarks: list[str] = []
    head_state: dict[str, torch.Tensor] = {}
    if head is not None:
        expected = expected_head_state(head, config)
        problem = head_problem(outside, expected, only_missing=True)
        if problem is None:
            head_state = {k: outside.pop(k) for k in expected}
        elif strict and outside:  # the weights there are most likely the head, misbuilt
            raise CheckpointError(f"{source}: the config's {head.kind} head {problem}")
        else:  # a config naming a head beside weights without one (or with another) loads
            remarks.append(
                f"{source}: the config names a {head.kind} head, but the checkpoint {problem}; "
                "w2v does not run it"
            )
            head = None
    if strict:
        inner.update(outside)
        outside = {}
    for key, value in (*head_state.items(), *outside.items()):
        check_dense(key, value, source)
    check_shared({**head_state, **outside}, source)
    return Outside(inner, head, head_state, outside, tuple(remarks))


def expected_head_state(head: HeadConfig, config: Config) -> dict[str, torch.Tensor]:
    """The state dict of ``head``'s module on a backbone of ``config``, on the meta device."""
    with torch.device("meta"):
        return build_head(head, config).state_dict()


def head_problem(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    *,
    only_missing: bool = False,
) -> str | None:
    """What keeps ``state`` from being exactly the head weights ``expected``
    (:func:`expected_head_state`) as a phrase ("lacks weights: ...", "has ... of shape
    ..."), or None when it is. ``only_missing``: keys of ``state`` that the head does not
    have are fine (they are other weights)."""
    missing = [k for k in expected if k not in state]
    if missing:
        return f"lacks weights: {some(missing)}"
    extra = [k for k in state if k not in expected]
    if extra and not only_missing:
        return f"has no place for weights: {some(extra)}"
    for key, want in expected.items():
        if state[key].shape != want.shape:
            return (
                f"has {shown(key)} of shape {tuple(state[key].shape)}, its config implies "
                f"{tuple(want.shape)}"
            )
    return None


def check_dense(key: str, value: torch.Tensor, source: str) -> None:
    """A kept tensor may not claim more elements than its storage holds: saving copies it."""
    if value.is_meta:
        return
    if value.numel() * value.element_size() > value.untyped_storage().nbytes():
        raise CheckpointError(
            f"{source}: {shown(key)} claims {value.numel()} elements over a smaller storage "
            "(an expanded view); refused"
        )


def groups(keys: Iterable[str], limit: int = 8) -> str:
    """Keys grouped by their module: ``classifier.dense.weight``, ``classifier.dense.bias``
    → ``classifier.dense.*``; a key without a dot stands alone. The first ``limit`` groups,
    and how many more."""
    return some(
        list(dict.fromkeys(k.rsplit(".", 1)[0] + ".*" if "." in k else k for k in keys)), limit
    )


def unused_notice(source: str, family: str, extra: Mapping[str, torch.Tensor]) -> str:
    """The one-line notice naming the weights kept without running."""
    return (
        f"{source}: kept the {family} encoder; dropped {len(extra)} weights w2v does not run: "
        f"{groups(extra)} (w2v convert keeps them, unchanged, in {EXTRA_FILE})"
    )


def _keepable(key: str, value: object) -> bool:
    """A tensor under a plausible module path: dotted identifiers or indices."""
    return (
        isinstance(value, torch.Tensor)
        and len(key) <= MAX_KEY
        and all(_SEGMENT.fullmatch(s) for s in key.split("."))
    )
