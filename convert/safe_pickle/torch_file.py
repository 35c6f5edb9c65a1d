"""PyTorch's two ``torch.save`` container formats, read with the allow-list unpickler.

The zip format (torch >= 1.6): ``<name>/data.pkl`` plus one record of raw bytes
per storage under ``<name>/data/``. The legacy stream format: three small
pickles (magic number, protocol, system info), the object pickle, the list of
storage keys, then each storage's element count and bytes. Both name storages
through persistent ids, which are checked here.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import tarfile
import zipfile
from typing import Any

import numpy as np
import torch
from w2v.convert.safe_pickle.unpickler import Refused, StorageType, Unpickler, load, short_repr

# torch's legacy stream format starts with these two pickles
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def read_torch_file(path: str | os.PathLike) -> Any:
    """Unpickle a ``torch.save`` file (zip or legacy stream format) with the allow-list.

    Tensors come back on the CPU. Raises :class:`RefusedGlobal` for a global
    outside the allow-list and ``ValueError`` / ``pickle.UnpicklingError`` /
    ``OSError`` and others for damaged files; :mod:`w2v.convert.fairseq_file` turns
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
                raise pickle.UnpicklingError(f"unexpected persistent id {short_repr(pid)}")
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
            raise pickle.UnpicklingError(f"unexpected persistent id {short_repr(pid)}")
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
    if not isinstance(storage_type, StorageType):
        raise pickle.UnpicklingError(f"unexpected storage type {short_repr(storage_type)}")
    return storage_type.dtype


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _ascii(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii")
    if isinstance(value, (str, int)):
        return str(value)
    raise pickle.UnpicklingError(f"unexpected key {short_repr(value)}")
