"""Learned layer weights: a :class:`~w2v.nn.WeightedLayerSum` trained jointly with a linear
probe (s3prl's featurizer; transformers' ``use_weighted_layer_sum``), reporting how much
of each layer the probe chose to use.

The fit is full-batch L-BFGS (at most ``STEPS`` iterations, an L2 penalty on the probe
only) on at most ``max_items`` items (a seeded sample: the cost is iterations × items ×
layers × dim), each layer standardised per feature first, so the weights compare layers
on an equal footing whatever their scale. Seeded and single-threaded: the same data and
seed give the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from w2v.nn.weighted_sum import WeightedLayerSum

STEPS = 100
WEIGHT_DECAY = 1e-3


def learn_layer_weights(
    layers: Sequence[np.ndarray],
    y: np.ndarray,
    kind: str,
    *,
    seed: int = 0,
    layer_norm: bool = False,
    steps: int = STEPS,
) -> np.ndarray:
    """(L,) softmax layer weights of a weighted sum + linear probe fitted to ``y`` (class
    codes for ``kind == "class"``, floats for ``"number"``) from ``layers``: L arrays
    (n, d) of the same items."""
    generator = torch.Generator().manual_seed(seed)
    xs = [torch.from_numpy(_standardise(a)) for a in layers]
    dim = xs[0].shape[1]
    if kind == "class":
        target = torch.from_numpy(np.asarray(y, dtype=np.int64))
        outputs = int(target.max()) + 1
    else:
        t = np.asarray(y, dtype=np.float64)
        target = torch.from_numpy(((t - t.mean()) / (t.std() or 1.0)).astype(np.float32))
        outputs = 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mix = WeightedLayerSum(len(xs), layer_norm=layer_norm)
        head = nn.Linear(dim, outputs)
        with torch.no_grad():
            bound = 1.0 / dim**0.5
            head.weight.copy_(
                torch.rand(head.weight.shape, generator=generator) * 2 * bound - bound
            )
            head.bias.zero_()
        optim = torch.optim.LBFGS(
            [*mix.parameters(), *head.parameters()],
            max_iter=steps,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optim.zero_grad()
            pooled, _ = mix(xs)
            out = head(pooled)
            if kind == "class":
                loss = F.cross_entropy(out, target)
            else:
                loss = F.mse_loss(out[:, 0], target)
            loss = loss + WEIGHT_DECAY * head.weight.pow(2).sum()
            loss.backward()
            return loss

        optim.step(closure)
        return mix.normalized_weights.detach().numpy().astype(np.float64)
    finally:
        torch.set_num_threads(threads)


def _standardise(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    mean = a.mean(axis=0, dtype=np.float64)
    std = a.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    return ((a - mean.astype(np.float32)) / std.astype(np.float32)).astype(np.float32)
