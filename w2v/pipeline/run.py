"""The embedding pipeline behind ``w2v embed`` (:func:`embed_files`) and ``w2v.embed`` (:func:`embed`).

Data flows one way: inputs → headers (durations) → batches of similar length
→ decode ahead on a thread pool → model → pooled arrays → files or a list.

* Layers: index 0 is the transformer input, k the output of layer k (before
  any final LayerNorm), negatives count from the end (-1 is the last layer).
  No layer past the deepest one asked for is computed.
* Frames: frame t covers input samples ``[320 t, 320 t + 400)`` at 16 kHz, a
  25 ms window every 20 ms; an input of S samples gives
  ``floor((S - 400) / 320) + 1`` frames.
* Results are float32 arrays of shape ``(layers, dim)`` pooled
  (``(layers, 2 * dim)`` for ``stats``) or ``(layers, frames, dim)`` unpooled,
  layers in the order asked.
* Batching: items are sorted by duration (longest first) and cut into batches
  whose padded size stays within ``batch_seconds`` of audio (see
  :mod:`w2v.pipeline.batching`); the model computes batched items exactly as it would
  alone, so results do not depend on batching.
* Audio: see :mod:`w2v.pipeline.audio` (mono mix-down or ``channel``, soxr to 16 kHz,
  per-utterance normalisation when the checkpoint asks for it).

Nothing here prints: :func:`embed_files` reports through a :class:`Progress`
object and returns a :class:`Summary`; the CLI turns those into a progress bar
and a summary line.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from w2v import allocator
from w2v.atomic import remove_stale_temporaries
from w2v.config import SAMPLE_RATE
from w2v.errors import AudioError, UsageError, one_line
from w2v.loading import load, parse_dtype, to
from w2v.longform import DEFAULT_CONTEXT_SECONDS, ChunkPolicy, iter_chunks
from w2v.pipeline import audio
from w2v.pipeline.audio import AudioInfo
from w2v.pipeline.batching import default_workers, pad, parallel_map, plan_batches, prefetch
from w2v.pipeline.outputs import (
    ManifestWriter,
    check_format,
    is_done,
    output_name,
    read_manifest,
    write_output,
)
from w2v.pipeline.pooling import RunningPool, check_pool, pool_layers

CPU_BATCH_SECONDS = 30.0
"""Default padded audio seconds per batch (longest item × batch size) with the model on
a CPU. One 10 s clip already keeps the CPU's matrix products busy, so bigger batches
only add padding and cache pressure: on 2 cores, 20 files (wav2vec2-base) took 46-50 s
with 30 s batches against 67-70 s with 160 s batches (bench/bench_embed.py)."""

GPU_BATCH_SECONDS = 160.0
"""Default padded audio seconds per batch on a GPU, which needs wide batches to be busy."""


def default_batch_seconds(device: str | torch.device) -> float:
    return CPU_BATCH_SECONDS if torch.device(device).type == "cpu" else GPU_BATCH_SECONDS


LIST_EXTENSIONS = frozenset({".txt", ".lst"})
"""Inputs with these extensions are lists of paths, one per line."""

_PROBE_WORKERS = 8
"""Threads reading headers before the run (I/O bound, the model is idle then)."""

LayerSpec = str | int | Sequence[int] | None


# Layers --------------------------------------------------------------------------

_INT = r"-?\d+"
_RANGE = re.compile(rf"^({_INT})-({_INT})$")


def parse_layers(spec: LayerSpec) -> list[int] | None:
    """``"all"`` → None; ``"12"``, ``"0,6,12"``, ``"4-8"`` (inclusive), ``"-1"`` → indices.

    Negative indices stay negative (they need the model's depth, see
    :func:`resolve_layers`). Raises :class:`UsageError` on bad syntax.
    """
    if spec is None:
        return None
    if isinstance(spec, int):
        return [spec]
    if not isinstance(spec, str):
        return [int(i) for i in spec]
    text = spec.strip().lower()
    if text == "all":
        return None
    out: list[int] = []
    for token in text.split(","):
        token = token.strip()
        if re.fullmatch(_INT, token):
            out.append(int(token))
            continue
        m = _RANGE.match(token)
        if not m:
            raise UsageError(
                f"bad layer spec {spec!r}: expected 'all', an index ('12', '-1'), a list "
                "('0,6,12') or an inclusive range ('4-8')"
            )
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi and not (lo >= 0 > hi):
            raise UsageError(f"bad layer range {token!r} in {spec!r}: start is after end")
        out.append((lo, hi))  # type: ignore[arg-type]  # resolved below once depth is known
    return out


def resolve_layers(spec: LayerSpec, num_layers: int) -> list[int]:
    """Layer indices in ``0..num_layers`` for ``spec``, in the order given, duplicates dropped.

    Raises :class:`UsageError` naming the valid range for an index out of range.
    """
    parsed = parse_layers(spec)
    if parsed is None:
        return list(range(num_layers + 1))
    n = num_layers

    def norm(i: int) -> int:
        j = i + (n + 1) if i < 0 else i
        if not 0 <= j <= n:
            raise UsageError(
                f"layer {i} is out of range for this {n}-layer model; valid layers are 0..{n} "
                f"(0 = transformer input, {n} = last layer; -{n + 1}..-1 count from the end)"
            )
        return j

    out: list[int] = []
    for item in parsed:
        if isinstance(item, tuple):
            lo, hi = norm(item[0]), norm(item[1])
            if lo > hi:
                raise UsageError(f"bad layer range {item[0]}-{item[1]}: start is after end")
            idx = list(range(lo, hi + 1))
        else:
            idx = [norm(item)]
        out.extend(i for i in idx if i not in out)
    if not out:
        raise UsageError("no layers asked for")
    return out


# Inputs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """One input file and its output key (the output path relative to DIR, without suffix)."""

    path: Path  # absolute, not resolved through symlinks
    key: str  # posix relative path, e.g. "sub/a.flac"
    error: str | None = None  # known bad before reading, e.g. an unknown extension


def _abspath(p: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.fspath(p)))


def _explicit(path: Path, key: str) -> Input:
    if path.suffix.lower() not in audio.AUDIO_EXTENSIONS and not path.is_dir():
        known = ", ".join(sorted(audio.AUDIO_EXTENSIONS))
        ext = path.suffix or "(none)"
        return Input(path, key, f"unknown audio extension {ext!r} (known: {known})")
    return Input(path, key)


def _read_list(list_file: Path) -> list[Input]:
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read list file {list_file}: {one_line(e)}") from None
    base = list_file.parent
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        p = _abspath(base / line)  # an absolute line replaces base
        try:
            key = p.relative_to(base).as_posix()
        except ValueError:
            key = p.name
        out.append(_explicit(p, key))
    return out


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[Input]:
    """Expand command-line inputs into files with their output keys.

    * a directory ROOT: every file below it whose extension (any case) is in
      :data:`w2v.pipeline.audio.AUDIO_EXTENSIONS`, keyed by its path relative to ROOT;
      hidden files and directories (name starting with ``.``, such as macOS
      ``._x.wav`` resource forks) are left out;
    * a ``.txt`` / ``.lst`` file: a list of paths, one per line, relative ones
      resolved against the list's directory, blank lines and ``#`` comments
      ignored; keyed by the path relative to the list's directory when inside
      it, else by file name;
    * any other path: an audio file keyed by its file name (an unknown
      extension or a missing file becomes that input's error).

    The same file reached twice with the same key counts once. Raises
    :class:`UsageError` when no input is found or two files would write the
    same output.
    """
    found: list[Input] = []
    for given in inputs:
        p = _abspath(given)
        if p.is_dir():
            files = sorted(
                f
                for f in p.rglob("*")
                if f.suffix.lower() in audio.AUDIO_EXTENSIONS
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and f.is_file()
            )
            found.extend(Input(f, f.relative_to(p).as_posix()) for f in files)
        elif p.suffix.lower() in LIST_EXTENSIONS:
            found.extend(_read_list(p))
        else:
            found.append(_explicit(p, p.name))
    unique: dict[tuple[Path, str], Input] = {}
    for item in found:
        unique.setdefault((item.path, item.key), item)
    items = list(unique.values())
    if not items:
        raise UsageError(
            "no inputs: give audio files, directories holding audio files "
            f"({', '.join(sorted(audio.AUDIO_EXTENSIONS))}), or a .txt/.lst list of paths"
        )
    by_key: dict[str, list[Path]] = {}
    for item in items:
        by_key.setdefault(item.key, []).append(item.path)
    clashes = {k: v for k, v in by_key.items() if len(v) > 1}
    if clashes:
        lines = [f"  {k}: " + ", ".join(str(p) for p in v) for k, v in sorted(clashes.items())]
        shown = lines[:20] + ([f"  ... and {len(lines) - 20} more"] if len(lines) > 20 else [])
        raise UsageError(
            f"{len(clashes)} output name(s) would be written by more than one input; "
            "give the files under a common directory or in a list file so that their "
            "relative paths tell them apart:\n" + "\n".join(shown)
        )
    return items


# Model ---------------------------------------------------------------------------


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    model: Any,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    compile: bool = False,
) -> torch.nn.Module:
    """A model object as is (moved/cast when asked), or anything :func:`w2v.load` accepts;
    ``compile`` applies :meth:`w2v.nn.Model.compile`.

    Raises :class:`UsageError` when a model path or hub id cannot be loaded.
    """
    if isinstance(dtype, str):
        try:
            dtype = parse_dtype(dtype)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if device is not None:
        device = check_device(device)
    if isinstance(model, torch.nn.Module):
        if device is not None or dtype is not None:
            model = to(model, device=device, dtype=dtype)
        model.eval()
        return model.compile() if compile else model
    try:
        return load(model, device=device or default_device(), dtype=dtype, compile=compile)
    except (ValueError, OSError, ImportError) as e:
        raise UsageError(f"cannot load model {os.fspath(model)!r}: {one_line(e)}") from None


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; :class:`UsageError` when it is malformed or absent."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UsageError(f"invalid device {str(device)!r}: {one_line(e)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {str(device)!r} asked for, but torch sees no CUDA GPU")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {str(device)!r} asked for, but MPS is not available")
    return dev


def smoke_test(model: torch.nn.Module, layers: list[int], pool: str) -> None:
    """Run the model once on silence, so that a device or dtype it cannot run on is one
    usage error up front rather than the same error for every input."""
    silence = np.zeros(int(model.config.receptive_field), np.float32)
    try:
        _run_batch(model, [silence], layers, pool)
    except Exception as e:  # noqa: BLE001
        device, dtype = _input_dtype(model)
        raise UsageError(
            f"the model cannot run on {device} in {str(dtype).removeprefix('torch.')}: "
            f"{one_line(e)}"
        ) from None


def _input_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first parameter (the first conv): the waveform's."""
    p = next(model.parameters())
    return p.device, p.dtype


@contextlib.contextmanager
def _thread_budget(model: torch.nn.Module, workers: int | None) -> Iterator[int]:
    """Pick the decoding threads; torch's own thread count is left as it is.

    On the CPU, decoding (soundfile + soxr + normalising) runs ~1200 audio s/s
    on one core against ~2.5 for wav2vec2-base, so reserving cores for it would
    leave them idle. Measured end to end on an idle 2-core machine (6 files,
    101 s of audio, base): torch on 2 threads with 1 decoder took 23-29 s,
    torch lowered to 1 thread took 42-44 s. With another process keeping one
    core busy the order flips, by ~10% (74 s vs 67 s for 169 s of audio); set
    ``torch.set_num_threads`` or ``OMP_NUM_THREADS`` for such machines.
    """
    device = _input_dtype(model)[0]
    yield workers or default_workers(device.type)


# The per-batch model call ----------------------------------------------------------


def _run_batch(
    model: torch.nn.Module, waves: Sequence[np.ndarray], layers: list[int], pool: str
) -> list[tuple[np.ndarray, int]]:
    """One padded batch through the model; per item ``(array, frames)``.

    ``waves``: 16 kHz mono float32 ``(samples,)`` each, already checked and
    normalised. The array is ``(layers, dim)`` pooled or ``(layers, frames, dim)``.
    """
    device, dtype = _input_dtype(model)
    x, lengths = pad(waves)  # (B, S), (B,)
    x = x.to(device=device, dtype=dtype, non_blocking=True)
    lengths = lengths.to(device)
    with torch.inference_mode():
        states, frame_lengths = model.hidden_states(x, lengths, layers=layers)
        arrays = pool_layers(states, frame_lengths, pool)
    return list(zip(arrays, frame_lengths.tolist(), strict=True))


def _run_long(
    model: torch.nn.Module,
    wave: np.ndarray,
    layers: list[int],
    pool: str,
    chunk_seconds: float,
    context_seconds: float,
) -> tuple[np.ndarray, int]:
    """One long input in windows with context (:mod:`w2v.longform`), pooled as it streams."""
    device, dtype = _input_dtype(model)
    x = torch.from_numpy(wave).to(device=device, dtype=dtype)
    acc = RunningPool(pool)
    with torch.inference_mode():
        for _, states in iter_chunks(
            model, x, layers, chunk_seconds=chunk_seconds, context_seconds=context_seconds
        ):
            acc.update(states)
    return acc.result(), acc.frames


def _run_items(
    model: torch.nn.Module, waves: Sequence[np.ndarray], layers: list[int], pool: str
) -> list[tuple[np.ndarray, int] | Exception]:
    """:func:`_run_batch`, falling back to one item at a time when the batch fails.

    A failure that belongs to one item (or an out-of-memory batch) then costs
    only that item.
    """
    if not waves:
        return []
    try:
        return list(_run_batch(model, waves, layers, pool))
    except Exception as e:  # noqa: BLE001 - retried item by item below
        if len(waves) == 1:
            return [_model_error(e)]
        _free_memory()
    out: list[tuple[np.ndarray, int] | Exception] = []
    for w in waves:
        try:
            out.extend(_run_batch(model, [w], layers, pool))
        except Exception as e:  # noqa: BLE001
            _free_memory()
            out.append(_model_error(e))
    return out


def _model_error(e: Exception) -> Exception:
    if isinstance(e, torch.OutOfMemoryError):
        return RuntimeError(
            "out of memory running the model on this input; lower --batch-seconds "
            "or use a smaller --dtype"
        )
    return RuntimeError(f"model failed: {one_line(e)}")


def _free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# The shared stream -----------------------------------------------------------------


@dataclass
class _Clock:
    """Where a stream's time went: in the model (batches and windows, pooling included)
    and waiting for decoded audio (the model idle because read-ahead fell behind)."""

    model: float = 0.0
    waiting: float = 0.0


@dataclass
class _Source:
    """One thing to embed: a file or an in-memory mono waveform at ``rate``."""

    path: Path | None = None
    wave: np.ndarray | None = None
    rate: int | None = None
    samples_16k: int = 0  # estimated, for planning


def _stream(
    model: torch.nn.Module,
    sources: Sequence[_Source],
    layers: list[int],
    pool: str,
    *,
    batch_seconds: float | None,
    channel: int | None,
    workers: int | None,
    chunking: ChunkPolicy,
    notice: Callable[[str], None],
    clock: _Clock | None = None,
) -> Iterator[tuple[int, tuple[np.ndarray, int] | Exception, AudioInfo | None]]:
    """Yield ``(source index, (array, frames) or the exception, decoded AudioInfo or None)``.

    Results come batch by batch (longest batch first), not in input order.
    Inputs that ``chunking`` says to chunk run alone, window by window.
    ``clock`` (optional) accumulates the model's time and the time spent waiting
    for decoded audio.
    """
    clock = clock or _Clock()
    normalize_input = bool(getattr(model, "normalize", False))
    min_samples = int(model.config.receptive_field)

    def load(i: int) -> tuple[np.ndarray, AudioInfo]:
        s = sources[i]
        if s.path is not None:
            return audio.load(
                s.path, channel=channel, normalize_input=normalize_input, min_samples=min_samples
            )
        wave = audio.prepare(
            s.wave, s.rate, normalize_input=normalize_input, min_samples=min_samples
        )
        return wave, AudioInfo(sample_rate=int(s.rate), channels=1, frames=int(s.wave.shape[0]))

    if batch_seconds is None:
        batch_seconds = default_batch_seconds(_input_dtype(model)[0])
    plan = plan_batches([s.samples_16k for s in sources], batch_seconds)
    decoded = prefetch(plan, load, workers=workers)
    try:
        for batch in plan:
            start = time.perf_counter()
            loaded = next(decoded)
            clock.waiting += time.perf_counter() - start
            good = []
            for i, r in zip(batch, loaded, strict=True):
                if isinstance(r, Exception):
                    yield i, r, None
                    continue
                chunk = chunking.chunk_for(r[0].shape[0])
                if chunk is None:
                    good.append((i, r))
                    continue
                what = sources[i].path if sources[i].path is not None else f"input {i}"
                notice(
                    f"{what}: {r[0].shape[0] / SAMPLE_RATE:.1f} s long; extracting in {chunk:g} s "
                    f"windows with {chunking.context_seconds:g} s context each side"
                )
                start = time.perf_counter()
                try:
                    res = _run_long(model, r[0], layers, pool, chunk, chunking.context_seconds)
                except Exception as e:  # noqa: BLE001 - reported per item
                    _free_memory()
                    res = _model_error(e)
                clock.model += time.perf_counter() - start
                yield i, res, r[1]
            start = time.perf_counter()
            results = _run_items(model, [wave for _, (wave, _) in good], layers, pool)
            clock.model += time.perf_counter() - start
            allocator.after_batch()  # bounded mode: give the batch's freed memory back
            for (i, (_, info)), res in zip(good, results, strict=True):
                yield i, res, info
    finally:
        decoded.close()  # cancels read-ahead not yet started when the caller stops early


# Python API ----------------------------------------------------------------------


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _sources(inputs: Any, sample_rate: int | None) -> list[_Source]:
    def array_source(x: Any, rate: int | None, where: str) -> list[_Source]:
        if rate is None:
            raise ValueError(f"{where}: an in-memory waveform needs its rate: pass sample_rate=")
        a = _as_array(x)
        if a.ndim == 1:
            rows = [a]
        elif a.ndim == 2:
            rows = list(a)  # (batch, samples): one waveform per row
        else:
            raise ValueError(
                f"{where}: expected (samples,) or (batch, samples), got shape {a.shape}"
            )
        return [
            _Source(wave=r, rate=int(rate), samples_16k=round(r.shape[0] * SAMPLE_RATE / int(rate)))
            for r in rows
        ]

    def one(x: Any, where: str) -> list[_Source]:
        if isinstance(x, (str, os.PathLike)):
            return [_Source(path=_abspath(x))]
        if isinstance(x, tuple) and len(x) == 2 and np.isscalar(x[1]):
            return array_source(x[0], int(x[1]), where)
        if isinstance(x, (np.ndarray, torch.Tensor)):
            return array_source(x, sample_rate, where)
        raise TypeError(
            f"{where}: expected a path, an array with sample_rate=, or an (array, rate) tuple; "
            f"got {type(x).__name__}"
        )

    if isinstance(inputs, (list, tuple)) and not (
        isinstance(inputs, tuple) and len(inputs) == 2 and np.isscalar(inputs[1])
    ):
        out = []
        for k, x in enumerate(inputs):
            out.extend(one(x, f"input {k}"))
        return out
    return one(inputs, "input")


def embed(
    inputs: Any,
    model: Any,
    *,
    layers: LayerSpec = "all",
    pool: str = "mean",
    sample_rate: int | None = None,
    channel: int | None = None,
    batch_seconds: float | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    workers: int | None = None,
    chunk_seconds: float | None = None,
    context_seconds: float = DEFAULT_CONTEXT_SECONDS,
    compile: bool = False,
) -> list[np.ndarray]:
    """Embed audio files or in-memory waveforms; no files written.

    inputs: a path, a waveform (numpy array or torch tensor) with
    ``sample_rate=``, an ``(array, rate)`` tuple, or a list of any of these. A
    1-D array is one mono waveform; a 2-D array is a batch of waveforms
    ``(batch, samples)``, one item per row. Files go through
    :func:`w2v.pipeline.audio.load` (mono mix-down, or ``channel``; soxr to 16 kHz).
    model: a loaded model, or anything :func:`w2v.load` accepts (moved to
    ``device`` / cast to ``dtype`` when given).
    layers: ``"all"``, an index, a list of indices, or a spec string
    (``"0,6,12"``, ``"4-8"``, ``"-1"``).
    pool: ``"mean"``, ``"stats"`` (mean and population std concatenated) or
    ``"none"`` (frames).
    batch_seconds: padded audio seconds per batch (longest item × items);
    default 30 on a CPU, 160 on a GPU.
    chunk_seconds, context_seconds: long inputs are computed in windows of
    ``chunk_seconds`` with ``context_seconds`` of context on each side (see
    :mod:`w2v.longform`); None (default) does so only for inputs over
    :data:`~w2v.longform.AUTO_CHUNK_SECONDS`, with a warning; 0 never chunks.
    compile: run the model through :func:`torch.compile` (faster after a slow
    first call; worth it for many inputs).

    Returns one float32 array per item, in input order: ``(layers, dim)``
    pooled, ``(layers, 2 * dim)`` for ``stats``, ``(layers, frames, dim)`` for
    ``"none"``. Raises :class:`w2v.pipeline.audio.AudioError` naming the first bad item.
    """
    check_pool(pool)
    chunking = ChunkPolicy(chunk_seconds, context_seconds)
    sources = _sources(inputs, sample_rate)
    if not sources:
        return []
    model = load_model(model, device=device, dtype=dtype, compile=compile)
    layer_idx = resolve_layers(layers, model.config.num_layers)
    files = [s for s in sources if s.path is not None]
    for s, info in zip(
        files, parallel_map(audio.probe, [s.path for s in files], _PROBE_WORKERS), strict=True
    ):
        # a header that cannot be read plans as length 0; decoding then reports the problem
        s.samples_16k = 0 if isinstance(info, Exception) else info.samples_16k
    results: list[np.ndarray | None] = [None] * len(sources)
    with _thread_budget(model, workers) as workers:
        stream = _stream(
            model,
            sources,
            layer_idx,
            pool,
            batch_seconds=batch_seconds,
            channel=channel,
            workers=workers,
            chunking=chunking,
            notice=lambda text: warnings.warn(text, stacklevel=3),
        )
        try:
            for i, res, _ in stream:
                if isinstance(res, Exception):
                    what = str(sources[i].path) if sources[i].path is not None else f"input {i}"
                    raise AudioError(f"{what}: {one_line(res)}") from None
                results[i] = res[0]
        finally:
            stream.close()
    return results  # type: ignore[return-value]


# Files to files ------------------------------------------------------------------


class Progress:
    """Receives progress from :func:`embed_files`; the default does nothing."""

    def start(self, files: int, seconds: float, skipped: int) -> None:
        """``files`` to process holding ``seconds`` of audio; ``skipped`` already done."""

    def item(self, entry: dict[str, Any]) -> None:
        """One input finished (``entry`` is its manifest entry, ok or error)."""

    def notice(self, text: str) -> None:
        """A one-line remark about an input (for example that it is chunked)."""

    def close(self) -> None:
        """The run ended (normally or not)."""


@dataclass
class Summary:
    """What a run did. ``audio_seconds`` counts the inputs embedded in this run."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    audio_seconds: float = 0.0
    elapsed: float = 0.0
    model_seconds: float = 0.0  # running the model (pooling included)
    waiting_seconds: float = 0.0  # the model idle, waiting for decoded audio
    out_dir: Path | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self) -> str:
        return (
            f"{self.ok} ok, {self.failed} failed, {self.skipped} skipped; "
            f"{self.audio_seconds:.1f} s of audio in {self.elapsed:.1f} s "
            f"(model {self.model_seconds:.1f} s, waiting for audio {self.waiting_seconds:.1f} s)"
        )


def embed_files(
    inputs: Sequence[str | os.PathLike],
    model: Any,
    out_dir: str | os.PathLike,
    *,
    layers: LayerSpec = "all",
    pool: str = "mean",
    fmt: str = "npy",
    batch_seconds: float | None = None,
    device: str | torch.device | None = None,
    dtype: str | None = None,
    channel: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    chunk_seconds: float | None = None,
    context_seconds: float = DEFAULT_CONTEXT_SECONDS,
    compile: bool = False,
) -> Summary:
    """Embed audio files into ``out_dir``: the work behind ``w2v embed``.

    Writes one output per input and ``out_dir/manifest.jsonl`` (layout in
    :mod:`w2v.pipeline.outputs`). Inputs done by an earlier run with the same settings
    are skipped unless ``overwrite``. A bad input becomes an ``error`` entry and
    the run goes on. Raises :class:`UsageError` for bad arguments, no inputs,
    colliding output names, or a model that cannot be loaded.
    """
    start = time.perf_counter()
    progress = progress or Progress()
    check_pool(pool)
    check_format(fmt)
    if batch_seconds is not None and batch_seconds <= 0:
        raise UsageError(f"--batch-seconds must be positive, got {batch_seconds}")
    try:
        chunking = ChunkPolicy(chunk_seconds, context_seconds)
    except ValueError as e:
        raise UsageError(str(e)) from None
    parse_layers(layers)  # syntax errors before loading anything
    items = collect_inputs(inputs)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output directory {out}: {one_line(e)}") from None
    if not out.is_dir():
        raise UsageError(f"output {out} is not a directory")
    loaded = load_model(model, device=device, dtype=dtype, compile=compile)
    layer_idx = resolve_layers(layers, loaded.config.num_layers)
    smoke_test(loaded, layer_idx, pool)
    settings = {
        "layers": layer_idx,
        "pool": pool,
        "format": fmt,
        "model": _model_name(model),
        "dtype": str(_input_dtype(loaded)[1]).removeprefix("torch."),
        "channel": channel,
        "chunk_seconds": chunk_seconds,
        "context_seconds": context_seconds,
    }

    summary = Summary(out_dir=out)
    done = {} if overwrite else read_manifest(out)
    todo = [
        it
        for it in items
        if not is_done(done.get(str(it.path)), settings, out, output_name(it.key, fmt))
    ]
    summary.skipped = len(items) - len(todo)
    remove_stale_temporaries({(out / output_name(it.key, fmt)).parent for it in todo})

    try:
        writer = ManifestWriter(out)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {one_line(e)}") from None
    try:
        infos = parallel_map(_probe, todo, _PROBE_WORKERS)  # the model is idle meanwhile

        def record(item: Input, info: AudioInfo | None, result: Any) -> None:
            entry: dict[str, Any] = {
                "path": str(item.path),
                "status": "ok",
                "error": None,
                "output": None,
                "duration": round(info.duration, 6) if info else None,
                "sample_rate": info.sample_rate if info else None,
                "channels": info.channels if info else None,
                "frames": None,
                **settings,
            }
            if not isinstance(result, Exception):
                array, frames = result
                name = output_name(item.key, fmt)
                try:
                    write_output(out / name, array, layer_idx, pool, fmt)
                    entry.update(output=name, frames=int(frames))
                except OSError as e:
                    result = AudioError(f"cannot write {out / name}: {one_line(e)}")
            if isinstance(result, Exception):
                entry.update(status="error", error=f"{item.path}: {one_line(result)}")
                summary.failed += 1
                summary.errors.append((str(item.path), entry["error"]))
            else:
                summary.ok += 1
                summary.audio_seconds += info.duration if info else 0.0
            writer.append(entry)
            progress.item(entry)

        runnable: list[tuple[Input, AudioInfo]] = []
        pending_errors = []
        for it, info in zip(todo, infos, strict=True):
            if isinstance(info, Exception):
                pending_errors.append((it, info))
            else:
                runnable.append((it, info))
        progress.start(len(todo), sum(info.duration for _, info in runnable), summary.skipped)
        for it, err in pending_errors:
            record(it, None, err)

        sources = [_Source(path=it.path, samples_16k=info.samples_16k) for it, info in runnable]
        clock = _Clock()
        with _thread_budget(loaded, workers) as n_workers:
            stream = _stream(
                loaded,
                sources,
                layer_idx,
                pool,
                batch_seconds=batch_seconds,
                channel=channel,
                workers=n_workers,
                chunking=chunking,
                notice=progress.notice,
                clock=clock,
            )
            try:
                for i, res, info in stream:
                    it, header = runnable[i]
                    record(it, info or header, res)
            finally:
                stream.close()
                summary.model_seconds, summary.waiting_seconds = clock.model, clock.waiting
    finally:
        progress.close()
        writer.close(compact=True)
    summary.elapsed = time.perf_counter() - start
    return summary


def _probe(item: Input) -> AudioInfo:
    if item.error:
        raise AudioError(item.error)
    return audio.probe(item.path)  # a zero-length file is reported when decoded


def _model_name(model: Any) -> str:
    if isinstance(model, torch.nn.Module):
        return str(getattr(model, "name_or_path", None) or type(model).__name__)
    s = os.fspath(model)
    return str(_abspath(s)) if os.path.exists(s) else s
