"""The allow-list unpickler: only tensors, plain data and inert stand-ins come out.

A pickle is a small program: every global it names is looked up and may be
called, so ``torch.load(weights_only=False)`` on a downloaded checkpoint can
run anything. :class:`Unpickler` resolves only these globals:

* tensors: ``torch._utils`` rebuild functions (re-implemented here, hooks
  dropped), storage types, dtypes, ``torch.Size``;
* plain data: ``dict``, ``list``, ``set``, ``tuple``, numbers, strings, bytes,
  ``collections.OrderedDict``, ``collections.defaultdict`` (read as a dict);
* numpy arrays, scalars and dtypes;
* ``argparse.Namespace`` (harmless: it only holds attributes);
* omegaconf containers and nodes, ``typing`` markers, and fairseq's own
  classes (``fairseq.*``, ``examples.*``: ``Dictionary``, meters, config
  dataclasses, enums) become inert :class:`Record` objects that only keep the
  arguments and state they were given. Neither omegaconf nor fairseq is imported.

Any other global is refused with :class:`RefusedGlobal`, naming it. State is
only restored onto instances of the allowed types (never onto a class or
function, which would change it for the whole process), and copyreg extension
codes are refused.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import builtins
import collections
import io
import pickle
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


class Refused(pickle.UnpicklingError):
    """The pickle asks for something the allow-list forbids."""


class RefusedGlobal(Refused):
    """The pickle names a global that is not on the allow-list."""

    def __init__(self, module: str, name: str):
        super().__init__(f"the pickle references {module}.{name}, which is not allowed")
        self.module = module
        self.name = name


# --------------------------------------------------------------------------
# Inert stand-ins


class Record:
    """An inert stand-in for a class w2v does not import (omegaconf, fairseq, typing).

    Creating one, calling it or restoring its state only stores what it was
    given: ``args`` (constructor arguments), ``state`` (``__setstate__``),
    ``items`` (appended values) and ``entries`` (``obj[key] = value``).
    """

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None
        self.items: list[Any] = []
        self.entries: dict[Any, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.entries[key] = value

    def __repr__(self) -> str:
        return f"<record {self.qualname}>"

    def state_dict(self) -> dict[str, Any]:
        """The restored state as a dict (``{}`` when there is none)."""
        return self.state if isinstance(self.state, dict) else {}


_RECORD_CLASSES: dict[str, type[Record]] = {}


def _record_class(qualname: str) -> type[Record]:
    cls = _RECORD_CLASSES.get(qualname)
    if cls is None:
        short = re.sub(r"\W", "_", qualname.rsplit(".", 1)[-1]) or "Record"
        cls = type(short, (Record,), {"qualname": qualname, "__module__": __name__})
        _RECORD_CLASSES[qualname] = cls
    return cls


# Module prefixes whose globals become Records. These libraries are never
# imported: a Record can only hold data, so naming them cannot run code.
_RECORD_MODULES = ("omegaconf", "fairseq", "examples", "typing")


def _is_record_module(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in _RECORD_MODULES)


# --------------------------------------------------------------------------
# Tensors


class StorageType:
    """What a ``torch.FloatStorage``-style global resolves to: just its dtype."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}

_DTYPE_NAMES = (
    "float64 double float32 float float16 half bfloat16 int64 long int32 int int16 short "
    "int8 uint8 bool complex64 complex128"
).split()


def _check_storage(storage: Any) -> torch.storage.TypedStorage:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(
            f"tensor rebuilt from a {type(storage).__name__}, not a storage"
        )
    return storage


def _tensor_from_storage(storage: Any, offset: int, size: Any, stride: Any) -> torch.Tensor:
    storage = _check_storage(storage)
    t = torch.empty((0,), dtype=storage.dtype)
    # set_ checks that size/stride/offset stay inside the storage
    return t.set_(storage._untyped_storage, int(offset), tuple(size), tuple(stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor_from_storage(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    # backward hooks and metadata are dropped: nothing here ever runs backward
    return _tensor_from_storage(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage,
    storage_offset,
    size,
    stride,
    requires_grad=False,
    backward_hooks=None,
    dtype=None,
    metadata=None,
):
    t = _tensor_from_storage(storage, storage_offset, size, stride)
    if dtype is not None and dtype != t.dtype:
        raise pickle.UnpicklingError(f"tensor dtype {dtype} does not match its storage {t.dtype}")
    return t


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter rebuilt from something other than a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return _rebuild_parameter(data)


# --------------------------------------------------------------------------
# numpy and builtins


class _NdarrayType:
    """What ``numpy.ndarray`` resolves to: only a marker for ``_reconstruct``."""


_NDARRAY = _NdarrayType()


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"numpy array of type {subtype!r} is not allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_frombuffer(buf, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("numpy buffer with an object dtype is not allowed")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # protocol-2 pickles spell bytes as _codecs.encode(text, "latin1")
    if encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii") or not isinstance(obj, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return obj.encode(encoding, errors)


def _defaultdict(default_factory=None, *args):
    return dict(*args)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch", "Size"): torch.Size,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): _defaultdict,
        ("_codecs", "encode"): _codecs_encode,
        ("argparse", "Namespace"): argparse.Namespace,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): np.dtype,
    }
    for name in _DTYPE_NAMES:
        allowed[("torch", name)] = getattr(torch, name)
    for module in ("torch", "torch.cuda"):
        for name, dtype in _STORAGE_DTYPES.items():
            allowed[(module, name)] = StorageType(dtype)
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _np_reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = _np_scalar()
        allowed[(f"{core}.numeric", "_frombuffer")] = _np_frombuffer
    for name in "dict list set frozenset tuple int float complex str bytes bytearray bool".split():
        allowed[("builtins", name)] = getattr(builtins, name)
    return allowed


def _np_scalar() -> Callable[..., Any]:
    core = getattr(np, "_core", None)
    multiarray = core.multiarray if core is not None else np.core.multiarray
    return multiarray.scalar


_ALLOWED = _allowed_globals()


# Objects whose state a pickle may restore (BUILD). Classes and functions are
# excluded: restoring "state" onto them would rewrite them for the whole process.
_BUILDABLE = (Record, argparse.Namespace, collections.OrderedDict, np.ndarray, np.dtype, np.generic)


class Unpickler(pickle._Unpickler):
    """An unpickler that resolves only allow-listed globals.

    Python's pure-Python unpickler, so that two more opcodes can be guarded:
    BUILD only restores state onto instances of the allowed types, and the
    copyreg extension opcodes (which can bypass ``find_class``) are refused.
    Checkpoint pickles are small (the tensor data lies beside them), so
    speed does not matter here.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise RefusedGlobal(str(module), str(name))
        # protocol-2 pickles spell builtins the Python 2 way (__builtin__.long for int)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if _is_record_module(module) and re.fullmatch(r"[A-Za-z_][\w.]*", name):
            return _record_class(f"{module}.{name}")
        raise RefusedGlobal(module, name)

    def load_build(self) -> None:
        inst, state = self.stack[-2], self.stack[-1]
        if not isinstance(inst, _BUILDABLE):
            raise Refused(
                f"the pickle restores the state of {short_repr(inst)}, which is not allowed"
            )
        if isinstance(inst, (argparse.Namespace, collections.OrderedDict)) and not (
            state is None or isinstance(state, dict)
        ):
            raise pickle.UnpicklingError(f"unexpected state for a {type(inst).__name__}")
        super().load_build()

    def load_extension(self) -> None:
        raise Refused("the pickle uses copyreg extension codes, which are not allowed")

    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.EXT1[0]] = load_extension
    dispatch[pickle.EXT2[0]] = load_extension
    dispatch[pickle.EXT4[0]] = load_extension


def load(file, **kwargs: Any) -> Any:
    """``pickle.load`` with the allow-list (for ``torch.load(pickle_module=...)``)."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    return load(io.BytesIO(data), **kwargs)


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to fit an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
