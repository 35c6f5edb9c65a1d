"""``w2v embed``: audio files in, one output file per input and a manifest out, resumable.

Nothing here prints: :func:`embed_files` reports through a :class:`Progress`
object and returns a :class:`Summary`; the CLI turns those into a progress bar
and a summary line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from w2v.atomic import remove_stale_temporaries
from w2v.errors import AudioError, UsageError, escaped, one_line, shown
from w2v.loading import check_device, load_model
from w2v.longform import DEFAULT_CONTEXT_SECONDS
from w2v.pipeline import audio
from w2v.pipeline.audio import AudioInfo
from w2v.pipeline.batching import PROBE_WORKERS, parallel_map
from w2v.pipeline.head import head_spec
from w2v.pipeline.inputs import Input, abspath, collect_inputs
from w2v.pipeline.layers import LayerSpec, parse_layers, resolve_layers
from w2v.pipeline.options import check_batch_seconds, check_channel, check_workers, chunk_policy
from w2v.pipeline.outputs import (
    ManifestWriter,
    OutputLock,
    check_format,
    check_head_format,
    is_done,
    is_out_of_space,
    make_settings,
    new_entry,
    output_name,
    read_manifest,
    remove_outputs,
    settings_mismatch,
    write_manifest,
    write_output,
)
from w2v.pipeline.pooling import check_pool
from w2v.pipeline.stream import Clock, Result, Source, decode_workers, placement, smoke_test, stream


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
    head: bool = False,
    strict: bool = False,
) -> Summary:
    """Embed audio files into ``out_dir``: the work behind ``w2v embed``.

    Writes one output per input and ``out_dir/manifest.jsonl`` (layout in
    :mod:`w2v.pipeline.outputs`). Inputs done by an earlier run with the same settings
    (and computed in the windows this run would use) are skipped unless ``overwrite``.
    A bad input becomes an ``error`` entry and the run goes on.

    ``head``: also write the model's head outputs beside the layers (safetensors only;
    see :mod:`w2v.pipeline.head`). ``strict``: refuse a checkpoint with weights outside
    the backbone that w2v does not run (see :func:`w2v.load`).

    Raises :class:`UsageError` for bad arguments, no inputs, colliding output names, a
    model that cannot be loaded (or ``head`` and it has no head w2v runs), another run
    writing to ``out_dir``, an ``out_dir`` holding
    results of other settings (unless ``overwrite``: those entries and their outputs
    are removed first), and a full disk (the run stops; what was written is kept, and
    a rerun finishes the rest).
    """
    start = time.perf_counter()
    progress = progress or Progress()
    check_pool(pool)
    check_format(fmt)
    if head:
        check_head_format(fmt)
    batch_seconds = check_batch_seconds(batch_seconds)
    chunking = chunk_policy(chunk_seconds, context_seconds)
    workers, channel = check_workers(workers), check_channel(channel)
    parse_layers(layers)  # syntax errors before loading anything
    if device is not None:
        check_device(device)  # before DIR is made
    items = collect_inputs(inputs)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise UsageError(
            f"cannot create output directory {shown(str(out))}: {one_line(e)}"
        ) from None
    if not out.is_dir():
        raise UsageError(f"output {shown(str(out))} is not a directory")
    with OutputLock(out):  # before anything is read or written there
        loaded = load_model(model, device=device, dtype=dtype, compile=compile, strict=strict)
        spec = head_spec(loaded) if head else None
        layer_idx = resolve_layers(layers, loaded.config.num_layers)
        smoke_test(loaded, layer_idx, pool)
        settings = make_settings(
            layers=layer_idx,
            pool=pool,
            format=fmt,
            model=_model_name(model),
            dtype=str(placement(loaded)[1]).removeprefix("torch."),
            channel=channel,
            head=None if spec is None else spec.kind,
            labels=None if spec is None else spec.labels,
        )

        summary = Summary(out_dir=out)
        done = _previous_entries(out, settings, overwrite, progress)
        todo = [
            it
            for it in items
            if not is_done(
                done.get(str(it.path)), settings, out, output_name(it.key, fmt), chunking
            )
        ]
        summary.skipped = len(items) - len(todo)
        remove_stale_temporaries({(out / output_name(it.key, fmt)).parent for it in todo})

        try:
            writer = ManifestWriter(out)
        except OSError as e:
            raise UsageError(f"cannot write {shown(str(out))}: {one_line(e)}") from None
        clock = Clock()
        try:
            infos = parallel_map(_probe, todo, PROBE_WORKERS)  # the model is idle meanwhile

            def record(item: Input, info: AudioInfo | None, result: Result | Exception) -> None:
                entry = new_entry(
                    str(item.path),
                    settings,
                    duration=round(info.duration, 6) if info else None,
                    sample_rate=info.sample_rate if info else None,
                    channels=info.channels if info else None,
                )
                if not isinstance(result, Exception):
                    heads = result.head  # computed in the batch that computed the layers
                    name = output_name(item.key, fmt)
                    outputs = None if heads is None else (spec.kind, heads.outputs)
                    try:
                        write_output(out / name, result.array, layer_idx, pool, fmt, outputs)
                    except OSError as e:
                        if is_out_of_space(e):
                            raise _stopped(out / name, e, summary) from None
                        result = AudioError(f"cannot write {shown(str(out / name))}: {one_line(e)}")
                    else:
                        chunk, context = result.window or (None, None)
                        entry.update(
                            output=name,
                            frames=int(result.frames),
                            chunk_seconds=chunk,
                            context_seconds=context,
                            text=None if heads is None else heads.text,
                        )
                if isinstance(result, Exception):
                    # the path escaped as every message does: the CLI prints this line
                    entry.update(
                        status="error", error=f"{escaped(str(item.path))}: {one_line(result)}"
                    )
                try:
                    writer.append(entry)
                except OSError as e:
                    raise _stopped(writer.path, e, summary) from None
                if isinstance(result, Exception):
                    summary.failed += 1
                    summary.errors.append((str(item.path), entry["error"]))
                else:
                    summary.ok += 1
                    summary.audio_seconds += info.duration if info else 0.0
                progress.item(entry)

            runnable: list[tuple[Input, AudioInfo]] = []
            unreadable: list[tuple[Input, Exception]] = []
            for it, info in zip(todo, infos, strict=True):
                if isinstance(info, Exception):
                    unreadable.append((it, info))
                else:
                    runnable.append((it, info))
            progress.start(len(todo), sum(info.duration for _, info in runnable), summary.skipped)
            for it, err in unreadable:
                record(it, None, err)

            sources = [Source(path=it.path, samples_16k=info.samples_16k) for it, info in runnable]
            results = stream(
                loaded,
                sources,
                layer_idx,
                pool,
                batch_seconds=batch_seconds,
                channel=channel,
                workers=decode_workers(loaded, workers),
                chunking=chunking,
                notice=progress.notice,
                clock=clock,
                head=spec,
            )
            try:
                for i, res, info in results:
                    it, header = runnable[i]
                    record(it, info or header, res)
            finally:
                results.close()
                summary.model_seconds, summary.waiting_seconds = clock.model, clock.waiting
        finally:
            progress.close()
            writer.close(compact=False)
        try:
            write_manifest(out, read_manifest(out))  # one line per input
        except OSError as e:  # the appended manifest is whole; only its tidying failed
            progress.notice(f"could not compact {shown(str(writer.path))}: {one_line(e)}")
        summary.elapsed = time.perf_counter() - start
        return summary


def _previous_entries(
    out: Path, settings: dict[str, Any], overwrite: bool, progress: Progress
) -> dict[str, dict[str, Any]]:
    """The manifest's entries that this run may reuse. Entries of other settings refuse
    the run, or with ``overwrite`` are removed with their outputs; ``overwrite`` reuses none."""
    entries = read_manifest(out, notice=progress.notice)
    mismatch = settings_mismatch(entries, settings)
    if mismatch and not overwrite:
        raise UsageError(
            f"{shown(str(out))} holds results of other settings ({'; '.join(mismatch)}); give another "
            "--out, or --overwrite to replace them all"
        )
    if mismatch:
        try:
            remove_outputs(out, entries)
            write_manifest(out, {})
        except OSError as e:
            raise UsageError(
                f"cannot replace the results in {shown(str(out))}: {one_line(e)}"
            ) from None
        progress.notice(
            f"removed {len(entries)} result(s) of other settings from {shown(str(out))}"
        )
    return {} if overwrite else entries


def _stopped(path: Path, e: OSError, summary: Summary) -> UsageError:
    """The error that ends a run when ``path`` cannot be written (a full disk)."""
    return UsageError(
        f"cannot write {shown(str(path))}: {one_line(e)}; the run stopped after {summary.ok + summary.failed} "
        "input(s), which are kept: free space and run again to finish"
    )


def _probe(item: Input) -> AudioInfo:
    if item.error:
        raise AudioError(item.error)
    return audio.probe(item.path)  # a zero-length file is reported when decoded


def _model_name(model: Any) -> str:
    """The manifest's ``model``: a model object's name, an existing path made absolute,
    else the string as given (a hub id)."""
    if isinstance(model, torch.nn.Module):
        return str(getattr(model, "name_or_path", None) or type(model).__name__)
    s = os.fspath(model)
    return str(abspath(s)) if os.path.exists(s) else s
