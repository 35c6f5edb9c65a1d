"""Configs as plain data: omegaconf records and ``argparse.Namespace`` → dicts, lists, values."""

from __future__ import annotations

import argparse
import re
from typing import Any

from w2v.convert.safe_pickle.unpickler import MAX_NESTING, Record

MAX_CONFIG_NODES = 100_000
"""Most values a checkpoint's config may expand to as plain data. Shared references in a
pickle cost nothing until expanded: 30 levels of a list holding the level below twice are
2**30 values ("billion laughs"). fairseq configs have a few thousand."""

_OMEGACONF_CONTAINERS = ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig")
_INTERPOLATION = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")


def to_plain(obj: Any) -> Any:
    """Turn omegaconf records, ``Namespace`` and enum records into plain dicts, lists and values.

    omegaconf's missing value ``???`` becomes None; a whole-string
    interpolation ``${a.b}`` is resolved against the enclosing configs,
    innermost first, and left as the string when it cannot be.
    """
    return _resolve(_plain(obj, 0, [MAX_CONFIG_NODES]), [])


def _plain(obj: Any, depth: int, budget: list[int]) -> Any:
    """``budget``: values still allowed to be visited, shared by the whole walk."""
    if depth > MAX_NESTING:
        raise ValueError(f"configuration nested more than {MAX_NESTING} deep")
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"configuration expands to more than {MAX_CONFIG_NODES} values")

    def plain(value: Any) -> Any:
        return _plain(value, depth + 1, budget)

    if isinstance(obj, argparse.Namespace):
        return {k: plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, Record):
        state = Record.state_dict(obj)
        if obj.qualname in _OMEGACONF_CONTAINERS:
            content = state.get("_content")
            if isinstance(content, str) and content == "???":
                return None
            return plain(content)
        if obj.qualname.startswith("omegaconf.nodes."):
            value = state.get("_val")
            return None if isinstance(value, str) and value == "???" else plain(value)
        if not state and len(obj.args) == 1 and isinstance(obj.args[0], (str, int, float, bool)):
            return obj.args[0]  # an enum member: Choices("layer_norm")
        if state and not obj.args and not obj.qualname.startswith(("omegaconf.", "typing.")):
            return plain(state)  # a fairseq dataclass config pickled as itself
    return obj


def _resolve(obj: Any, parents: list[dict]) -> Any:
    if isinstance(obj, dict):
        scope = [obj, *parents]
        return {k: _resolve(v, scope) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, parents) for v in obj]
    if isinstance(obj, str):
        m = _INTERPOLATION.match(obj)
        if m:
            for root in parents:
                found, value = _lookup(root, m.group(1).split("."))
                if found and not (isinstance(value, str) and _INTERPOLATION.match(value)):
                    return value
    return obj


def _lookup(root: Any, path: list[str]) -> tuple[bool, Any]:
    node = root
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node
