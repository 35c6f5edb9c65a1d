"""The probe's pictures: metric against layer with the control task, CKA heatmaps, learned
layer weights. Each writes one PNG atomically.

Figures are made as ``matplotlib.figure.Figure`` objects and rendered by the Agg canvas,
never through pyplot: no display is needed, and importing w2v changes no global state
(a notebook's chosen backend stays as it was)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from w2v.atomic import atomic_write_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110


def _figure(width: float, height: float) -> Figure:
    # matplotlib is imported here, when a plot is drawn: importing it costs every w2v
    # command (the CLI imports the probe package) about 60 MB and a quarter of a second
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # attaches itself: PNG rendering without pyplot or a display
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    # no software or date stamp in the file: the same results draw the same bytes
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    data = buffer.getvalue()
    return atomic_write_file(path, lambda f: f.write(data))


def plot_metrics(
    path: str | os.PathLike,
    label: str,
    layers: Sequence[int],
    metrics: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
) -> Path:
    """One panel per metric: ``metrics[name] = (mean, std, control_mean or None)`` per layer."""
    fig = _figure(4.2 * len(metrics), 3.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, (name, (mean, std, control)) in zip(axes[0], metrics.items(), strict=True):
        ax.errorbar(layers, mean, yerr=std, marker="o", capsize=3, label="probe")
        if control is not None:
            ax.plot(layers, control, "--", marker=".", color="grey", label="control task")
        best = int(np.argmax(mean))
        ax.scatter([layers[best]], [mean[best]], s=120, facecolors="none", edgecolors="red")
        ax.set_xlabel("layer")
        ax.set_title(f"{label}: {name}")
        ax.set_xticks(list(layers))
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_cka(
    path: str | os.PathLike,
    matrix: np.ndarray,
    rows: Sequence[int],
    cols: Sequence[int],
    title: str,
    row_name: str = "layer",
    col_name: str = "layer",
) -> Path:
    """A heatmap of ``matrix`` (rows × cols) in [0, 1]."""
    size = 2.5 + 0.28 * max(len(rows), len(cols))
    fig = _figure(size + 1.0, size)
    ax = fig.subplots()
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma", origin="lower")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(col_name)
    ax.set_ylabel(row_name)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="linear CKA")
    fig.tight_layout()
    return _save(fig, path)


def plot_weights(
    path: str | os.PathLike, layers: Sequence[int], weights: dict[str, np.ndarray]
) -> Path:
    """Learned layer weights, one group of bars per label column."""
    fig = _figure(max(4.5, 0.45 * len(layers) + 2), 3.4)
    ax = fig.subplots()
    width = 0.8 / max(1, len(weights))
    x = np.arange(len(layers))
    for k, (label, w) in enumerate(weights.items()):
        ax.bar(x + (k - (len(weights) - 1) / 2) * width, w, width, label=label)
    ax.axhline(1.0 / len(layers), color="grey", linestyle="--", linewidth=1, label="uniform")
    ax.set_xticks(x, [str(i) for i in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("softmax weight")
    ax.set_title("learned layer weights")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_reference(
    path: str | os.PathLike,
    layers: Sequence[int],
    cka: np.ndarray,
    cca: np.ndarray,
    name: str,
) -> Path:
    """Linear CKA and SVCCA of each layer against a reference representation."""
    fig = _figure(max(4.5, 0.35 * len(layers) + 2), 3.2)
    ax = fig.subplots()
    ax.plot(layers, cka, marker="o", label="linear CKA")
    ax.plot(layers, cca, marker="s", label="SVCCA (mean canonical corr.)")
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(list(layers))
    ax.set_xlabel("layer")
    ax.set_ylabel("similarity")
    ax.set_title(f"layers against {name}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
