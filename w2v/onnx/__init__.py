"""The ONNX Runtime backend (the optional extra ``w2v[onnx]``).

* ``export``: a model → an ONNX graph with dynamic batch and time axes whose outputs are
  the requested layers (computing none past the deepest), exact mode included, and the
  checkpoint's config and info in its metadata (``w2v export --onnx``).
* ``runtime``: :class:`OnnxModel`, the model's methods (``hidden_states``,
  ``extract_features``, ``forward``, ``resolve_layers``, ``config``, ``info``, ...) computed by
  an ONNX Runtime session (``w2v.load(path, backend="onnxruntime")``).

onnx, onnxruntime and onnxscript are imported only when a graph is exported or run, so
``import w2v`` works without the extra; using the backend without it is a one-line
:class:`~w2v.errors.UsageError` saying what to install.
"""

from w2v.onnx.export import export_onnx, save_onnx
from w2v.onnx.runtime import BACKENDS, OnnxModel, backend_name

__all__ = ["BACKENDS", "OnnxModel", "backend_name", "export_onnx", "save_onnx"]
