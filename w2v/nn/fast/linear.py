"""Linear layers through oneDNN on a CPU.

On the AVX-512 CPU of our benchmarks, torch's fp32 ``F.linear`` (MKL) reaches about 210
GFLOP/s, while oneDNN's inner product reaches 450-490 GFLOP/s on the same two threads, the
rate ONNX Runtime's own GEMM gets (bench/RESULTS.md). The plain form is ``nn.Linear``;
:func:`linear` runs a model's ``nn.Linear`` with this fast path beside it, taken only where
it computes the same product (float32 on a CPU, no autograd, not traced or compiled), so
gradients, exports and other devices and dtypes keep ``F.linear``. The results differ from
MKL's only in the order of the fp32 sums (a few 1e-7 relative).

The oneDNN op is the one torch's inductor uses for CPU linear layers
(``torch.ops.mkldnn._linear_pointwise``); a torch build without it, or without oneDNN,
keeps the plain form.
"""

from __future__ import annotations

import torch
from torch import nn

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def cpu_fp32_inference(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Where the CPU fast paths may replace a plain op on ``x`` with ``weight``: float32 on
    a CPU, no gradient to record, not under CPU autocast, not compiled, traced or
    exported."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
    )


def onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the oneDNN product computes ``F.linear(x, weight, ...)`` here: where
    :func:`cpu_fp32_inference`, not empty."""
    return ONEDNN and x.numel() > 0 and cpu_fp32_inference(x, weight)


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` (..., in) → (..., out) as one oneDNN inner product over the rows."""
    y = torch.ops.mkldnn._linear_pointwise(
        x.reshape(-1, x.shape[-1]), weight, bias, "none", [], ""
    )  # (rows, out)
    return y.view(*x.shape[:-1], y.shape[-1])


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a Linear layer of the model: through oneDNN where that computes the
    same product (see the module docstring), else the layer's own forward. Only a plain
    ``nn.Linear`` without hooks takes the fast path, so a layer swapped by the user (a
    ``torch.ao`` dynamically quantised one, a LoRA wrapper) or hooked runs as it is."""
    if fast(layer, x):
        return onednn_linear(x, layer.weight, layer.bias)
    return layer(x)


def fast(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`linear` takes the oneDNN path for ``layer(x)``: a plain ``nn.Linear``
    without hooks, where :func:`onednn_applies`."""
    return (
        type(layer) is nn.Linear
        and not (layer._forward_hooks or layer._forward_pre_hooks)
        and onednn_applies(x, layer.weight)
    )
