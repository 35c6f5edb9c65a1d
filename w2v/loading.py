"""Building models: random init from a config, or loaded from any supported checkpoint."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from w2v.config import Config
from w2v.convert.load import read_checkpoint
from w2v.errors import UsageError, one_line
from w2v.hub import HUB_ID, resolve_hub
from w2v.nn.model import Model
from w2v.nn.norm import GroupNorm, LayerNorm


def from_config(config: str | Config, *, vocab_size: int | None = None) -> Model:
    """A randomly initialised model (eval mode) from a config name or object."""
    if isinstance(config, str):
        config = Config.from_name(config)
    if vocab_size is not None:
        config = Config.from_dict({**config.to_dict(), "vocab_size": vocab_size})
    return Model(config).eval()


def model_from_checkpoint(ckpt, *, device=None, dtype: torch.dtype | None = None) -> Model:
    """Build the model for a :class:`w2v.convert.checkpoint.Checkpoint` and load its weights strictly."""
    with torch.device("meta"):
        model = Model(ckpt.config, ckpt.info)
    # weights stored in half precision load as float32 unless a dtype is asked for
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    return to(model, device=device, dtype=dtype)


def to(model: Model, *, device=None, dtype: torch.dtype | None = None) -> Model:
    """Move/cast a model; norm layers and conv layer 0 keep float32 parameters under bf16/fp16."""
    if device is not None:
        model.to(device=device)
    if dtype is not None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        model.to(dtype=dtype)
        for m in model.modules():
            if isinstance(m, (LayerNorm, GroupNorm, nn.BatchNorm1d)):
                m.float()
        # conv layer 0 computes in float32 from the waveform (see nn/feature_encoder.py)
        model.feature_extractor.conv_layers[0].float()
    return model


def load(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    compile: bool = False,
) -> Model:
    """Load a model (eval mode) from a w2v checkpoint directory, a Hugging Face model
    directory, a fairseq ``.pt`` file, or a Hugging Face hub id (``org/name``,
    needs ``huggingface_hub``; converted once and cached).

    dtype: float32 (default), bfloat16 or float16 (norms keep computing in
    float32). compile: run the model through :func:`torch.compile` (the first
    call of each kind compiles, which takes a while; see :meth:`Model.compile`).
    Notices about dropped heads are emitted as :class:`UserWarning`.
    """
    p = Path(path)
    if not p.exists() and isinstance(path, str) and HUB_ID.match(path):
        p = resolve_hub(path)
    ckpt = read_checkpoint(p)
    for notice in ckpt.notices:
        warnings.warn(notice, stacklevel=2)
    if isinstance(dtype, str):
        dtype = parse_dtype(dtype)
    model = model_from_checkpoint(ckpt, device=device, dtype=dtype)
    return model.compile() if compile else model


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Compute dtypes by name (the names ``w2v embed --dtype`` offers)."""

_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def parse_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` or ``"bf16"`` → ``torch.bfloat16`` and so on; ValueError on other names."""
    try:
        return DTYPES[_DTYPE_ALIASES.get(name, name)]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None


# For the pipeline: the same, with a UsageError naming what the user gave ----------------


def default_device() -> str:
    """``"cuda"`` when torch sees a GPU, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; :class:`UsageError` when it is malformed or absent."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UsageError(f"invalid device {str(device)!r}: {one_line(e)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {str(device)!r} asked for, but torch sees no CUDA GPU")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {str(device)!r} asked for, but MPS is not available")
    return dev


def load_model(
    model: Any,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    compile: bool = False,
) -> torch.nn.Module:
    """A model object as is (moved/cast when asked), or anything :func:`load` accepts
    (on :func:`default_device` unless ``device`` says otherwise); ``compile`` applies
    :meth:`w2v.nn.model.Model.compile`.

    Raises :class:`UsageError` for an unknown dtype, a device that is malformed or
    absent, or a model path or hub id that cannot be loaded.
    """
    if isinstance(dtype, str):
        try:
            dtype = parse_dtype(dtype)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if device is not None:
        device = check_device(device)
    if isinstance(model, torch.nn.Module):
        if device is not None or dtype is not None:
            model = to(model, device=device, dtype=dtype)
        model.eval()
        return model.compile() if compile else model
    try:
        return load(model, device=device or default_device(), dtype=dtype, compile=compile)
    except (ValueError, OSError, ImportError) as e:
        raise UsageError(f"cannot load model {os.fspath(model)!r}: {one_line(e)}") from None
