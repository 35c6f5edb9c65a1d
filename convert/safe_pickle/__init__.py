"""Read PyTorch ``.pt`` pickles (fairseq checkpoints) without running code from them.

A pickle is a small program: every global it names is looked up and may be
called, so ``torch.load(weights_only=False)`` on a downloaded checkpoint can run
anything. This reader parses both of PyTorch's container formats itself (the
zip format of torch >= 1.6 and the older stream format) and unpickles with an
allow-list:

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

The module also has the ``Unpickler`` and ``load`` attributes that
``torch.load(f, pickle_module=...)`` expects, but :func:`read_torch_file` is the
entry point: ``torch.load`` hands TorchScript archives to ``torch.jit.load``.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import builtins
import collections
import io
import os
import pickle
import re
import struct
import sys
import tarfile
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = [
    "Record",
    "Refused",
    "RefusedGlobal",
    "Unpickler",
    "load",
    "read_torch_file",
    "to_plain",
]

# torch's legacy stream format starts with these two pickles
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


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


class _StorageType:
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
            allowed[(module, name)] = _StorageType(dtype)
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
            raise Refused(f"the pickle restores the state of {_short(inst)}, which is not allowed")
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


# --------------------------------------------------------------------------
# PyTorch's container formats


def read_torch_file(path: str | os.PathLike) -> Any:
    """Unpickle a ``torch.save`` file (zip or legacy stream format) with the allow-list.

    Tensors come back on the CPU. Raises :class:`RefusedGlobal` for a global
    outside the allow-list and ``ValueError`` / ``pickle.UnpicklingError`` /
    ``OSError`` and others for damaged files; :mod:`w2v.convert.fairseq` turns
    these into one-line :class:`~w2v.convert.checkpoint.CheckpointError`\\ s.
    """
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        if head == b"PK\x03\x04":
            return _read_zip(f)
        if _is_tar(f):
            raise ValueError("PyTorch's pre-1.0 tar checkpoint format is not supported")
        return _read_legacy(f)


def _is_tar(f) -> bool:
    try:
        with tarfile.open(fileobj=f, mode="r:"):
            return True
    except tarfile.TarError:
        return False
    finally:
        f.seek(0)


def _read_zip(f) -> Any:
    with zipfile.ZipFile(f) as zf:
        names = set(zf.namelist())
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError("zip archive is not a torch.save checkpoint (no single */data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}constants.pkl" in names or any(n.startswith(f"{prefix}code/") for n in names):
            raise ValueError("this is a TorchScript archive, not a checkpoint of weights")
        byteorder = "little"
        if f"{prefix}byteorder" in names:
            byteorder = zf.read(f"{prefix}byteorder").decode("ascii", "replace")
            if byteorder not in ("little", "big"):
                raise ValueError(f"unknown byte order {byteorder!r}")
        storages: dict[str, torch.storage.TypedStorage] = {}

        def persistent_load(pid: Any) -> torch.storage.TypedStorage:
            if not isinstance(pid, tuple) or len(pid) != 5 or _ascii(pid[0]) != "storage":
                raise pickle.UnpicklingError(f"unexpected persistent id {_short(pid)}")
            _, storage_type, key, _location, numel = pid
            dtype = _storage_dtype(storage_type)
            key = _ascii(key)
            if key in storages:
                return storages[key]
            nbytes = int(numel) * _element_size(dtype)
            name = f"{prefix}data/{key}"
            if name not in names:
                raise ValueError(f"tensor data record {name!r} is missing")
            info = zf.getinfo(name)
            if info.file_size != nbytes:
                raise ValueError(
                    f"tensor data record {name!r} holds {info.file_size} bytes, expected {nbytes}"
                )
            data = torch.empty(nbytes, dtype=torch.uint8)
            if nbytes:
                with zf.open(info) as fh:
                    _read_exactly(fh, data.numpy(), name)
            untyped = data.untyped_storage()
            if byteorder != sys.byteorder and _element_size(dtype) > 1:
                untyped.byteswap(dtype)
            storage = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
            storages[key] = storage
            return storage

        unpickler = Unpickler(io.BytesIO(zf.read(pickles[0])), encoding="utf-8")
        unpickler.persistent_load = persistent_load
        return unpickler.load()


def _read_legacy(f) -> Any:
    if sys.byteorder != "little":
        raise ValueError("legacy-format checkpoints can only be read on little-endian machines")
    if load(f, encoding="utf-8") != _LEGACY_MAGIC:
        raise ValueError("not a PyTorch checkpoint (bad magic number)")
    if load(f, encoding="utf-8") != _LEGACY_PROTOCOL:
        raise ValueError("unsupported legacy PyTorch protocol version")
    load(f, encoding="utf-8")  # sys_info
    roots: dict[str, torch.storage.TypedStorage] = {}
    views: dict[str, torch.storage.TypedStorage] = {}

    def persistent_load(pid: Any) -> torch.storage.TypedStorage:
        if isinstance(pid, tuple) and pid and _ascii(pid[0]) == "module":
            raise Refused("the pickle holds a whole nn.Module (code), not just weights")
        if not isinstance(pid, tuple) or len(pid) != 6 or _ascii(pid[0]) != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {_short(pid)}")
        _, storage_type, root_key, _location, numel, view = pid
        dtype = _storage_dtype(storage_type)
        root_key = _ascii(root_key)
        if root_key not in roots:
            untyped = torch.UntypedStorage(int(numel) * _element_size(dtype))
            roots[root_key] = torch.storage.TypedStorage(
                wrap_storage=untyped, dtype=dtype, _internal=True
            )
        root = roots[root_key]
        if view is None:
            return root
        view_key, offset, view_size = view
        view_key = _ascii(view_key)
        if view_key not in views:
            size = _element_size(dtype)
            start, stop = int(offset) * size, (int(offset) + int(view_size)) * size
            if not 0 <= start <= stop <= root._untyped_storage.nbytes():
                raise ValueError("storage view lies outside its storage")
            views[view_key] = torch.storage.TypedStorage(
                wrap_storage=root._untyped_storage[start:stop], dtype=dtype, _internal=True
            )
        return views[view_key]

    unpickler = Unpickler(f, encoding="utf-8")
    unpickler.persistent_load = persistent_load
    result = unpickler.load()
    keys = load(f, encoding="utf-8")
    if not isinstance(keys, list):
        raise ValueError("storage key list is missing")
    for key in keys:
        key = _ascii(key)
        if key not in roots:
            raise ValueError(f"storage {key!r} has data but no tensor")
        storage = roots[key]
        raw = f.read(8)
        if len(raw) != 8:
            raise EOFError("file ends inside the tensor data")
        (numel,) = struct.unpack("<q", raw)
        nbytes = storage._untyped_storage.nbytes()
        if numel * _element_size(storage.dtype) != nbytes:
            raise ValueError(f"storage {key!r} holds {numel} elements, expected {storage.size()}")
        if nbytes:
            data = torch.empty(0, dtype=torch.uint8).set_(storage._untyped_storage)
            _read_exactly(f, data.numpy(), f"storage {key!r}")
    return result


def _read_exactly(fh, out: np.ndarray, what: str) -> None:
    view = memoryview(out).cast("B")
    pos = 0
    while pos < len(view):
        n = fh.readinto(view[pos : pos + (1 << 24)])  # chunks: zipfile reads via a bytes copy
        if not n:
            raise EOFError(f"file ends inside {what}")
        pos += n


def _storage_dtype(storage_type: Any) -> torch.dtype:
    if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError(f"unexpected storage type {_short(storage_type)}")
    return storage_type.dtype


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _ascii(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii")
    if isinstance(value, (str, int)):
        return str(value)
    raise pickle.UnpicklingError(f"unexpected key {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------
# Records to plain data

_OMEGACONF_CONTAINERS = ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig")
_INTERPOLATION = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")


def to_plain(obj: Any) -> Any:
    """Turn omegaconf records, ``Namespace`` and enum records into plain dicts, lists and values.

    omegaconf's missing value ``???`` becomes None; a whole-string
    interpolation ``${a.b}`` is resolved against the enclosing configs,
    innermost first, and left as the string when it cannot be.
    """
    return _resolve(_plain(obj, 0), [])


def _plain(obj: Any, depth: int) -> Any:
    if depth > 200:
        raise ValueError("configuration nested too deeply")
    if isinstance(obj, argparse.Namespace):
        return {k: _plain(v, depth + 1) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v, depth + 1) for v in obj)
    if isinstance(obj, Record):
        state = Record.state_dict(obj)
        if obj.qualname in _OMEGACONF_CONTAINERS:
            content = state.get("_content")
            if content == "???":
                return None
            return _plain(content, depth + 1)
        if obj.qualname.startswith("omegaconf.nodes."):
            value = state.get("_val")
            return None if value == "???" else _plain(value, depth + 1)
        if not state and len(obj.args) == 1 and isinstance(obj.args[0], (str, int, float, bool)):
            return obj.args[0]  # an enum member: Choices("layer_norm")
        if state and not obj.args and not obj.qualname.startswith(("omegaconf.", "typing.")):
            return _plain(state, depth + 1)  # a fairseq dataclass config pickled as itself
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
