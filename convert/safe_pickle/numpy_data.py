"""numpy arrays, scalars and dtypes in a pickle, rebuilt only as plain numeric data.

numpy's own unpickling trusts its input: ``dtype.__setstate__`` accepts a
structured layout with an object field and flags that hide it, after which an
array rebuild reads object pointers out of the file's bytes (a crash at best,
a call of any function at worst). So nothing from a pickle reaches numpy's
``__setstate__`` or ``scalar`` unchecked: ``numpy.dtype(...)`` becomes a
:class:`NumpyDtype` holding a plain numeric dtype (booleans, integers, floats,
complex; no fields, objects, subarrays, strings or dates) whose byte order is
the only state a pickle may set, and arrays and scalars are rebuilt from raw
bytes of such a dtype with their sizes checked.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
from w2v.convert.safe_pickle.refused import Refused

_PLAIN_KINDS = "biufc"  # bool, signed, unsigned, float, complex
_BYTE_ORDERS = "<>|="


class NumpyDtype:
    """What ``numpy.dtype(spec)`` in a pickle becomes: ``dtype``, a plain numeric numpy dtype."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True):
        self.dtype = plain_dtype(spec)

    def set_byte_order(self, state: Any) -> None:
        """The pickle's BUILD: accept numpy's state of a plain dtype, keep only its byte order."""
        plain_state = (None, None, None, -1, -1, 0)
        if not (
            isinstance(state, tuple)
            and len(state) in (8, 9)
            and state[0] in (3, 4)
            and isinstance(state[1], str)
            and state[1] in _BYTE_ORDERS
            and len(state[1]) == 1
            and state[2:8] == plain_state
            and (len(state) == 8 or state[8] is None)
        ):
            raise Refused("numpy dtype state of a non-numeric dtype is not allowed")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])

    def __repr__(self) -> str:
        return f"<numpy dtype {self.dtype}>"


def plain_dtype(spec: Any) -> np.dtype:
    """``spec`` (a short type string, or a :class:`NumpyDtype`) as a plain numeric dtype."""
    if isinstance(spec, NumpyDtype):
        return spec.dtype
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if not isinstance(spec, str) or len(spec) > 8:
        raise Refused("numpy dtype given by something other than a type code")
    try:
        dtype = np.dtype(spec)
    except TypeError:
        raise pickle.UnpicklingError("unknown numpy type code") from None
    if (
        dtype.kind not in _PLAIN_KINDS
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.hasobject
    ):
        raise Refused(f"numpy dtype {dtype} is not a plain numeric type")
    return dtype


class NdarrayType:
    """What ``numpy.ndarray`` resolves to: only a marker for :func:`reconstruct`."""


NDARRAY = NdarrayType()


def reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct``: the empty array the pickle's BUILD then fills."""
    if subtype is not NDARRAY:
        raise Refused("numpy array subclasses are not allowed")
    dtype = plain_dtype(dtype)
    if _numel(shape) != 0:
        raise pickle.UnpicklingError("numpy array rebuilt with a non-empty placeholder")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def set_array_state(array: np.ndarray, state: Any) -> None:
    """The pickle's BUILD on an array: raw bytes of a plain dtype, of exactly the right size."""
    if not (isinstance(state, tuple) and len(state) in (4, 5)):
        raise pickle.UnpicklingError("unexpected numpy array state")
    if array.size or not array.flags.owndata:
        # only the empty placeholder of reconstruct is filled: restoring an array that has
        # data frees that data while a view of it (a pickle buffer) may still read it
        raise Refused("numpy array state restored onto an array that already has data")
    shape, dtype, fortran, data = state[-4:]
    dtype = plain_dtype(dtype)
    if not isinstance(fortran, bool) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("numpy array state without raw bytes")
    if _numel(shape) * dtype.itemsize != len(data):
        raise pickle.UnpicklingError("numpy array data does not match its shape")
    array.__setstate__((1, shape, dtype, fortran, data))


def frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """``numpy.core.numeric._frombuffer`` (protocol-5 pickles), for plain dtypes only."""
    dtype = plain_dtype(dtype)
    if not isinstance(buf, (bytes, bytearray, memoryview)) or order not in ("C", "F"):
        raise pickle.UnpicklingError("unexpected numpy buffer")
    if _numel(shape) * dtype.itemsize != memoryview(buf).nbytes:
        raise pickle.UnpicklingError("numpy buffer does not match its shape")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def scalar(dtype: Any, data: Any = None) -> np.generic:
    """``numpy.core.multiarray.scalar``: one value of a plain dtype from its raw bytes."""
    dtype = plain_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar data does not match its dtype")
    return np.frombuffer(data, dtype=dtype)[0]


def _numel(shape: Any) -> int:
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise pickle.UnpicklingError("numpy shape is not a tuple of sizes")
    return math.prod(shape)
