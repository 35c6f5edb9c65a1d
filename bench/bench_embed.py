"""End to end: `w2v embed` vs a straightforward transformers loop over a mixed corpus.

The corpus (generated with a fixed seed, or reused with ``--corpus DIR``):
N files, durations uniform in [min, max] seconds, rates 8/16/22.05/44.1/48 kHz,
wav (PCM_16) and flac, about a quarter stereo, tones plus noise.

Both sides embed the same files with the same random-init weights (a
transformers ``Wav2Vec2Model`` saved with ``save_pretrained``, plus a
``Wav2Vec2FeatureExtractor(do_normalize=True)`` beside it) into `.npy` files,
mean-pooled per layer, and run alternately (transformers, w2v, transformers, ...):

* transformers, one file at a time: soundfile.read → channel mean → soxr to
  16 kHz ("HQ", the resampler w2v uses, so only the pipeline structure differs)
  → feature extractor → ``model(x, output_hidden_states=True)`` (sdpa,
  inference mode) → mean of the asked layers → np.save;
* w2v: ``w2v.embed.embed_files(files, model_dir, out_dir, layers=..., pool="mean")``,
  the function behind ``w2v embed`` (length-sorted batches, decoding on a
  thread pool overlapped with the model, no layer past the deepest asked for).

Wall times include loading the model from disk on both sides. The table reports
files/s, audio seconds per second, the speed-up, and the max |difference|
between the two sides' pooled outputs over all files.

    python bench/bench_embed.py                              # 200 files, 1-30 s, base
    python bench/bench_embed.py --files 40 --max-seconds 10  # a quick look
    python bench/bench_embed.py --size large --out bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, machine_description, median  # noqa: E402

RATES = (8000, 16000, 22050, 44100, 48000)


# Corpus ----------------------------------------------------------------------------


def make_corpus(root: Path, n: int, min_s: float, max_s: float, seed: int = 0) -> list[Path]:
    """``n`` files of tones plus noise in ``root``; the same files for the same arguments."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        seconds = rng.uniform(min_s, max_s)
        rate = int(rng.choice(RATES))
        channels = 2 if rng.random() < 0.25 else 1
        ext = "flac" if rng.random() < 0.5 else "wav"
        t = np.arange(int(seconds * rate)) / rate
        tones = sum(
            rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(80, 0.45 * rate) * t)
            for _ in range(3)
        )
        data = tones[:, None] + 0.05 * rng.standard_normal((t.shape[0], channels))
        path = root / f"{i:04d}_{rate}_{channels}ch.{ext}"
        sf.write(path, np.clip(data, -1, 1).astype(np.float32), rate, subtype="PCM_16")
        files.append(path)
    return files


def corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.suffix in (".wav", ".flac"))


def audio_seconds(files: list[Path]) -> float:
    import soundfile as sf

    return sum(sf.info(str(f)).duration for f in files)


# Model -----------------------------------------------------------------------------


def build(size: str, path: Path) -> Path:
    """A random-init transformers model and its feature extractor saved in ``path``."""
    import transformers

    torch.manual_seed(0)
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**SIZES[size])).save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(
        do_normalize=True, return_attention_mask=False
    ).save_pretrained(path)
    return path


# The two sides ---------------------------------------------------------------------


def run_transformers(files: list[Path], model_dir: Path, out: Path, layers: list[int]) -> None:
    """The straightforward loop: one file at a time, every step in sequence."""
    import soundfile as sf
    import soxr
    import transformers

    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = transformers.Wav2Vec2Model.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        data, rate = sf.read(str(f), dtype="float32", always_2d=True)
        wave = data.mean(axis=1, dtype=np.float32)
        if rate != 16000:
            wave = soxr.resample(wave, rate, 16000, quality="HQ")
        x = extractor(wave, sampling_rate=16000, return_tensors="pt").input_values
        with torch.inference_mode():
            states = model(x, output_hidden_states=True).hidden_states
            pooled = torch.stack([states[i][0].mean(0) for i in layers])
        np.save(out / f"{f.name}.npy", pooled.float().numpy())


def run_w2v(files: list[Path], model_dir: Path, out: Path, layers: list[int], **kw) -> None:
    from w2v.embed import embed_files

    summary = embed_files(files, model_dir, out, layers=layers, pool="mean", **kw)
    if summary.failed:
        raise RuntimeError(f"w2v embed failed on {summary.failed} file(s): {summary.errors[:3]}")


def max_diff(files: list[Path], a: Path, b: Path) -> float:
    return max(
        float(np.abs(np.load(a / f"{f.name}.npy") - np.load(b / f"{f.name}.npy")).max())
        for f in files
    )


def timed(fn) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# Main ------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    ap.add_argument("--corpus", type=Path, help="reuse (or create) the corpus in this directory")
    ap.add_argument("--size", default="base", choices=list(SIZES))
    ap.add_argument("--layers", default="0,6,12", help="comma-separated layer indices")
    ap.add_argument("--reps", type=int, default=1, help="timed runs of each side, alternating")
    ap.add_argument("--warmup-files", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="w2v decoding threads")
    ap.add_argument("--batch-seconds", type=float, default=None, help="w2v batch budget")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", type=Path, help="append the table to this markdown file")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    layers = [int(x) for x in args.layers.split(",")]
    kw = {"workers": args.workers}
    if args.batch_seconds:
        kw["batch_seconds"] = args.batch_seconds

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = args.corpus or tmp / "corpus"
        files = corpus_files(corpus) if corpus.is_dir() else []
        if len(files) < args.files:
            print(f"writing {args.files} files to {corpus} ...", flush=True)
            files = make_corpus(corpus, args.files, args.min_seconds, args.max_seconds)
        files = files[: args.files]
        seconds = audio_seconds(files)
        model_dir = build(args.size, tmp / "model")

        # warm-up on a few short files (first-call allocations, kernel selection)
        few = sorted(files, key=lambda f: f.stat().st_size)[: args.warmup_files]
        run_transformers(few, model_dir, tmp / "warm_ref", layers)
        run_w2v(few, model_dir, tmp / "warm_w2v", layers, **kw)

        t_ref, t_w2v = [], []
        for _ in range(args.reps):
            for d in ("ref", "w2v"):
                shutil.rmtree(tmp / d, ignore_errors=True)
            t_ref.append(timed(lambda: run_transformers(files, model_dir, tmp / "ref", layers)))
            print(f"transformers: {t_ref[-1]:.1f} s", flush=True)
            t_w2v.append(timed(lambda: run_w2v(files, model_dir, tmp / "w2v", layers, **kw)))
            print(f"w2v embed:    {t_w2v[-1]:.1f} s", flush=True)
        diff = max_diff(files, tmp / "ref", tmp / "w2v")

    n = len(files)
    ref, ours = median(t_ref), median(t_w2v)
    lines = [
        f"Machine: {machine_description('cpu')}",
        f"Corpus: {n} files, {args.min_seconds:g}-{args.max_seconds:g} s "
        f"({seconds:.0f} s of audio), rates {'/'.join(str(r) for r in RATES)} Hz, "
        f"wav+flac, ~1/4 stereo; model: random-init wav2vec2-{args.size}, layers {args.layers}, "
        f"mean-pooled; {args.reps} timed run(s) per side, median; model loading included; "
        f"w2v batch_seconds {args.batch_seconds or 'default'}. "
        "Both sides resample with soxr HQ.",
        "",
        "| pipeline | wall s | files/s | audio s/s | speed-up | max abs diff |",
        "|---|---|---|---|---|---|",
        f"| transformers loop | {ref:.1f} | {n / ref:.2f} | {seconds / ref:.1f} | 1.00x | |",
        f"| w2v embed | {ours:.1f} | {n / ours:.2f} | {seconds / ours:.1f} | "
        f"**{ref / ours:.2f}x** | {diff:.1e} |",
    ]
    print("\n".join(lines), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(f"\n## End to end: w2v embed vs transformers loop ({args.size}, {n} files)\n\n")
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
