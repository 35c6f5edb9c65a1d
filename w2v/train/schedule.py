"""Schedules that are functions of the step alone, so a resumed run continues them exactly."""

from __future__ import annotations


def learning_rate(step: int, peak: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then linear decay to 0 at
    ``total_steps`` (transformers' ``get_linear_schedule_with_warmup``; fairseq's
    wav2vec 2.0 recipe uses the same shape, polynomial decay of power 1)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    left = max(total_steps - step, 0)
    return peak * left / max(total_steps - warmup_steps, 1)


def gumbel_temperature(
    step: int, start: float = 2.0, end: float = 0.5, decay: float = 0.999995
) -> float:
    """The quantizer's Gumbel-softmax temperature at ``step``: ``max(end, start * decay **
    step)`` (wav2vec 2.0's ``latent_temp = (2, 0.5, 0.999995)``)."""
    return max(end, start * decay**step)
