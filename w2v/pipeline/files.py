"""``w2v embed``: audio files in, one output file per input and a manifest out, resumable.

Nothing here prints: :func:`embed_files` reports through a :class:`Progress`
object and returns a :class:`Summary`; the CLI turns those into a progress bar
and a summary line.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from w2v.atomic import TMP_SUFFIX, remove_stale_temporaries
from w2v.errors import AudioError, UsageError, escaped, one_line, shown
from w2v.loading import check_device, load_model
from w2v.longform import DEFAULT_CONTEXT_SECONDS
from w2v.onnx import backend_name
from w2v.pipeline import audio
from w2v.pipeline.audio import AudioInfo
from w2v.pipeline.batching import (
    PROBE_WORKERS,
    default_batch_seconds,
    parallel_map,
    plan_batches,
)
from w2v.pipeline.head import head_spec
from w2v.pipeline.inputs import Input, abspath, collect_inputs
from w2v.pipeline.layers import LayerSpec, parse_layers, resolve_layers
from w2v.pipeline.merge import (
    merge_shards,
    shard_journal_name,
    shard_lock_name,
    shard_manifest_name,
    shard_manifests,
)
from w2v.pipeline.options import check_batch_seconds, check_channel, check_workers, chunk_policy
from w2v.pipeline.outputs import (
    MANIFEST,
    ManifestWriter,
    OutputLock,
    check_dtype_out,
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
from w2v.pipeline.parquet import PARQUET_DIR, PART_BYTES, ParquetWriter, drop_partial_parts
from w2v.pipeline.parquet import check_available as check_parquet
from w2v.pipeline.pooling import check_pool
from w2v.pipeline.ray_data import check_engine, ray_stream
from w2v.pipeline.shards import (
    Shard,
    after_all_ranks,
    assign_batches,
    canonical_order,
    pick_device,
    resolve_shard,
    shard_of_unreadable,
)
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
    shard: Shard = field(default_factory=Shard)  # which part of the run this was, and why
    merged: tuple[Path, int, int] | None = None  # rank 0 under torchrun: merge_shards' result

    @property
    def manifest(self) -> Path:
        """The manifest this run wrote: the run's, or its shard's."""
        name = shard_manifest_name(self.shard) if self.shard.sharded else MANIFEST
        return (self.out_dir or Path()) / name

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self) -> str:
        where = f"{self.shard.describe()}: " if self.shard.sharded else ""
        return where + (
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
    backend: str = "torch",
    dtype_out: str = "float32",
    num_shards: int | None = None,
    shard_index: int | None = None,
    engine: str = "local",
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    part_bytes: int = PART_BYTES,
    env: Mapping[str, str] | None = None,
) -> Summary:
    """Embed audio files into ``out_dir``: the work behind ``w2v embed``.

    Writes one output per input (``fmt`` ``"npy"`` or ``"safetensors"``) or rows of
    parquet files (``"parquet"``, see :mod:`w2v.pipeline.parquet`), stored as ``dtype_out``,
    and ``out_dir/manifest.jsonl`` (layout in :mod:`w2v.pipeline.outputs`). Inputs done by an
    earlier run with the same settings (and computed in the windows this run would use) are
    skipped unless ``overwrite``. A bad input becomes an ``error`` entry and the run goes on.

    ``head``: also write the model's head outputs beside the layers (safetensors only;
    see :mod:`w2v.pipeline.head`). ``strict``: refuse a checkpoint with weights outside
    the backbone that w2v does not run (see :func:`w2v.load`). ``backend``: ``"torch"`` or
    ``"onnxruntime"`` (:func:`w2v.load`; recorded in the manifest's settings).

    Batches: the whole run's plan (:mod:`w2v.pipeline.shards`) is made from every readable
    input's header, in key order, done or not, and a batch with any input left to do runs
    whole, so each output is the same bytes however the run was split or resumed (at the
    same torch thread count). Shards: ``num_shards`` / ``shard_index``, else torchrun's or
    SLURM's variables in ``env`` (default ``os.environ``; :func:`~w2v.pipeline.shards.resolve_shard`)
    pick whole batches of that plan, and the shard writes its own manifest
    (:func:`~w2v.pipeline.merge.shard_manifest_name`); under torchrun every rank waits for
    the others and rank 0 merges the shard manifests (:func:`~w2v.pipeline.merge.merge_shards`).
    ``engine="ray"`` runs the batches on ``actors`` Ray actors (``gpus_per_actor`` GPUs
    each; :mod:`w2v.pipeline.ray_data`) and writes here as a local run does.

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
        if backend != "torch":
            raise UsageError("--head runs on the torch backend only")
    if fmt == "parquet":
        check_parquet()
    dtype_out = check_dtype_out(dtype_out)
    batch_seconds = check_batch_seconds(batch_seconds)
    chunking = chunk_policy(chunk_seconds, context_seconds)
    workers, channel = check_workers(workers), check_channel(channel)
    shard = resolve_shard(num_shards, shard_index, env)
    check_engine(engine, actors, gpus_per_actor, shard, head)
    parse_layers(layers)  # syntax errors before loading anything
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = pick_device(None if device is None else str(device), shard, cuda)
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
    if shard.sharded:
        progress.notice(shard.describe())
    summary = Summary(out_dir=out, shard=shard)
    # before anything is read or written there; shards share DIR, each holding its own lock
    with OutputLock(out, shared=shard.sharded), contextlib.ExitStack() as locks:
        if shard.sharded:
            locks.enter_context(OutputLock(out, shard_lock_name(shard)))
        loaded = load_model(
            model, device=device, dtype=dtype, compile=compile, strict=strict, backend=backend
        )
        spec = head_spec(loaded) if head else None
        layer_idx = resolve_layers(layers, loaded.config.num_layers)
        smoke_test(loaded, layer_idx, pool)
        settings = make_settings(
            layers=layer_idx,
            pool=pool,
            format=fmt,
            model=_model_name(model),
            dtype=str(placement(loaded)[1]).removeprefix("torch."),
            backend=backend_name(loaded),
            dtype_out=dtype_out,
            channel=channel,
            head=None if spec is None else spec.kind,
            labels=None if spec is None else spec.labels,
        )
        # a shard appends to its journal and writes its manifest when it is done, so a
        # shard manifest is always complete (w2v merge refuses a journal left behind)
        manifest = shard_manifest_name(shard) if shard.sharded else MANIFEST
        journal = shard_journal_name(shard) if shard.sharded else MANIFEST
        done = _previous_entries(out, settings, overwrite, progress, manifest, journal)
        named = [e.get("output") for e in done.values()]  # part names never to use again

        def expected_output(item: Input) -> str | None:
            return None if fmt == "parquet" else output_name(item.key, fmt)

        def is_finished(item: Input) -> bool:
            entry = done.get(str(item.path))
            return is_done(entry, settings, out, expected_output(item), chunking)

        # the plan of the whole run, from every input's header, in key order
        infos = parallel_map(_probe, items, PROBE_WORKERS)  # the model is idle meanwhile
        order = canonical_order([it.key for it in items])
        readable = [k for k in order if not isinstance(infos[k], Exception)]
        unreadable = [k for k in order if isinstance(infos[k], Exception)]
        lengths = [infos[k].samples_16k for k in readable]
        if batch_seconds is None:
            batch_seconds = default_batch_seconds(placement(loaded)[0])
        plan = plan_batches(lengths, batch_seconds)
        mine = assign_batches(plan, lengths, shard.count)[shard.index]
        batches = [plan[b] for b in mine]
        unreadable = [
            k
            for j, k in enumerate(unreadable)
            if shard_of_unreadable(j, shard.count) == shard.index
        ]
        own = [items[readable[i]] for b in batches for i in b] + [items[k] for k in unreadable]
        finished = {str(it.path) for it in own if is_finished(it)}
        if fmt == "parquet":  # parts not whole in the manifest, or holding an input to redo
            redo = {str(it.path) for it in own if str(it.path) not in finished}
            done = drop_partial_parts(out, f"{shard.name}." if shard.sharded else "", done, redo)
            finished = {str(it.path) for it in own if is_finished(it)}
        todo_readable = [str(items[k].path) not in finished for k in readable]
        batches = [b for b in batches if any(todo_readable[i] for i in b)]
        unreadable = [k for k in unreadable if str(items[k].path) not in finished]
        summary.skipped = len(finished)
        _remove_temporaries(
            out,
            [items[readable[i]] for b in batches for i in b if todo_readable[i]],
            fmt,
            shard,
        )

        try:
            writer = ManifestWriter(out, journal)
        except OSError as e:
            raise UsageError(f"cannot write {shown(str(out))}: {one_line(e)}") from None
        rows = (
            ParquetWriter(
                out,
                layer_idx,
                dtype_out,
                settings,
                f"{shard.name}." if shard.sharded else "",
                part_bytes,
                named,
            )
            if fmt == "parquet"
            else None
        )
        clock = Clock()
        try:

            def append(entry: dict[str, Any]) -> None:
                try:
                    writer.append(entry)
                except OSError as e:
                    raise _stopped(writer.path, e, summary) from None
                count(entry)

            def count(entry: dict[str, Any]) -> None:
                if entry["status"] == "ok":
                    summary.ok += 1
                    summary.audio_seconds += entry["duration"] or 0.0
                else:
                    summary.failed += 1
                    summary.errors.append((entry["path"], entry["error"]))
                progress.item(entry)

            def write_rows(entries: list[dict[str, Any]] | None) -> None:
                # a part's entries in one write: the manifest lists all of its rows or none
                entries = entries if entries is not None else rows.flush()
                try:
                    writer.append_many(entries)
                except OSError as e:
                    raise _stopped(writer.path, e, summary) from None
                for entry in entries:
                    count(entry)

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
                    chunk, context = result.window or (None, None)
                    entry.update(
                        frames=int(result.frames),
                        chunk_seconds=chunk,
                        context_seconds=context,
                        text=None if heads is None else heads.text,
                    )
                    if rows is not None:
                        try:
                            ready = rows.add(
                                item.key,
                                entry["duration"] or 0.0,
                                result.frames,
                                result.array,
                                entry,
                            )
                        except OSError as e:
                            raise _stopped(out / PARQUET_DIR, e, summary) from None
                        write_rows(ready)
                        return
                    name = output_name(item.key, fmt)
                    outputs = None if heads is None else (spec.kind, heads.outputs)
                    try:
                        write_output(
                            out / name, result.array, layer_idx, pool, fmt, outputs, dtype_out
                        )
                    except OSError as e:
                        if is_out_of_space(e):
                            raise _stopped(out / name, e, summary) from None
                        result = AudioError(f"cannot write {shown(str(out / name))}: {one_line(e)}")
                    else:
                        entry.update(output=name)
                if isinstance(result, Exception):
                    # the path escaped as every message does: the CLI prints this line
                    entry.update(
                        status="error", error=f"{escaped(str(item.path))}: {one_line(result)}"
                    )
                    entry.update(frames=None, chunk_seconds=None, context_seconds=None, text=None)
                append(entry)

            todo = [readable[i] for b in batches for i in b if todo_readable[i]]
            seconds = sum(infos[k].duration for k in todo)
            progress.start(len(todo) + len(unreadable), seconds, summary.skipped)
            for k in unreadable:
                record(items[k], None, infos[k])

            sources = [
                Source(path=items[k].path, samples_16k=infos[k].samples_16k) for k in readable
            ]
            run = dict(
                batch_seconds=batch_seconds,
                channel=channel,
                workers=decode_workers(loaded, workers),
                chunking=chunking,
                notice=progress.notice,
                clock=clock,
                head=spec,
                plan=batches,
            )
            if engine == "ray":
                load = dict(
                    model=model, dtype=dtype, compile=compile, strict=strict, backend=backend
                )
                results = ray_stream(load, sources, layer_idx, pool, actors, gpus_per_actor, **run)
            else:
                results = stream(loaded, sources, layer_idx, pool, **run)
            try:
                for i, res, info in results:
                    if todo_readable[i]:  # a finished input ran only to keep its batch whole
                        record(items[readable[i]], info or infos[readable[i]], res)
            finally:
                results.close()
                summary.model_seconds, summary.waiting_seconds = clock.model, clock.waiting
            if rows is not None:
                try:
                    write_rows(None)
                except OSError as e:
                    raise _stopped(out / PARQUET_DIR, e, summary) from None
        finally:
            progress.close()
            writer.close(compact=False)
        entries = read_manifest(out, name=journal)
        if shard.sharded:  # exactly this shard's inputs, those an earlier run did included
            entries = {**read_manifest(out, name=manifest), **entries}
            entries = {
                str(it.path): entries.get(str(it.path)) or done[str(it.path)]
                for it in own
                if str(it.path) in entries or str(it.path) in done
            }
        try:
            write_manifest(out, entries, manifest)  # one line per input
            if journal != manifest:
                (out / journal).unlink()
        except OSError as e:  # the appended manifest is whole; only its tidying failed
            progress.notice(f"could not compact {shown(str(writer.path))}: {one_line(e)}")
    if shard.launcher == "torchrun" and shard.sharded:  # rank 0 merges once all are done
        summary.merged = after_all_ranks(
            lambda: merge_shards(out, notice=progress.notice, lock=False)
        )
    summary.elapsed = time.perf_counter() - start
    return summary


def _previous_entries(
    out: Path,
    settings: dict[str, Any],
    overwrite: bool,
    progress: Progress,
    manifest: str,
    journal: str,
) -> dict[str, dict[str, Any]]:
    """The entries that this run may reuse: those of its ``manifest`` and ``journal`` (the
    same file for a whole run), and for a shard also those of the run's manifest and of
    every shard manifest and journal in DIR (an input another shard count or a whole run
    did is not done again). Entries of other settings in the run's manifest or its own
    refuse the run, or with ``overwrite`` those in its own are removed with their outputs;
    ``overwrite`` reuses none."""
    entries = read_manifest(out, notice=progress.notice, name=manifest)
    if journal != manifest:
        entries.update(read_manifest(out, notice=progress.notice, name=journal))
    others: dict[str, dict[str, Any]] = {}
    if manifest != MANIFEST:
        others = read_manifest(out, name=MANIFEST)
        if not overwrite and (mismatch := settings_mismatch(others, settings)):
            raise UsageError(
                f"{shown(str(out / MANIFEST))} holds results of other settings "
                f"({'; '.join(mismatch)}); give another --out, or --overwrite to replace them"
            )
        for _, _, name in shard_manifests(out, journals=True):
            if name not in (manifest, journal):  # others may be writing: a torn tail is no news
                others.update(read_manifest(out, name=name))
    mismatch = settings_mismatch(entries, settings)
    if mismatch and not overwrite:
        raise UsageError(
            f"{shown(str(out))} holds results of other settings ({'; '.join(mismatch)}); give another "
            "--out, or --overwrite to replace them all"
        )
    if mismatch:
        try:
            remove_outputs(out, entries)
            write_manifest(out, {}, manifest)
            if journal != manifest:
                write_manifest(out, {}, journal)
        except OSError as e:
            raise UsageError(
                f"cannot replace the results in {shown(str(out))}: {one_line(e)}"
            ) from None
        progress.notice(
            f"removed {len(entries)} result(s) of other settings from {shown(str(out))}"
        )
    return {} if overwrite else {**others, **entries}


def _remove_temporaries(out: Path, todo: list[Input], fmt: str, shard: Shard) -> None:
    """Delete the temporary files a killed run left for the outputs this run will write.
    Shards share DIR, so a shard deletes only temporaries of its own outputs' names (and its
    own parquet parts), never one another shard is writing now."""
    if not shard.sharded:
        folders = {(out / output_name(it.key, fmt)).parent for it in todo}
        remove_stale_temporaries({out / PARQUET_DIR} if fmt == "parquet" else folders)
        return
    mine: dict[Path, set[str]] = {}  # folder -> names of the outputs (".NAME.")
    if fmt == "parquet":
        parts = out / PARQUET_DIR
        mine[parts] = {n for n in _listing(parts) if n.startswith(f".{shard.name}.part-")}
    else:
        for it in todo:
            target = out / output_name(it.key, fmt)
            mine.setdefault(target.parent, set()).add(f".{target.name}")
    token = re.compile(r"\.[0-9a-f]{8}" + re.escape(TMP_SUFFIX))  # atomic.py's temporary name
    for folder, names in mine.items():
        for name in _listing(folder):
            m = token.search(name)
            if m and m.end() == len(name) and (name[: m.start()] in names or name in names):
                with contextlib.suppress(OSError):
                    os.unlink(folder / name)


def _listing(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:  # not made yet
        return []


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
