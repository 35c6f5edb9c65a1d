"""Building models: random init from a config, or loaded from any supported checkpoint."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from w2v.atomic import TMP_SUFFIX
from w2v.config import Config
from w2v.convert.checkpoint import (
    CONFIG_FILE,
    HEAD_FILE,
    PRETRAINING_FILE,
    WEIGHTS_FILE,
    Checkpoint,
    is_w2v_dir,
    save,
)
from w2v.convert.load import read_checkpoint
from w2v.convert.outside import EXTRA_FILE
from w2v.errors import CheckpointError, UsageError, one_line, shown
from w2v.hub import HUB_ID, is_hub_id, resolve_hub
from w2v.nn.model import Model
from w2v.nn.norm import GroupNorm, LayerNorm
from w2v.onnx.runtime import BACKENDS, OnnxModel, check_placement


def from_config(config: str | Config, *, vocab_size: int | None = None) -> Model:
    """A randomly initialised model (eval mode) from a config name or object."""
    if isinstance(config, str):
        config = Config.from_name(config)
    if vocab_size is not None:
        config = dataclasses.replace(config, vocab_size=vocab_size)
    return Model(config).eval()


def model_from_checkpoint(ckpt, *, device=None, dtype: torch.dtype | None = None) -> Model:
    """Build the model for a :class:`w2v.convert.checkpoint.Checkpoint` (its task head
    included, as ``task_head``) and load its weights strictly."""
    with torch.device("meta"):
        model = Model(
            ckpt.config,
            ckpt.info,
            ckpt.head,
            unused=list(ckpt.extra),
            pretraining=ckpt.pretraining,
        )
    weights = {
        **ckpt.state_dict,
        **{f"task_head.{k}": v for k, v in ckpt.head_state.items()},
        **{f"pretraining.{k}": v for k, v in ckpt.pretraining_state.items()},
    }
    # weights stored in half precision load as float32 unless a dtype is asked for
    state = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    return to(model, device=device, dtype=dtype)


def to(model: Model, *, device=None, dtype: torch.dtype | None = None) -> Model:
    """Move/cast a model, its heads included; norm layers and conv layer 0 keep float32
    parameters under bf16/fp16. A task head computes in the model's dtype (its pooling
    statistics in float32, see :mod:`w2v.nn.heads.pooling`)."""
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
    strict: bool = False,
    backend: str = "torch",
    arch: str | None = None,
) -> Model | OnnxModel:
    """Load a model (eval mode) from a w2v checkpoint directory, a Hugging Face model
    directory, a fairseq ``.pt`` file, or a Hugging Face hub id (``org/name`` where no
    such local path exists, see :func:`w2v.hub.is_hub_id`; needs ``huggingface_hub``;
    converted once and cached).

    dtype: float32 (default), bfloat16 or float16 (norms keep computing in
    float32). compile: run the model through :func:`torch.compile` (the first
    call of each kind compiles, which takes a while; see :meth:`Model.compile`).
    arch: the torchaudio preset name of a torchaudio ``.pth`` whose architecture its
    shapes cannot tell (see :func:`w2v.convert.load.read_torchaudio`).

    A transformers ``*ForPreTraining`` directory or a fairseq wav2vec 2.0 / HuBERT
    pretraining ``.pt`` keeps its pretraining parts as ``model.pretraining`` (mask
    embedding, quantizer, projections, label embeddings; :mod:`w2v.train` uses them).
    A task head w2v runs (sequence or frame classification, x-vector, the community
    speech classification) is loaded with its labels: :meth:`Model.head`,
    :attr:`Model.id2label`. Other weights outside the backbone (a head w2v cannot run) are
    not loaded, with a one-line notice naming them; ``strict=True`` refuses such a
    checkpoint (:class:`CheckpointError`). Notices are emitted as :class:`UserWarning`.

    backend: ``"torch"`` (w2v's modules) or ``"onnxruntime"`` (the ``w2v[onnx]`` extra):
    a :class:`~w2v.onnx.OnnxModel` with the same methods, computed by ONNX Runtime in
    float32 on the CPU, from any of the above or from a graph written by
    ``w2v export --onnx`` (``.onnx``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        check_placement(device, dtype, compile)
        if Path(path).suffix == ".onnx" and Path(path).is_file():
            return OnnxModel.from_file(path)
        return OnnxModel.from_model(load(path, strict=strict, arch=arch))
    p = Path(path)
    if not p.exists():
        if is_hub_id(path):
            p = resolve_hub(path)
        else:
            raise CheckpointError(
                f"{shown(os.fspath(path))}: no such file or directory{_not_hub(path)}"
            )
    ckpt = read_checkpoint(p, strict=strict, arch=arch)
    for notice in ckpt.notices:
        warnings.warn(notice, stacklevel=2)
    if isinstance(dtype, str):
        dtype = parse_dtype(dtype)
    model = model_from_checkpoint(ckpt, device=device, dtype=dtype)
    return model.compile() if compile else model


def _not_hub(path: str | os.PathLike) -> str:
    """Why a missing ``path`` was not tried as a hub id (see :func:`w2v.hub.is_hub_id`), for
    its error message, which then names both readings."""
    if not isinstance(path, str) or path.startswith((".", "/", "~")):
        return ""
    if not HUB_ID.match(path):
        return " (nor a hub id, which has the form org/name)" if "/" not in path else ""
    if path.endswith(".pt"):
        return " (a name ending in .pt is read as a local file, not as a hub id)"
    org = shown(path.split("/", 1)[0])
    return f" (read as a local path, not as a hub id, since {org}/ is a local directory)"


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    overwrite: bool = False,
    strict: bool = False,
    arch: str | None = None,
) -> Checkpoint:
    """``w2v convert``: read the checkpoint ``src`` and save it as a w2v checkpoint directory
    ``dst`` (``config.json`` + ``model.safetensors``, the task head's ``head.safetensors``,
    the pretraining parts' ``pretraining.safetensors`` and the unused weights'
    ``extra.safetensors`` when there are any; each written
    atomically). Returns the checkpoint, whose ``notices`` (dropped heads) the caller
    shows. ``strict``: refuse weights outside the backbone that w2v does not run.
    ``arch``: the torchaudio preset name of a torchaudio ``.pth`` (see
    :func:`w2v.convert.load.read_torchaudio`).

    ``dst`` is checked first (:func:`check_convert_destination`), so the source is never
    written. Raises :class:`UsageError` for a destination refused,
    :class:`CheckpointError` for a source that cannot be read or a destination that
    cannot be written.
    """
    if not os.path.exists(src):
        raise CheckpointError(f"{shown(os.fspath(src))}: no such file or directory")
    check_convert_destination(src, dst, overwrite=overwrite)
    ckpt = read_checkpoint(src, strict=strict, arch=arch)
    save(ckpt, dst)
    return ckpt


CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE, HEAD_FILE, EXTRA_FILE, PRETRAINING_FILE)
"""The files of a w2v checkpoint directory, which converting into it writes or removes."""


def check_convert_destination(
    src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False
) -> None:
    """Raise :class:`UsageError` unless converting ``src`` into ``dst`` is safe:

    * ``dst`` must not be ``src``, lie inside it, or contain it (symbolic links
      resolved), whatever ``overwrite`` says: the source is never written to;
    * ``dst`` must be a new or empty directory (w2v's own temporaries aside), or a
      w2v checkpoint directory (a previous output, replaced); any other
      non-empty directory only with ``overwrite``, and then only the checkpoint's files
      there (:data:`CHECKPOINT_FILES`) are replaced or removed, nothing else is touched.
    """
    s, d = Path(os.path.realpath(src)), Path(os.path.realpath(dst))
    if d == s or s in d.parents or d in s.parents:
        where = "is" if d == s else "lies inside" if s in d.parents else "contains"
        raise UsageError(
            f"output {shown(os.fspath(dst))} {where} the source {shown(os.fspath(src))}; "
            "converting never writes there: give a new directory outside it"
        )
    if not d.exists():
        return
    if not d.is_dir():
        raise UsageError(f"output {shown(os.fspath(dst))} exists and is not a directory")
    if is_w2v_dir(d) or overwrite:
        return
    if any(not e.name.endswith(TMP_SUFFIX) for e in d.iterdir()):
        raise UsageError(
            f"output {shown(os.fspath(dst))} is not empty and holds no w2v checkpoint; give a "
            f"new or empty directory, or --overwrite to write the checkpoint there (replacing "
            f"or removing files named {', '.join(CHECKPOINT_FILES)})"
        )


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
    """``device`` as a torch.device; :class:`UsageError` when it is malformed, absent, or of
    a kind this torch cannot allocate on."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UsageError(f"invalid device {str(device)!r}: {one_line(e)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {str(device)!r} asked for, but torch sees no CUDA GPU")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {str(device)!r} asked for, but MPS is not available")
    try:  # any other kind torch names but is not built for (xla, hpu, ...), a bad index
        torch.empty(0, device=dev)
    except Exception as e:  # noqa: BLE001 - each backend fails in its own way
        raise UsageError(f"device {str(device)!r} cannot be used: {one_line(e, 300)}") from None
    return dev


def load_model(
    model: Any,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    compile: bool = False,
    strict: bool = False,
    backend: str = "torch",
) -> torch.nn.Module:
    """A model object as is (moved/cast when asked), or anything :func:`load` accepts
    (on :func:`default_device` unless ``device`` says otherwise, ``strict`` passed on);
    ``compile`` applies :meth:`w2v.nn.model.Model.compile`. ``backend="onnxruntime"``: an
    :class:`~w2v.onnx.OnnxModel` (a w2v model object is wrapped, a path loaded).

    Raises :class:`UsageError` for an unknown dtype, a device that is malformed or
    absent, or a model path or hub id that cannot be loaded; TypeError for a ``model``
    that is neither a module nor a path.
    """
    if not isinstance(model, torch.nn.Module | str | os.PathLike):
        raise TypeError(
            f"model must be a w2v model, a checkpoint path or a hub id, got {type(model).__name__}"
        )
    if isinstance(dtype, str):
        try:
            dtype = parse_dtype(dtype)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if device is not None:
        device = check_device(device)
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime" or isinstance(model, OnnxModel):
        check_placement(device, dtype, compile)
        if isinstance(model, OnnxModel):
            return model
        if isinstance(model, Model):
            return OnnxModel.from_model(model)
    if isinstance(model, torch.nn.Module):
        if device is not None or dtype is not None:
            model = to(model, device=device, dtype=dtype)
        model.eval()
        return model.compile() if compile else model
    try:
        if backend == "onnxruntime":
            return load(model, strict=strict, backend=backend)
        return load(
            model, device=device or default_device(), dtype=dtype, compile=compile, strict=strict
        )
    except (ValueError, OSError, ImportError) as e:
        raise UsageError(f"cannot load model {os.fspath(model)!r}: {one_line(e)}") from None
