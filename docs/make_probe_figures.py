"""Draw the README's `w2v probe` pictures (docs/probe/*.png) from generated embeddings.

No trained checkpoint is reachable offline, so the example corpus is generated: 600
utterance vectors of 13 layers × 64 dims from 12 speakers, where an "emotion" label (4
classes) is linearly decodable with a strength that rises to layer 8 and falls after it,
and an "arousal" score follows the same profile. The pictures come from the real command:

    python docs/make_probe_figures.py    # writes docs/probe/{probe_emotion,cka,layer_weights}.png
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from w2v.cli import main
from w2v.pipeline.outputs import SETTINGS, new_entry, output_name, write_manifest, write_output

HERE = Path(__file__).resolve().parent / "probe"


def make_corpus(root: Path, items: int = 600, layers: int = 13, dim: int = 64) -> None:
    rng = np.random.default_rng(0)
    strength = np.exp(-0.5 * ((np.arange(layers) - 8) / 2.5) ** 2)  # peaks at layer 8
    emotion = rng.integers(0, 4, size=items)
    arousal = rng.standard_normal(items)
    means = rng.standard_normal((4, dim))
    direction = rng.standard_normal(dim)
    speaker = rng.integers(0, 12, size=items)
    speaker_means = rng.standard_normal((12, dim)) * 0.8
    mix = rng.standard_normal((layers, dim, dim)) / np.sqrt(dim)  # layers share a drifting basis
    settings = dict.fromkeys(SETTINGS)
    settings.update(
        layers=list(range(layers)), pool="mean", format="npy", model="example", dtype="float32"
    )
    if "dtype_out" in settings:
        settings["dtype_out"] = "float32"
    entries = {}
    base = rng.standard_normal((items, dim))
    lines = ["path,emotion,arousal,speaker"]
    for i in range(items):
        x = np.empty((layers, dim), dtype=np.float32)
        h = base[i] + speaker_means[speaker[i]]
        for layer in range(layers):
            h = 0.7 * h + 0.3 * h @ mix[layer] + 0.3 * rng.standard_normal(dim)
            signal = 0.3 * strength[layer] * (means[emotion[i]] + arousal[i] * direction)
            x[layer] = h + signal
        name = f"spk{speaker[i]:02d}/utt{i:04d}.wav"
        write_output(root / "emb" / output_name(name, "npy"), x, list(range(layers)), "mean", "npy")
        path = f"/corpus/{name}"
        entries[path] = new_entry(path, settings, output=output_name(name, "npy"), frames=250)
        lines.append(
            f"{name},{'angry happy neutral sad'.split()[emotion[i]]},{arousal[i]:.3f},spk{speaker[i]:02d}"
        )
    write_manifest(root / "emb", entries)
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def run() -> int:
    work = Path(tempfile.mkdtemp(prefix="w2v-probe-figures-"))
    try:
        make_corpus(work)
        code = main(
            [
                "probe",
                str(work / "emb"),
                "--labels",
                str(work / "labels.csv"),
                "--group-by",
                "speaker",
                "--out",
                str(work / "out"),
            ]
        )
        HERE.mkdir(exist_ok=True)
        for name in ("probe_emotion.png", "cka.png", "layer_weights.png"):
            shutil.copyfile(work / "out" / name, HERE / name)
        return code
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run())
