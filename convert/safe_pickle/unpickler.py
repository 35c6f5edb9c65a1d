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
function, which would change it for the whole process; numpy state only as
plain numeric data, see :mod:`~w2v.convert.safe_pickle.numpy_data`), and
copyreg extension codes are refused.

A tiny file must not exhaust memory, time or the C stack either, so the
unpickler also refuses: a length or frame larger than what is left of the
input; constructor calls that would build more than :data:`MAX_ITEMS` items
(``bytearray(6_000_000_000)``, ``tuple(huge_bytes)``); containers nested more
than :data:`MAX_NESTING` deep (tracked per object as the pickle builds them,
not by recursing); more than :data:`MAX_RECORD_TYPES` distinct stand-in classes.
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
from typing import Any

import numpy as np
import torch
from w2v.convert.safe_pickle import numpy_data
from w2v.convert.safe_pickle.refused import MAX_NAME, Refused, RefusedGlobal

from w2v.errors import shown

MAX_NESTING = 100
"""Deepest nesting of containers (tuples, lists, dicts, sets, records) a pickle may build.
Checkpoint pickles nest about 20 deep; a deeper one could overflow the C stack when hashed."""

MAX_ITEMS = 1 << 20
"""Most items (elements, bytes, characters) one constructor call in a pickle may produce."""

MAX_RECORD_TYPES = 1000
"""Most distinct omegaconf/fairseq class names one pickle may use (each becomes a class)."""


# --------------------------------------------------------------------------
# Inert stand-ins


class Record:
    """An inert stand-in for a class w2v does not import (omegaconf, fairseq, typing).

    Creating one, calling it or restoring its state only stores what it was
    given: ``args`` (constructor arguments), ``state`` (``__setstate__``),
    ``items`` (appended values) and ``entries`` (``obj[key] = value``).
    """

    qualname = "?"
    args: tuple = ()
    kwargs: dict = {}  # noqa: RUF012 - replaced, never mutated
    state: Any = None

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


def _record_class(qualname: str) -> type[Record]:
    short = re.sub(r"\W", "_", qualname.rsplit(".", 1)[-1]) or "Record"
    return type(short, (Record,), {"qualname": qualname, "__module__": __name__})


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
    t = t.set_(storage._untyped_storage, int(offset), tuple(size), tuple(stride))
    nbytes = storage._untyped_storage.nbytes()
    if t.numel() * t.element_size() > nbytes:
        # overlapping strides (stride 0): copying it, as converting does, would allocate
        # far more than the file holds
        raise pickle.UnpicklingError(
            f"tensor of shape {tuple(t.shape)} is larger than its storage ({nbytes} bytes)"
        )
    return t


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
# Constructors: builtins and friends, with the size of what they build bounded


class Constructor:
    """An allow-listed callable (``builtins.tuple``, ``torch.Size``...) that refuses to build
    more than :data:`MAX_ITEMS` items: no argument may be longer, and ``bytes``/``bytearray``
    are never given a size (a pickle spells their content, never their length)."""

    def __init__(self, fn: Any, name: str):
        self.fn = fn
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            # any integer-like size counts: numpy integers and one-element tensors have
            # __index__ too, and bytes(numpy.int64(6e9)) allocates as much as bytes(6e9)
            if self.fn in (bytes, bytearray) and hasattr(type(value), "__index__"):
                raise Refused(f"the pickle calls {self.name} with a size, which is not allowed")
            try:
                n = len(value)
            except TypeError:
                continue
            if n > MAX_ITEMS:
                raise Refused(
                    f"the pickle calls {self.name} on {n} items (at most {MAX_ITEMS} allowed)"
                )
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<constructor {self.name}>"


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # protocol-2 pickles spell bytes as _codecs.encode(text, "latin1")
    if encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii") or not isinstance(obj, str):
        raise pickle.UnpicklingError(
            f"_codecs.encode with encoding {shown(encoding)} is not allowed"
        )
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
        ("numpy", "ndarray"): numpy_data.NDARRAY,
        ("numpy", "dtype"): numpy_data.NumpyDtype,
    }
    constructors = {
        ("torch", "Size"): torch.Size,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): _defaultdict,
        ("_codecs", "encode"): _codecs_encode,
        ("argparse", "Namespace"): argparse.Namespace,
    }
    for name in "dict list set frozenset tuple int float complex str bytes bytearray bool".split():
        constructors[("builtins", name)] = getattr(builtins, name)
    for (module, name), fn in constructors.items():
        allowed[(module, name)] = Constructor(fn, f"{module}.{name}")
    for name in _DTYPE_NAMES:
        allowed[("torch", name)] = getattr(torch, name)
    for module in ("torch", "torch.cuda"):
        for name, dtype in _STORAGE_DTYPES.items():
            allowed[(module, name)] = StorageType(dtype)
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = numpy_data.reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = numpy_data.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numpy_data.frombuffer
    return allowed


_ALLOWED = _allowed_globals()

# Constructors a NEWOBJ opcode may name (protocol 2 writes Namespace that way).
_NEWOBJ = {collections.OrderedDict, argparse.Namespace, dict, list, set}


# --------------------------------------------------------------------------
# Reading the input


class _BoundedInput:
    """The pickle's file, refusing a read of more bytes than are left in it: a length or
    frame size is read from the file, and asking for it must not allocate it."""

    def __init__(self, file: Any):
        self.file = file
        try:
            here = file.tell()
            self.end = file.seek(0, os.SEEK_END)
            file.seek(here)
        except (AttributeError, OSError, ValueError):
            self.end = None  # not seekable: reads are bounded by what arrives

    def left(self) -> int | None:
        return None if self.end is None else self.end - self.file.tell()

    def read(self, n: int = -1) -> bytes:
        left = self.left()
        if left is not None and n > left:
            raise pickle.UnpicklingError(
                f"the pickle declares {n} bytes where the file has {left} left"
            )
        return self.file.read(n)

    def readline(self) -> bytes:
        return self.file.readline()


# --------------------------------------------------------------------------
# The unpickler


# Objects whose state a pickle may restore (BUILD). Classes and functions are
# excluded: restoring "state" onto them would rewrite them for the whole process.
_BUILDABLE = (Record, argparse.Namespace, collections.OrderedDict)


def short_repr(value: Any) -> str:
    """A bounded, terminal-safe ``repr(value)`` for an error message (see :func:`shown`)."""
    return shown(repr(value[:100]) if isinstance(value, str) else value, 80)


class Unpickler(pickle._Unpickler):
    """An unpickler that resolves only allow-listed globals and bounds what a pickle builds.

    Python's pure-Python unpickler, so that more opcodes can be guarded:
    BUILD only restores state onto instances of the allowed types, NEWOBJ
    only creates records and plain containers, the copyreg extension opcodes
    (which can bypass ``find_class``) are refused, lengths are checked against
    the input, and container nesting is tracked (see the module docstring).
    Checkpoint pickles are small (the tensor data lies beside them), so speed
    does not matter here.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, **kwargs: Any):
        self._input = _BoundedInput(file)
        super().__init__(self._input, **kwargs)
        self._records: dict[str, type[Record]] = {}
        # id(container) → (container, nesting depth); holding the container keeps its id unique
        self._depths: dict[int, tuple[Any, int]] = {}

    # globals ----------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise RefusedGlobal(short_repr(module), short_repr(name))
        # protocol-2 pickles spell builtins the Python 2 way (__builtin__.long for int)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if _is_record_module(module) and all(
            len(part) <= MAX_NAME and re.fullmatch(r"[A-Za-z_][\w.]*", part)
            for part in (module, name)
        ):
            return self._record_class(f"{module}.{name}")
        raise RefusedGlobal(module, name)

    def _record_class(self, qualname: str) -> type[Record]:
        cls = self._records.get(qualname)
        if cls is None:
            if len(self._records) >= MAX_RECORD_TYPES:
                raise Refused(f"the pickle names more than {MAX_RECORD_TYPES} classes")
            cls = self._records[qualname] = _record_class(qualname)
        return cls

    # state and construction -------------------------------------------------
    def load_build(self) -> None:
        inst, state = self.stack[-2], self.stack[-1]
        if isinstance(inst, numpy_data.NumpyDtype):
            inst.set_byte_order(state)
        elif type(inst) is np.ndarray:
            numpy_data.set_array_state(inst, state)
        elif not isinstance(inst, _BUILDABLE):
            raise Refused(
                f"the pickle restores the state of {short_repr(inst)}, which is not allowed"
            )
        elif isinstance(inst, (argparse.Namespace, collections.OrderedDict)) and not (
            state is None or isinstance(state, dict)
        ):
            raise pickle.UnpicklingError(f"unexpected state for a {type(inst).__name__}")
        else:
            super().load_build()
            return
        self.stack.pop()

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args, {})

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args, kwargs)

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise pickle.UnpicklingError("NEWOBJ without an argument tuple")
        if isinstance(cls, type) and issubclass(cls, Record):
            return cls(*args, **kwargs)
        if isinstance(cls, Constructor) and cls.fn in _NEWOBJ and not args and not kwargs:
            return cls()
        raise Refused(f"the pickle creates a {short_repr(cls)} with NEWOBJ, which is not allowed")

    def _instantiate(self, klass: Any, args: list) -> None:
        # OBJ/INST: every allow-listed callable is safe to call; never bypass a record's __init__
        self.append(klass(*args))

    def load_mark(self) -> None:
        if len(self.metastack) >= MAX_NESTING:
            raise Refused(f"the pickle nests marks more than {MAX_NESTING} deep")
        super().load_mark()

    def load_extension(self) -> None:
        raise Refused("the pickle uses copyreg extension codes, which are not allowed")

    def load_readonly_buffer(self) -> None:
        # a buffer view of an array or tensor would outlive its data if the pickle then
        # rebuilt that object; pickles only ever mark their own bytes read-only
        if not isinstance(self.stack[-1], (bytes, bytearray)):
            raise Refused(
                f"the pickle takes a buffer of {short_repr(self.stack[-1])}, which is not allowed"
            )
        super().load_readonly_buffer()

    def load_bytearray8(self) -> None:
        # the base handler allocates the declared length before reading it
        (n,) = struct.unpack("<Q", self.read(8))
        if self._input.end is not None and n > self._input.end:
            raise pickle.UnpicklingError(
                f"the pickle declares {n} bytes in a file of {self._input.end}"
            )
        self.append(bytearray(self.read(n)))

    # nesting ----------------------------------------------------------------
    def _depth(self, items: Any) -> int:
        """1 + the deepest of ``items`` (an untracked object counts as depth 0)."""
        depths = self._depths
        deepest = max((depths[id(x)][1] for x in items if id(x) in depths), default=0)
        if deepest >= MAX_NESTING:
            raise Refused(f"the pickle nests containers more than {MAX_NESTING} deep")
        return deepest + 1

    def _note(self, obj: Any, depth: int) -> None:
        known = self._depths.get(id(obj))
        if known is None or known[1] < depth:
            self._depths[id(obj)] = (obj, depth)

    def mark_items(self) -> list:
        """Everything above the topmost MARK (what APPENDS, TUPLE... consume)."""
        return self.stack

    def mark_owner(self) -> Any:
        """The object just below the topmost MARK (the list APPENDS extends)."""
        return self.metastack[-1][-1] if self.metastack and self.metastack[-1] else None


def _build_new(count: int | None):
    """An opcode that builds a new container from stack items: nesting checked before it runs
    (a dict or frozenset hashes its items), recorded on what it built."""

    def run(self: Unpickler, base=None) -> None:
        items = self.mark_items() if count is None else self.stack[len(self.stack) - count :]
        depth = self._depth(items)
        base(self)
        if not isinstance(self.stack[-1], _LEAVES):
            self._note(self.stack[-1], depth)

    return run


def _build_from_args(count: int):
    """REDUCE, NEWOBJ (``count`` 1: args) and NEWOBJ_EX (2: args, kwargs): the result is as
    deep as its arguments, checked before the call (``frozenset(args)`` hashes them)."""

    def run(self: Unpickler, base=None) -> None:
        items = []
        for arg in self.stack[len(self.stack) - count :]:
            items.extend(
                arg.values() if isinstance(arg, dict) else arg if isinstance(arg, tuple) else [arg]
            )
        depth = self._depth(items)
        base(self)
        if not isinstance(self.stack[-1], _LEAVES):
            self._note(self.stack[-1], depth)

    return run


def _add_to(count: int | None):
    """APPEND(S), SETITEM(S), ADDITEMS, BUILD: the container gets deeper than what it receives."""

    def run(self: Unpickler, base=None) -> None:
        if count is None:
            items, owner = self.mark_items(), self.mark_owner()
        else:
            items, owner = self.stack[len(self.stack) - count :], self.stack[-count - 1]
        depth = self._depth(items)
        base(self)
        self._note(owner, depth)

    return run


# Values that hold nothing; small ones are shared, so a depth noted on one would stick to all.
_LEAVES = (str, bytes, int, float, complex, type(None), torch.Tensor, np.ndarray, np.generic)


def _guard(opcode: bytes, run) -> None:
    """Run ``opcode`` through ``run(unpickler, base)``, where ``base`` is its current handler."""
    base = Unpickler.dispatch[opcode[0]]
    Unpickler.dispatch[opcode[0]] = lambda self: run(self, base)


for _code, _fn in {
    pickle.BUILD: Unpickler.load_build,
    pickle.NEWOBJ: Unpickler.load_newobj,
    pickle.NEWOBJ_EX: Unpickler.load_newobj_ex,
    pickle.EXT1: Unpickler.load_extension,
    pickle.EXT2: Unpickler.load_extension,
    pickle.EXT4: Unpickler.load_extension,
    pickle.BYTEARRAY8: Unpickler.load_bytearray8,
    pickle.READONLY_BUFFER: Unpickler.load_readonly_buffer,
    pickle.MARK: Unpickler.load_mark,
}.items():
    Unpickler.dispatch[_code[0]] = _fn
for _code, _make in {
    pickle.TUPLE: _build_new(None),
    pickle.LIST: _build_new(None),
    pickle.DICT: _build_new(None),
    pickle.FROZENSET: _build_new(None),
    pickle.OBJ: _build_new(None),
    pickle.INST: _build_new(None),
    pickle.TUPLE1: _build_new(1),
    pickle.TUPLE2: _build_new(2),
    pickle.TUPLE3: _build_new(3),
    pickle.REDUCE: _build_from_args(1),
    pickle.NEWOBJ: _build_from_args(1),
    pickle.NEWOBJ_EX: _build_from_args(2),
    pickle.APPEND: _add_to(1),
    pickle.SETITEM: _add_to(2),
    pickle.BUILD: _add_to(1),
    pickle.APPENDS: _add_to(None),
    pickle.SETITEMS: _add_to(None),
    pickle.ADDITEMS: _add_to(None),
}.items():
    _guard(_code, _make)
del _code, _fn, _make


def load(file, **kwargs: Any) -> Any:
    """``pickle.load`` with the allow-list (for ``torch.load(pickle_module=...)``)."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    return load(io.BytesIO(data), **kwargs)
