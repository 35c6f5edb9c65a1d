"""Key-table machinery shared by the converters: templates with ``{}`` layer slots."""

from __future__ import annotations

import re

import torch

from w2v.errors import CheckpointError
from w2v.nn.model import Model

_NUM = re.compile(r"(?<=\.)\d+(?=\.|$)")


def template_of(key: str) -> tuple[str, list[str]]:
    """``encoder.layers.3.fc1.weight`` → (``encoder.layers.{}.fc1.weight``, ["3"])."""
    return _NUM.sub("{}", key), _NUM.findall(key)


def rename(
    state: dict[str, torch.Tensor],
    table: dict[str, str],
    ignored: dict[str, str],
    source: str,
    exact: dict[str, str] | None = None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename every key through ``exact`` (literal keys) or ``table`` (templates).

    Keys whose template is in ``ignored`` (template → reason) are dropped and
    returned; any other key is an error naming it.
    """
    exact = exact or {}
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        if key in exact:
            out[exact[key]] = value
            continue
        tmpl, nums = template_of(key)
        if tmpl in table:
            out[table[tmpl].format(*nums)] = value
        elif tmpl in ignored:
            dropped.append(key)
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        )
        raise CheckpointError(f"{source}: unknown weight keys: {shown}")
    return out, dropped


def check_against(
    converted: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str
) -> None:
    """Every expected key present with the expected shape; nothing extra."""
    missing = sorted(set(expected) - set(converted))
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        )
        raise CheckpointError(f"{source}: missing weight keys: {shown}")
    extra = sorted(set(converted) - set(expected))
    if extra:
        raise CheckpointError(
            f"{source}: weights not used by the configured architecture: {', '.join(extra[:5])}"
        )
    for k, v in expected.items():
        if tuple(converted[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(converted[k].shape)}, the config implies {tuple(v.shape)}"
            )


def expected_state(config) -> dict[str, torch.Tensor]:
    """The w2v model's state dict for ``config``, on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return Model(config).state_dict()
