"""Read PyTorch ``.pt`` pickles (fairseq checkpoints) without running code from them.

Three parts:

* :mod:`~w2v.convert.safe_pickle.unpickler`: the allow-list :class:`Unpickler`
  (tensors, plain data, inert :class:`Record` stand-ins for omegaconf and
  fairseq classes; anything else is :class:`RefusedGlobal`), with the sizes
  and nesting a pickle may build bounded;
* :mod:`~w2v.convert.safe_pickle.numpy_data`: numpy arrays, scalars and
  dtypes, rebuilt as plain numeric data only;
* :mod:`~w2v.convert.safe_pickle.torch_file`: PyTorch's zip and legacy
  container formats, parsed here rather than by ``torch.load``
  (:func:`read_torch_file`, the entry point; :func:`load_torch_file` turns
  every failure into a one-line ``CheckpointError``);
* :mod:`~w2v.convert.safe_pickle.plain`: omegaconf and ``Namespace`` configs
  to plain dicts (:func:`to_plain`).

The package also has the ``Unpickler`` and ``load`` attributes that
``torch.load(f, pickle_module=...)`` expects, but :func:`read_torch_file` is
the entry point: ``torch.load`` hands TorchScript archives to ``torch.jit.load``.
"""

from w2v.convert.safe_pickle.plain import to_plain
from w2v.convert.safe_pickle.torch_file import load_torch_file, read_torch_file
from w2v.convert.safe_pickle.unpickler import (
    Record,
    Refused,
    RefusedGlobal,
    Unpickler,
    load,
    loads,
)

__all__ = [
    "Record",
    "Refused",
    "RefusedGlobal",
    "Unpickler",
    "load",
    "load_torch_file",
    "loads",
    "read_torch_file",
    "to_plain",
]
