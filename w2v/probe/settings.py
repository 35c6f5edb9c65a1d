"""The settings of a probe run, checked once for the CLI and the API alike (no
scikit-learn needed: the CLI builds them before anything is imported from the extra)."""

from __future__ import annotations

from dataclasses import dataclass

from w2v.errors import UsageError, quoted
from w2v.pipeline.layers import LayerSpec
from w2v.probe.cka import DEFAULT_ITEMS as DEFAULT_CKA_ITEMS
from w2v.probe.reference import REFERENCES

TASKS = ("utterance", "frame")
PROBES = ("linear",)
DEFAULT_MAX_FRAMES = 50_000
"""Frame tasks: labelled frames sampled at most (memory follows this × dim)."""
DEFAULT_WEIGHT_ITEMS = 2000
"""Items (frames) the learned layer weights are fitted on at most."""


@dataclass(frozen=True)
class ProbeSettings:
    """Everything that decides a probe run's numbers (recorded in summary.json)."""

    task: str = "utterance"
    probe: str = "linear"
    layers: LayerSpec = None
    labels: tuple[str, ...] | None = None  # label columns / tiers; None: all
    key_column: str | None = None
    group_by: str | None = None
    groups: str | None = None  # a table of groups (utt2spk) instead of a labels column
    classify: tuple[str, ...] = ()
    regress: tuple[str, ...] = ()
    folds: int = 5
    inner_folds: int = 3
    inner_max: int = 2000
    seed: int = 0
    max_frames: int = DEFAULT_MAX_FRAMES
    cka_items: int = DEFAULT_CKA_ITEMS
    layer_weights: bool = True
    weights_items: int = DEFAULT_WEIGHT_ITEMS
    layer_norm: bool = False
    jobs: int = 1
    reference: str | None = None  # "logmel": CKA of each layer against log-mel frames

    def check(self) -> None:
        if self.task not in TASKS:
            raise UsageError(f"--task must be one of {', '.join(TASKS)}, got {quoted(self.task)}")
        if self.probe not in PROBES:
            raise UsageError(
                f"--probe must be one of {', '.join(PROBES)}, got {quoted(self.probe)}"
            )
        for name in ("folds", "inner_folds"):
            if getattr(self, name) < 2:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 2")
        if self.seed < 0:
            raise UsageError(f"--seed must be 0 or more, got {self.seed}")
        for name in ("inner_max", "max_frames", "cka_items", "weights_items", "jobs"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.reference is not None and self.reference not in REFERENCES:
            raise UsageError(
                f"--reference must be one of {', '.join(REFERENCES)}, got {quoted(self.reference)}"
            )
        both = set(self.classify) & set(self.regress)
        if both:
            raise UsageError(
                f"column {quoted(sorted(both)[0])} is given to both --classify and --regress"
            )
