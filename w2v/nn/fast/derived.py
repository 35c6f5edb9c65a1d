"""Weights derived from parameters, kept between inference calls.

Some layers compute with a form of their parameters rather than the parameters
themselves: the positional convolution's weight-normed weight, and on a CPU its kernel
transform (:mod:`w2v.nn.fast.fft_conv`) and the channels-last copies oneDNN's
convolutions are fastest with. Made on every call they cost
a pass over the weight each (on wav2vec2-base, 9 ms of a 400 ms forward pass: the
positional weight's norm and its channels-last copy). :func:`cached` keeps the derived
tensor on the module while its sources are unchanged: the same storage and the same
version counter, which every in-place change (``load_state_dict``, an optimiser step,
``copy_``) advances. Only calls that record no gradient use it, and only for sources
that have a version counter (not inference tensors); training, torch.compile and export
derive it afresh each call. Stale forms are not kept: a call that finds the sources
changed drops the owner's forms for their old values, and :func:`release` drops them
all (``Model`` does so whenever it moves to another device or dtype).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch import nn


def _signature(sources: tuple[torch.Tensor, ...]) -> tuple | None:
    """What identifies the sources' current values; None when that cannot be known."""
    if any(s.is_inference() for s in sources):
        return None  # inference tensors keep no version counter
    return tuple((s.data_ptr(), s._version, s.dtype, s.device, s.shape) for s in sources)


def cached(
    owner: nn.Module, name: Hashable, make: Callable[[], torch.Tensor], *sources: torch.Tensor
) -> torch.Tensor:
    """``make()``, reused from the previous call under ``name`` while ``sources`` are
    unchanged, in calls that record no gradient; else made afresh. All the forms an
    ``owner`` keeps must derive from the same ``sources``: a call that finds them changed
    drops every form kept for their old values."""
    if (
        torch.is_grad_enabled()
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
    ):
        return make()
    signature = _signature(sources)
    if signature is None:
        return make()
    store = owner.__dict__.setdefault("_derived", {})
    hit = store.get(name)
    if hit is not None and hit[0] == signature:
        return hit[1]
    # every form kept on one owner derives from the same sources: the ones kept for other
    # values (before an optimiser step, a .to() another device or dtype) are stale
    for key in [key for key, (kept, _) in store.items() if kept != signature]:
        del store[key]
    value = make()
    store[name] = (signature, value)
    return value


def release(owner: nn.Module) -> None:
    """Drop every form kept on ``owner``: for a call that takes a form needing none (the
    CPU forms of a module that now computes on another device)."""
    owner.__dict__.pop("_derived", None)
