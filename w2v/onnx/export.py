"""A model as an ONNX graph: what ``w2v export --onnx`` writes and the backend runs.

The graph is the model's own computation, traced by ``torch.onnx.export`` (the
torch.export-based exporter) through :meth:`w2v.nn.model.Model.hidden_states`::

    waveforms (B, S) float32, lengths (B,) int64
      → layer_i (B, T, D) for each requested layer i, [output (B, T, D or vocab)],
        frame_lengths (B,) int64

Batch and time are dynamic axes. Exact mode is part of the graph (valid-frame
GroupNorm statistics, padding re-zeroed in the positional conv, padded keys masked), so
a batched item gets the numbers it gets alone, as in PyTorch. No layer past the deepest
requested one is in the graph; ``output`` (the model's ``forward``: the final LayerNorm of
pre-LN models, CTC logits when there is a CTC head) only when that is the last layer.

One deliberate difference from a plain export: attention. The exporter writes
``scaled_dot_product_attention`` with a boolean mask as a dozen elementwise ops over the
(B, H, T, T) scores (mask → -inf, add, softmax, a NaN guard); here it becomes ONNX
Runtime's fused ``com.microsoft.MultiHeadAttention`` (one kernel per layer, padding as a
(B, T) key mask, WavLM's gated position bias as its additive bias), which reads the
scores once. And one rewrite of the traced graph: products of one input by several
constant matrices, each plus a constant bias (attention's q, k and v projections), become
one product by the matrices side by side, one bias and a Split. ONNX Runtime's GEMM runs
one (T, 3D) product faster than three (T, D) ones, and each output is the same sum, so
the numbers do not change (bench/RESULTS.md has the measurements).

The checkpoint's config and info travel in the graph's metadata (:data:`METADATA_KEY`),
so :func:`w2v.onnx.runtime.OnnxModel.from_file` needs nothing but the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from w2v.errors import UsageError, one_line
from w2v.nn.model import Model, layer_indices

FORMAT = "w2v-onnx"
FORMAT_VERSION = 1
METADATA_KEY = "w2v"
"""The graph's metadata entry holding :func:`metadata` as JSON."""

INPUTS = ("waveforms", "lengths")
FRAMES = "frame_lengths"
OUTPUT = "output"
OPSET = 20
"""ONNX opset of the graph: 20 has ``Gelu`` as one op, which ONNX Runtime fuses with the bias
before it (``BiasGelu``); under 18 it is five elementwise ops over the activation."""

_EXAMPLE_SAMPLES = (16000, 9000)
"""The example batch the graph is traced with: two items (torch.export specialises an axis
of size 1), the second padded, so the padding masks are traced."""

_MAX_PROTO_BYTES = 1 << 30
"""Weights above this are stored beside the graph (``OUT.onnx.data``), since a protobuf file
cannot exceed 2 GiB."""


def layer_name(i: int) -> str:
    """The graph output holding layer index ``i``."""
    return f"layer_{i}"


def require_onnx() -> None:
    """:class:`UsageError` saying what to install when onnx, onnxruntime or onnxscript is
    missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise UsageError(
            f"the onnxruntime backend needs the onnx extra: pip install 'w2v[onnx]' ({one_line(e)})"
        ) from None


class Graph(nn.Module):
    """What the exported graph computes, as a module: ``(waveforms, lengths)`` → the
    ``layers`` states, the model output when ``output``, and the valid frames."""

    def __init__(self, model: Model, layers: Sequence[int], output: bool, exact: bool = True):
        super().__init__()
        self.model = model
        self.layers = list(layers)
        self.output = output
        self.exact = exact

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.model.config.num_layers
        asked = self.layers + ([n] if self.output else [])
        states, frames = self.model.hidden_states(waveforms, lengths, asked, exact=self.exact)
        outs = states[: len(self.layers)]
        if self.output:  # Model.forward's last steps, on the state computed above
            x = self.model.encoder.finish(states[-1])
            if self.model.lm_head is not None:
                x = self.model.lm_head(x)
            outs.append(x)
        return (*outs, frames)


def plan(model: Model, layers: Sequence[int] | None) -> tuple[list[int], bool]:
    """The graph's layer outputs and whether it has ``output``: all layers and the output for
    None; else the given indices (resolved, negatives from the end), with the output when
    the deepest is the last layer."""
    n = model.config.num_layers
    idx = layer_indices(layers, n)
    if not idx:
        raise UsageError("give at least one layer to export")
    return idx, max(idx) == n


def metadata(model: Model, layers: Sequence[int], output: bool, exact: bool) -> dict[str, Any]:
    """What the graph says about itself: format, the checkpoint's config and info, and its
    outputs."""
    info = model.info
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "family": info.family,
        "source": info.source,
        "normalize": info.normalize,
        "vocab": None if info.vocab is None else list(info.vocab),
        "layers": list(layers),
        "output": output,
        "exact": exact,
    }


def save_onnx(
    model: Model,
    path: str | os.PathLike,
    layers: Sequence[int] | None = None,
    *,
    exact: bool = True,
) -> Path:
    """Write ``model``'s graph to ``path`` (see the module docstring), atomically: a
    temporary beside ``path``, renamed when complete. ``layers``: indices as in
    :meth:`~w2v.nn.model.Model.hidden_states` (default: all, and the model output).
    Weights over 1 GiB go to ``path + ".data"`` beside it. Returns ``path``.

    Raises :class:`UsageError` when the onnx extra is missing, for a model that is not a
    float32 model on the CPU in eval mode, and for bad layer indices.
    """
    path = Path(path)
    idx, output = plan(model, layers)
    program = export_onnx(model, idx, output, exact=exact)
    external = _weight_bytes(model) > _MAX_PROTO_BYTES
    path.parent.mkdir(parents=True, exist_ok=True)
    # written whole into a private directory beside the target, then renamed into place
    # (the weights first: a graph in place always finds its weights)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / path.name
        program.save(staged, external_data=external)
        data = staged.with_name(staged.name + ".data")
        if data.exists():
            os.replace(data, path.with_name(path.name + ".data"))
        os.replace(staged, path)
    return path


def export_onnx(model: Model, layers: Sequence[int], output: bool, *, exact: bool = True) -> Any:
    """The ``torch.onnx.ONNXProgram`` of :class:`Graph` (``layers``: resolved indices) with
    :func:`metadata`; see :func:`save_onnx`."""
    require_onnx()
    check_exportable(model)
    graph = Graph(model, layers, output, exact).eval()
    x = torch.randn(len(_EXAMPLE_SAMPLES), max(_EXAMPLE_SAMPLES)) * 0.1
    lengths = torch.tensor(_EXAMPLE_SAMPLES)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    samples = torch.export.Dim("samples", min=model.config.receptive_field, max=1 << 31)
    names = [layer_name(i) for i in layers] + ([OUTPUT] if output else []) + [FRAMES]
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            graph,
            (x, lengths),
            dynamo=True,
            input_names=list(INPUTS),
            output_names=names,
            dynamic_shapes=({0: batch, 1: samples}, {0: batch}),
            custom_translation_table=_translations(),
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    concatenate_products(program.model.graph)
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata(model, layers, output, exact))
    return program


def concatenate_products(graph: Any) -> int:
    """Rewrite ``graph`` (an ``onnxscript.ir.Graph``, in place): where one value is the
    first input of several ``MatMul`` nodes by constant (K, N_i) matrices, each followed
    only by an ``Add`` of a constant (N_i,) bias, compute them as one ``MatMul`` by the
    (K, ΣN_i) concatenation, one ``Add`` and a ``Split`` into the old outputs' uses.
    Returns the number of groups rewritten."""
    from onnxscript import ir

    groups = 0
    for value in [*graph.inputs, *(v for node in graph for v in node.outputs)]:
        group = [p for use in value.uses() if (p := _biased_product(use)) is not None]
        if len(group) < 2:
            continue
        name = group[0][0].name or f"products_{groups}"
        # the matrices side by side, the biases end to end, the widths for the Split
        tensors = {
            "weight": np.concatenate([w.const_value.numpy() for _, _, w, _ in group], 1),
            "bias": np.concatenate([b.const_value.numpy() for _, _, _, b in group]),
            "widths": np.array([w.shape[1] for _, _, w, _ in group], dtype=np.int64),
        }
        consts = {}
        for key, array in tensors.items():
            tensor = ir.tensor(array)
            consts[key] = ir.Value(
                name=f"{name}_{key}",
                shape=tensor.shape,
                type=ir.TensorType(tensor.dtype),
                const_value=tensor,
            )
            graph.register_initializer(consts[key])
        product = ir.Node("", "MatMul", [value, consts["weight"]], name=f"{name}_concat")
        biased = ir.Node("", "Add", [product.outputs[0], consts["bias"]], name=f"{name}_bias")
        split = ir.Node(
            "",
            "Split",
            [biased.outputs[0], consts["widths"]],
            [ir.AttrInt64("axis", -1)],
            num_outputs=len(group),
            name=f"{name}_split",
        )
        graph.insert_after(group[0][1], [product, biased, split])
        for (matmul, add, _, _), part in zip(group, split.outputs, strict=True):
            part.shape, part.type = add.outputs[0].shape, add.outputs[0].type
            add.outputs[0].replace_all_uses_with(part)
            graph.remove([add, matmul], safe=True)
            for const in (*matmul.inputs[1:], *add.inputs):
                if const is not None and const.is_initializer() and not const.uses():
                    graph.initializers.pop(const.name, None)
        groups += 1
    if groups:
        graph.sort()
    return groups


def _biased_product(use: Any) -> tuple[Any, Any, Any, Any] | None:
    """(MatMul, Add, weight, bias) when ``use`` is the first input of a ``MatMul`` by a
    constant matrix whose only use is an ``Add`` of a constant vector of its width."""
    matmul = use.node
    if matmul.op_type != "MatMul" or matmul.domain != "" or use.idx != 0:
        return None
    weight, uses = matmul.inputs[1], matmul.outputs[0].uses()
    if weight is None or weight.const_value is None or len(weight.shape or ()) != 2:
        return None
    if len(uses) != 1 or uses[0].node.op_type != "Add" or uses[0].node.domain != "":
        return None
    add = uses[0].node
    if add.outputs[0].is_graph_output():
        return None
    bias = add.inputs[1 - uses[0].idx]
    if bias is None or bias.const_value is None or list(bias.shape or ()) != [weight.shape[1]]:
        return None
    return matmul, add, weight, bias


def check_exportable(model: Model) -> None:
    """:class:`UsageError` unless ``model`` is a float32 w2v model on the CPU, in eval mode
    and not compiled (TypeError for another object)."""
    if not isinstance(model, Model):
        raise TypeError(f"expected a w2v model, got {type(model).__name__}")
    if model.training:
        raise UsageError("export a model in eval mode (model.eval()): train mode adds dropout")
    p = model.feature_extractor.conv_layers[-1].conv.weight
    if p.device.type != "cpu" or p.dtype != torch.float32:
        raise UsageError(
            f"the ONNX graph is exported from a float32 model on the CPU; this one is "
            f"{str(p.dtype).removeprefix('torch.')} on {p.device}"
        )
    if "_layers" in vars(model):  # Model.compile replaced it
        raise UsageError("export the model before compiling it (compile=False)")


def _weight_bytes(model: Model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs notes that concern other libraries (torchvision's ops missing) and
    warns about its own internals; a w2v command shows none of them."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _translations() -> dict[Any, Any]:
    """aten op → ONNX translation overriding the exporter's own: SDPA as
    ``com.microsoft.MultiHeadAttention``."""
    import onnx.defs
    import onnxscript
    from onnxscript import ir
    from onnxscript import opset18 as op

    # ONNX Runtime's contrib op, described just far enough for onnxscript to emit it
    param, optional = onnx.defs.OpSchema.FormalParameter, onnx.defs.OpSchema.FormalParameterOption
    schema = onnx.defs.OpSchema(
        "MultiHeadAttention",
        "com.microsoft",
        1,
        doc="",
        inputs=[
            param("query", "T"),
            param("key", "T", param_option=optional.Optional),
            param("value", "T", param_option=optional.Optional),
            param("bias", "T", param_option=optional.Optional),
            param("key_padding_mask", "M", param_option=optional.Optional),
            param("attention_bias", "T", param_option=optional.Optional),
        ],
        outputs=[param("output", "T")],
        type_constraints=[("T", ["tensor(float)"], ""), ("M", ["tensor(int32)"], "")],
        attributes=[onnx.defs.OpSchema.Attribute("num_heads", onnx.defs.OpSchema.AttrType.INT, "")],
    )
    mha = onnxscript.values.Op(onnxscript.values.Opset("com.microsoft", 1), schema.name, schema)

    def sdpa(
        query,
        key,
        value,
        attn_mask=None,
        dropout_p=0.0,
        is_causal=False,
        scale=None,
        enable_gqa=False,
    ):
        # query, key, value (B, H, T, hd) as SelfAttention splits them; MultiHeadAttention
        # takes (B, T, H·hd) and scales by hd^-0.5 as SDPA does by default
        if is_causal or scale is not None or enable_gqa:
            raise NotImplementedError("only SelfAttention's plain SDPA call is translated")
        heads, head_dim = query.shape[1], query.shape[3]

        def merged(t):
            return op.Reshape(
                op.Transpose(t, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, -1])
            )

        q, k, v = merged(query), merged(key), merged(value)
        if attn_mask is None:
            y = mha(q, k, v, num_heads=heads)
        elif attn_mask.dtype == ir.DataType.BOOL:  # (B, 1, 1, T) key mask → (B, T) int32
            keep = op.Reshape(
                op.Cast(attn_mask, to=ir.DataType.INT32), op.Constant(value_ints=[0, -1])
            )
            y = mha(q, k, v, None, keep, num_heads=heads)
        else:  # WavLM: (B, H, T, T) additive bias, padded keys already at the dtype's minimum
            y = mha(q, k, v, None, None, attn_mask, num_heads=heads)
        split = op.Concat(
            op.Shape(query, start=0, end=1), op.Constant(value_ints=[-1, heads, head_dim]), axis=0
        )
        return op.Transpose(op.Reshape(y, split), perm=[0, 2, 1, 3])  # (B, H, T, hd)

    return {torch.ops.aten.scaled_dot_product_attention.default: sdpa}
