"""Small functional helpers shared by the modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """GELU, in place when autograd will not need ``x`` (inference), else out of place.

    Only for tensors the caller has just produced: writing in place skips a
    fresh allocation of the activation's size, which on CPU costs page faults.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return F.gelu(x)
    return torch.ops.aten.gelu_(x)
