"""Synthetic ``w2v embed`` output directories for the probe tests: arrays written with the
pipeline's own writers and manifest, so the probe reads them exactly as it reads real runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from w2v.pipeline.outputs import SETTINGS, new_entry, output_name, write_manifest, write_output


def write_embeddings(
    out_dir: Path,
    arrays: list[np.ndarray],
    layers: list[int],
    pool: str = "mean",
    fmt: str = "npy",
    root: str = "/corpus",
    names: list[str] | None = None,
    failed: int = 0,
) -> list[str]:
    """Write ``arrays`` (each ``(layers, dim)`` pooled or ``(layers, frames, dim)``) as the
    outputs of inputs ``root/utt00000.wav``...; ``failed`` more inputs recorded as errors.
    Returns the input paths in manifest order."""
    settings = dict.fromkeys(SETTINGS)
    settings.update(layers=layers, pool=pool, format=fmt, model="synthetic", dtype="float32")
    if "dtype_out" in settings:
        settings["dtype_out"] = "float32"
    names = names or [f"utt{i:05d}.wav" for i in range(len(arrays) + failed)]
    entries, paths = {}, []
    for i, name in enumerate(names):
        path = f"{root}/{name}"
        if i >= len(arrays):
            entries[path] = {**new_entry(path, settings, error="unreadable"), "status": "error"}
            continue
        a = np.asarray(arrays[i], dtype=np.float32)
        output = output_name(name, fmt)
        write_output(out_dir / output, a, layers, pool, fmt)
        frames = a.shape[1] if pool == "none" else 10
        entries[path] = new_entry(path, settings, output=output, frames=frames, duration=1.0)
        paths.append(path)
    write_manifest(out_dir, entries)
    return paths


def planted(
    n: int, layers: int, dim: int, signal_layer: int, classes: int, seed: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Pooled ``(layers, dim)`` arrays of ``n`` items whose class is linearly decodable from
    layer ``signal_layer`` only (a class mean on a few dimensions, noise elsewhere), and
    the class of each item."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    x = rng.standard_normal((n, layers, dim)).astype(np.float32)
    means = rng.standard_normal((classes, dim)) * 1.5
    x[:, signal_layer] += means[y].astype(np.float32)
    return list(x), y
