"""The model's methods computed by ONNX Runtime: what ``w2v.load(path, backend="onnxruntime")``
returns.

:class:`OnnxModel` has the names the PyTorch model has and code calls (``hidden_states``,
``extract_features``, ``forward``, ``resolve_layers``, ``config``, ``info``, ``normalize``,
``vocab``, ``family``), takes and returns torch tensors, and checks its input with the
PyTorch model's own checks, so bad input gets the same one-line errors. It computes in
float32 on the CPU (waveforms of another dtype or device are copied there; outputs are
CPU float32 tensors).

It runs one of two kinds of graph (:mod:`w2v.onnx.export`):

* from a model (a checkpoint loaded with this backend): the graph for the deepest layer
  a call asks for, exported on the first such call (seconds to a minute, once per depth
  and mode) and kept;
* from a file written by ``w2v export --onnx``: that graph only; a layer it does not
  hold is a ValueError naming the ones it does.

Sessions use every ONNX Runtime graph optimisation and ``torch.get_num_threads()``
intra-op threads (so ``torch.set_num_threads`` and ``OMP_NUM_THREADS`` set both backends'
threads), or ``threads``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from w2v.config import CheckpointInfo, Config
from w2v.errors import CheckpointError, UsageError, one_line, shown
from w2v.nn.model import Model
from w2v.onnx.export import (
    FORMAT,
    FRAMES,
    INPUTS,
    METADATA_KEY,
    OUTPUT,
    check_exportable,
    layer_name,
    require_onnx,
    save_onnx,
)

BACKENDS = ("torch", "onnxruntime")
"""What computes a loaded model: PyTorch (w2v's own modules) or ONNX Runtime."""


class OnnxModel(nn.Module):
    """A w2v model computed by an ONNX Runtime session; build it with :meth:`from_model` or
    :meth:`from_file` (or ``w2v.load(path, backend="onnxruntime")``).

    ``placement`` is an empty float32 CPU parameter: where this backend takes its input, for
    code that reads a model's device and dtype from its first parameter.
    """

    # the PyTorch model's own definitions, which read only ``config``, ``info`` and
    # ``hidden_states``: one definition of the input checks, layer rules and info
    _check_input = Model._check_input
    resolve_layers = Model.resolve_layers
    extract_features = Model.extract_features
    normalize = Model.normalize
    vocab = Model.vocab
    family = Model.family

    head_kind = None  # heads run on the torch backend
    unused: tuple[str, ...] = ()

    def __init__(
        self,
        config: Config,
        info: CheckpointInfo,
        *,
        source: Model | None = None,
        graph: Path | None = None,
        threads: int | None = None,
    ):
        super().__init__()
        self.config = config
        self.info = info
        self.placement = nn.Parameter(torch.empty(0), requires_grad=False)
        self.threads = threads
        # not a submodule: .to() or .parameters() must not reach the exported weights
        self.__dict__["_source"] = source
        self._sessions: dict[tuple[int, bool], tuple[Any, list[int], bool]] = {}
        self._fixed: tuple[Any, list[int], bool, bool] | None = None
        if graph is not None:
            meta = read_metadata(graph)
            self._fixed = (self._session(graph), meta["layers"], meta["output"], meta["exact"])

    # ------------------------------------------------------------------ building
    @classmethod
    def from_model(cls, model: Model, *, threads: int | None = None) -> OnnxModel:
        """``model`` (float32, CPU, eval mode, not compiled) run by ONNX Runtime; its graphs
        are exported on first use (see the module docstring). It keeps ``model`` for those
        exports. :class:`UsageError` for a model that cannot be exported."""
        require_onnx()
        check_exportable(model)
        return cls(model.config, model.info, source=model, threads=threads)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, threads: int | None = None) -> OnnxModel:
        """The graph ``path`` written by ``w2v export --onnx``. :class:`CheckpointError` for a
        file that is not one."""
        require_onnx()
        meta = read_metadata(path)
        try:
            config = Config.from_dict(meta["config"])
            info = CheckpointInfo(
                family=str(meta["family"]),
                normalize=bool(meta["normalize"]),
                vocab=meta["vocab"],
                source=str(meta["source"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(
                f"{shown(os.fspath(path))}: bad w2v metadata in the graph: {one_line(e, 200)}"
            ) from None
        return cls(config, info, graph=Path(path), threads=threads)

    def _session(self, path: Path) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are not the user's concern
        try:
            return ort.InferenceSession(
                os.fspath(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own exception types
            raise CheckpointError(
                f"{shown(os.fspath(path))}: ONNX Runtime cannot load it: {one_line(e, 300)}"
            ) from None

    def _graph(self, layers: list[int], output: bool, exact: bool) -> Any:
        """A session whose graph outputs ``layers`` (and the model output when ``output``)."""
        n = self.config.num_layers
        if self._fixed is not None:
            session, held, has_output, graph_exact = self._fixed
            missing = [i for i in layers if i not in held]
            if missing or (output and not has_output):
                what = f"layers {missing}" if missing else "the model output (the last layer)"
                raise ValueError(
                    f"this ONNX graph holds layers {held}"
                    + (" and the model output" if has_output else "")
                    + f", not {what}; export it again with --layers naming them"
                )
            if exact != graph_exact:
                raise ValueError(f"this ONNX graph was exported with exact={graph_exact}")
            return session
        depth = n if output else max(layers, default=0)
        key = (depth, exact)
        if key not in self._sessions:
            with tempfile.TemporaryDirectory(prefix="w2v-onnx-") as tmp:
                path = save_onnx(
                    self._source, Path(tmp) / "model.onnx", range(depth + 1), exact=exact
                )
                self._sessions[key] = self._session(path)
        return self._sessions[key]

    # ------------------------------------------------------------------ computing
    def _run(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None,
        layers: list[int],
        output: bool,
        exact: bool,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The requested layer states (and, when ``output``, the model output last) and the
        valid frames per item (None without ``lengths``)."""
        waveforms, lengths = self._check_input(waveforms, lengths)
        session = self._graph(layers, output, exact)
        x = waveforms.detach().to("cpu", torch.float32).contiguous()
        n = torch.full(x.shape[:1], x.shape[1]) if lengths is None else lengths.cpu()
        names = [layer_name(i) for i in layers] + ([OUTPUT] if output else []) + [FRAMES]
        feeds = {INPUTS[0]: x.numpy(), INPUTS[1]: n.numpy().astype(np.int64)}
        *outs, frames = session.run(names, feeds)
        states = [torch.from_numpy(a) for a in outs]
        return states, None if lengths is None else torch.from_numpy(frames)

    def hidden_states(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None = None,
        layers: Sequence[int] | None = None,
        *,
        exact: bool = True,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """As :meth:`w2v.nn.model.Model.hidden_states`: states at the requested layer indices
        (batch, frames, dim), in the order asked, and valid frames per item."""
        return self._run(waveforms, lengths, self.resolve_layers(layers), False, exact)

    def forward(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None = None,
        *,
        exact: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As :meth:`w2v.nn.model.Model.forward`: the model output (CTC logits with a CTC
        head) and valid frames per item."""
        states, frames = self._run(waveforms, lengths, [], True, exact)
        return states[-1], frames


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The w2v metadata of an exported graph (its weights are not read);
    :class:`CheckpointError` for a file that is not a w2v graph."""
    import onnx

    where = shown(os.fspath(path))
    if not Path(path).is_file():
        raise CheckpointError(f"{where}: no such file")
    try:
        proto = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's and onnx's errors differ by version
        raise CheckpointError(f"{where}: not an ONNX file: {one_line(e, 200)}") from None
    props = {p.key: p.value for p in proto.metadata_props}
    try:
        meta = json.loads(props[METADATA_KEY])
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        missing = [k for k in ("config", "layers", "output", "exact") if k not in meta]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
    except (KeyError, ValueError) as e:
        raise CheckpointError(
            f"{where}: an ONNX file without w2v's metadata (write it with w2v export --onnx): "
            f"{one_line(e, 100)}"
        ) from None
    return meta


def backend_name(model: nn.Module) -> str:
    """The :data:`BACKENDS` name of what computes ``model`` (for the manifest)."""
    return "onnxruntime" if isinstance(model, OnnxModel) else "torch"


def check_placement(device: Any, dtype: Any, compile: bool) -> None:
    """:class:`UsageError` for options this backend cannot honour: a device other than the
    CPU, a dtype other than float32, torch.compile."""
    if device is not None and torch.device(device).type != "cpu":
        raise UsageError(f"the onnxruntime backend runs on the CPU, not on {device}")
    if dtype is not None and dtype not in (torch.float32, "float32", "fp32"):
        raise UsageError(f"the onnxruntime backend computes in float32, not {dtype}")
    if compile:
        raise UsageError("compile applies to the torch backend, not to onnxruntime")
