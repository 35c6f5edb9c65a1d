"""PyTorch's two ``torch.save`` container formats, read with the allow-list unpickler.

The zip format (torch >= 1.6): ``<name>/data.pkl`` plus one record of raw bytes
per storage under ``<name>/data/``. The legacy stream format: three small
pickles (magic number, protocol, system info), the object pickle, the list of
storage keys, then each storage's element count and bytes. Both name storages
through persistent ids, which are checked here.

Sizes a file declares are checked against the file's real size before
anything is allocated (zip members, legacy storages), and every storage a
legacy file's tensors use must have its bytes in the file: nothing is ever
handed back uninitialised.
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
from w2v.convert.safe_pickle.unpickler import (
    Refused,
    RefusedGlobal,
    StorageType,
    Unpickler,
    load,
    short_repr,
)

from w2v.errors import CheckpointError, one_line

# torch's legacy stream format starts with these two pickles
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def load_torch_file(path: str | os.PathLike) -> Any:
    """:func:`read_torch_file`, with every failure a one-line :class:`CheckpointError`
    naming the file (a refused global, a damaged or hostile file, an unreadable one)."""
    try:
        return read_torch_file(path)
    except RefusedGlobal as e:
        raise CheckpointError(
            f"{path}: refusing to load: the pickle references {e.module}.{e.name}, which w2v does "
            "not allow (a checkpoint needs only tensors, plain data and configs; loading this one "
            "could run code). Do not load this file with torch.load either"
        ) from None
    except Refused as e:
        raise CheckpointError(
            f"{path}: refusing to load: {one_line(e, 300)} (w2v never runs code from a checkpoint)"
        ) from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the file ({one_line(e, 200)})") from None
    except MemoryError:
        raise CheckpointError(f"{path}: the file asks for more memory than there is") from None
    except Exception as e:  # noqa: BLE001 - a damaged file can fail in many ways; all mean the same
        raise CheckpointError(
            f"{path}: cannot read as a PyTorch checkpoint ({one_line(e, 200)}); "
            "the file may be truncated or corrupt"
        ) from None


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
    file_size = os.fstat(f.fileno()).st_size
    with zipfile.ZipFile(f) as zf:
        names = set(zf.namelist())
        unpacked = 0  # bytes of all members read so far

        def member(name: str) -> zipfile.ZipInfo:
            # a member can declare any size; it can only hold what the file holds. So can all
            # of them together: compressed members (a zip bomb) or members whose entries share
            # their bytes could otherwise unpack to many times the file
            nonlocal unpacked
            info = zf.getinfo(name)
            if info.file_size > file_size:
                raise ValueError(
                    f"zip member {short_repr(name)} declares {info.file_size} bytes, "
                    f"more than the whole file ({file_size})"
                )
            unpacked += info.file_size
            if unpacked > file_size:
                raise ValueError(
                    f"zip members unpack to more than the whole file ({file_size} bytes) by "
                    f"{short_repr(name)}: compressed or overlapping members are not allowed"
                )
            return info

        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError("zip archive is not a torch.save checkpoint (no single */data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}constants.pkl" in names or any(n.startswith(f"{prefix}code/") for n in names):
            raise ValueError("this is a TorchScript archive, not a checkpoint of weights")
        byteorder = "little"
        if f"{prefix}byteorder" in names:
            byteorder = zf.read(member(f"{prefix}byteorder")).decode("ascii", "replace")
            if byteorder not in ("little", "big"):
                raise ValueError(f"unknown byte order {short_repr(byteorder)}")
        storages: dict[str, torch.storage.TypedStorage] = {}

        def persistent_load(pid: Any) -> torch.storage.TypedStorage:
            if not isinstance(pid, tuple) or len(pid) != 5 or _ascii(pid[0]) != "storage":
                raise pickle.UnpicklingError(f"unexpected persistent id {short_repr(pid)}")
            _, storage_type, key, _location, numel = pid
            dtype = _storage_dtype(storage_type)
            key = _ascii(key)
            if key in storages:
                return storages[key]
            nbytes = _count(numel) * _element_size(dtype)
            name = f"{prefix}data/{key}"
            if name not in names:
                raise ValueError(f"tensor data record {short_repr(name)} is missing")
            info = member(name)
            if info.file_size != nbytes:
                raise ValueError(
                    f"tensor data record {short_repr(name)} holds {info.file_size} bytes, "
                    f"expected {nbytes}"
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

        unpickler = Unpickler(io.BytesIO(zf.read(member(pickles[0]))), encoding="utf-8")
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
    file_size = os.fstat(f.fileno()).st_size
    roots: dict[str, torch.storage.TypedStorage] = {}
    views: dict[str, torch.storage.TypedStorage] = {}
    declared = 0  # bytes of all storages so far: their data must still be in the file

    def persistent_load(pid: Any) -> torch.storage.TypedStorage:
        nonlocal declared
        if isinstance(pid, tuple) and pid and _ascii(pid[0]) == "module":
            raise Refused("the pickle holds a whole nn.Module (code), not just weights")
        if not isinstance(pid, tuple) or len(pid) != 6 or _ascii(pid[0]) != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {short_repr(pid)}")
        _, storage_type, root_key, _location, numel, view = pid
        dtype = _storage_dtype(storage_type)
        root_key = _ascii(root_key)
        if root_key not in roots:
            nbytes = _count(numel) * _element_size(dtype)
            declared += nbytes
            if declared > file_size - f.tell():
                raise ValueError(
                    f"storage {short_repr(root_key)} declares {nbytes} bytes; the tensors so far "
                    f"need {declared}, more than the rest of the file ({file_size - f.tell()})"
                )
            roots[root_key] = torch.storage.TypedStorage(
                wrap_storage=torch.UntypedStorage(nbytes), dtype=dtype, _internal=True
            )
        root = roots[root_key]
        if view is None:
            return root
        if not isinstance(view, tuple) or len(view) != 3:
            raise pickle.UnpicklingError(f"unexpected storage view {short_repr(view)}")
        view_key, offset, view_size = view
        view_key = _ascii(view_key)
        if view_key not in views:
            size = _element_size(dtype)
            start, stop = _count(offset) * size, (_count(offset) + _count(view_size)) * size
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
    unread = dict(roots)
    for key in keys:
        key = _ascii(key)
        if key not in roots:
            raise ValueError(f"storage {short_repr(key)} has data but no tensor")
        if unread.pop(key, None) is None:
            raise ValueError(f"storage {short_repr(key)} is listed twice")
        storage = roots[key]
        raw = f.read(8)
        if len(raw) != 8:
            raise EOFError("file ends inside the tensor data")
        (numel,) = struct.unpack("<q", raw)
        nbytes = storage._untyped_storage.nbytes()
        if numel * _element_size(storage.dtype) != nbytes:
            raise ValueError(
                f"storage {short_repr(key)} holds {numel} elements, expected {storage.size()}"
            )
        if nbytes:
            data = torch.empty(0, dtype=torch.uint8).set_(storage._untyped_storage)
            _read_exactly(f, data.numpy(), f"storage {short_repr(key)}")
    if unread:
        # their memory was never written: converting would hand back whatever it held
        raise ValueError(
            f"{len(unread)} storages used by tensors have no data in the file "
            f"(e.g. {short_repr(next(iter(unread)))})"
        )
    return result


def _read_exactly(fh, out: np.ndarray, what: str) -> None:
    view = memoryview(out).cast("B")
    pos = 0
    while pos < len(view):
        n = fh.readinto(view[pos : pos + (1 << 24)])  # chunks: zipfile reads via a bytes copy
        if not n:
            raise EOFError(f"file ends inside {what}")
        pos += n


def _count(value: Any) -> int:
    """An element count or offset from the pickle: a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise pickle.UnpicklingError(f"unexpected element count {short_repr(value)}")
    return value


def _storage_dtype(storage_type: Any) -> torch.dtype:
    if not isinstance(storage_type, StorageType):
        raise pickle.UnpicklingError(f"unexpected storage type {short_repr(storage_type)}")
    return storage_type.dtype


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _ascii(value: Any) -> str:
    if isinstance(value, bytes) and len(value) <= 1000:
        return value.decode("ascii")
    if isinstance(value, str) and len(value) <= 1000:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= 64:
        return str(value)
    raise pickle.UnpicklingError(f"unexpected key {short_repr(value)}")
