"""The ``w2v`` command: argument parsing only; the work is done by library functions."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator

from w2v.allocator import MODES, tune_allocator
from w2v.errors import CheckpointError, UsageError, escaped, one_line, shown
from w2v.loading import DTYPES, convert, load
from w2v.longform import AUTO_CHUNK_SECONDS, DEFAULT_CHUNK_SECONDS, DEFAULT_CONTEXT_SECONDS
from w2v.onnx import BACKENDS, save_onnx
from w2v.pipeline import embed_files, parse_layers
from w2v.pipeline.batching import (
    CPU_BATCH_SECONDS,
    CPU_CORES_PER_WORKER,
    GPU_BATCH_SECONDS,
    GPU_MAX_WORKERS,
)
from w2v.pipeline.layers import resolve_layers
from w2v.pipeline.merge import merge_shards
from w2v.pipeline.options import MAX_WORKERS
from w2v.pipeline.outputs import DTYPES_OUT, FORMATS, MANIFEST
from w2v.pipeline.pooling import POOLS
from w2v.pipeline.ray_data import ENGINES
from w2v.probe import (
    DEFAULT_CKA_ITEMS,
    DEFAULT_MAX_FRAMES,
    PROBE_REFERENCES,
    PROBE_TASKS,
    PROBES,
    ProbeSettings,
)
from w2v.probe import extract as extract_embeddings
from w2v.probe import probe as run_probe
from w2v.train.loop import TASKS as TRAIN_TASKS
from w2v.train.loop import TrainSettings
from w2v.train.loop import train as run_training


@contextlib.contextmanager
def _warnings_as_lines(show: Callable[[str], None]) -> Iterator[None]:
    """Warnings raised meanwhile (``w2v.load``'s dropped-head notices, a library's remarks)
    go to ``show`` as one clean line each instead of Python's form with a source location."""

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        show(one_line(message) if isinstance(message, Warning) else one_line(Warning(message)))

    with warnings.catch_warnings():
        warnings.showwarning = showwarning
        yield


def _error(prog: str, e: Exception) -> None:
    """Print ``prog: error: MESSAGE`` with each line of the message escaped (a message
    that lists colliding inputs has one line per name; nothing else breaks a line)."""
    text = "\n".join(escaped(line) for line in str(e).split("\n"))
    print(f"{prog}: error: {text}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse, with the arguments it quotes in errors ("unrecognized arguments: ...")
    escaped as every w2v message is."""

    def error(self, message: str):
        super().error(escaped(message))


def _convert(args: argparse.Namespace) -> int:
    def notice(text: str) -> None:
        if not args.quiet:  # escaped again: a notice may quote a path or key as given
            print(f"w2v convert: {escaped(text)}", file=sys.stderr)

    try:
        with _warnings_as_lines(notice):
            ckpt = convert(
                args.src, args.dst, overwrite=args.overwrite, strict=args.strict, arch=args.arch
            )
    except (UsageError, CheckpointError) as e:
        _error("w2v convert", e)
        return 2
    for text in ckpt.notices:
        notice(text)
    print(
        f"wrote {shown(args.dst)} ({ckpt.info.family}, {ckpt.config.num_layers} layers)",
        file=sys.stderr,
    )
    return 0


class _Bar:
    """tqdm progress on stderr (files done, audio seconds per second, ETA) and one line per
    failure and per notice; ``quiet`` keeps only the failures.

    Implements :class:`w2v.pipeline.Progress`; the bar shows only on a terminal. It
    counts audio seconds, or files when no input's duration is known. Headers can
    under-state a file's length, so the count is held at the total: a bar past 100 %
    would show a negative ETA (and tqdm warns).
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.files = 0
        self.done = 0
        self.by_files = False

    def start(self, files: int, seconds: float, skipped: int) -> None:
        self.files = files
        if self.quiet or not sys.stderr.isatty() or files == 0:
            return
        from tqdm import tqdm

        self.by_files = not seconds > 0
        self.bar = tqdm(
            total=files if self.by_files else seconds,
            unit=" files" if self.by_files else " audio s",
            unit_scale=not self.by_files,
            dynamic_ncols=True,
            file=sys.stderr,
            desc=self._desc(),
            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}, {rate_fmt}]",
        )

    def _desc(self) -> str:
        return f"w2v embed {self.done}/{self.files} files"

    def _line(self, line: str) -> None:
        line = escaped(line)  # a path in a notice or error is the file system's, as is
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def item(self, entry: dict) -> None:
        self.done += 1
        if entry["status"] != "ok":
            self._line(f"w2v embed: error: {entry['error']}")
        if self.bar is not None:
            self.bar.set_description_str(self._desc(), refresh=False)
            step = 1.0 if self.by_files else float(entry.get("duration") or 0.0)
            self.bar.update(max(0.0, min(step, self.bar.total - self.bar.n)))

    def notice(self, text: str) -> None:
        if not self.quiet:
            self._line(f"w2v embed: {text}")

    def close(self) -> None:
        if self.bar is not None:
            if self.done >= self.files:  # headers may have over-stated the audio
                self.bar.update(max(0.0, self.bar.total - self.bar.n))
            self.bar.close()
            self.bar = None


def _layers_arg(text: str) -> str:
    try:
        parse_layers(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _seconds(text: str) -> float:
    # parsing only: the ranges are checked once, for the CLI and the API alike, by
    # w2v.pipeline.options (a UsageError there exits 2 like argparse's own errors)
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r:.40}") from None
    return value


def _embed(args: argparse.Namespace) -> int:
    bar = _Bar(args.quiet)
    try:
        allocator = os.environ.get("W2V_ALLOCATOR", "bounded")
        if allocator not in (*MODES, "glibc"):
            raise UsageError(
                f"W2V_ALLOCATOR must be one of {', '.join(MODES)}, glibc; got {allocator!r}"
            )
        if allocator != "glibc":
            tune_allocator(allocator)  # bounded: resident memory follows live tensors
        with _warnings_as_lines(bar.notice):
            summary = embed_files(
                args.inputs,
                args.model,
                args.out,
                layers=args.layers,
                pool=args.pool,
                fmt=args.format,
                batch_seconds=args.batch_seconds,
                device=args.device,
                dtype=args.dtype,
                channel=args.channel,
                overwrite=args.overwrite,
                workers=args.workers,
                progress=bar,
                chunk_seconds=args.chunk_seconds,
                context_seconds=args.context_seconds,
                compile=args.compile,
                head=args.head,
                strict=args.strict,
                backend=args.backend,
                dtype_out=args.dtype_out,
                num_shards=args.num_shards,
                shard_index=args.shard_index,
                engine=args.engine,
                actors=args.actors,
                gpus_per_actor=args.gpus_per_actor,
            )
    except UsageError as e:
        _error("w2v embed", e)
        return 2
    line = f"w2v embed: {summary.line()}"
    if summary.failed:
        line += f" (reasons in {shown(str(summary.manifest))})"
    print(line, file=sys.stderr)
    if summary.merged is not None:
        path, entries, shards = summary.merged
        print(
            f"w2v embed: wrote {shown(str(path))} ({entries} inputs from {shards} shards)",
            file=sys.stderr,
        )
    return summary.exit_code


def _seconds_or_count(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r:.40}") from None


def _merge(args: argparse.Namespace) -> int:
    try:
        path, entries, shards = merge_shards(
            args.dir, notice=lambda text: print(f"w2v merge: {escaped(text)}", file=sys.stderr)
        )
    except UsageError as e:
        _error("w2v merge", e)
        return 2
    print(
        f"w2v merge: wrote {shown(str(path))} ({entries} inputs from {shards} shards)",
        file=sys.stderr,
    )
    return 0


def _csv_names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected one or more names separated by commas")
    return names


def _probe(args: argparse.Namespace) -> int:
    def notice(text: str) -> None:
        if not args.quiet:
            print(f"w2v probe: {escaped(text)}", file=sys.stderr)

    failed = 0
    try:
        settings = ProbeSettings(
            task=args.task,
            probe=args.probe,
            layers=args.layers,
            labels=args.label,
            key_column=args.key_column,
            group_by=args.group_by,
            groups=args.groups,
            classify=args.classify or (),
            regress=args.regress or (),
            folds=args.folds,
            seed=args.seed,
            max_frames=args.max_frames,
            cka_items=args.cka_items,
            layer_weights=not args.no_layer_weights,
            layer_norm=args.layer_norm,
            jobs=args.jobs,
            reference=args.reference,
        )
        settings.check()
        if args.model is not None:
            bar = _Bar(args.quiet)
            with _warnings_as_lines(bar.notice):
                emb_dir, summary = extract_embeddings(
                    args.inputs,
                    args.model,
                    args.out,
                    task=args.task,
                    progress=bar,
                    batch_seconds=args.batch_seconds,
                    device=args.device,
                    dtype=args.dtype,
                )
            failed = summary.failed
            notice(f"embeddings: {summary.line()}")
        elif len(args.inputs) != 1:
            raise UsageError(
                f"give one embedding directory (got {len(args.inputs)} inputs), or --model "
                "MODEL to embed audio files first"
            )
        else:
            emb_dir = args.inputs[0]
        with _warnings_as_lines(notice):
            report = run_probe(emb_dir, args.labels, args.out, settings, compare=args.compare)
    except UsageError as e:
        _error("w2v probe", e)
        return 2
    for text in report.notices:
        notice(text)
    print(report.table())
    print(
        f"w2v probe: wrote {shown(args.out)} (results.csv, summary.json, "
        f"{sum(f.suffix == '.png' for f in report.files)} plots)",
        file=sys.stderr,
    )
    return 1 if failed else 0


def _export(args: argparse.Namespace) -> int:
    src, dst = args.onnx

    def notice(text: str) -> None:
        print(f"w2v export: {escaped(text)}", file=sys.stderr)

    try:
        if not dst.endswith(".onnx"):
            raise UsageError(f"output {shown(dst)} must end in .onnx")
        if os.path.lexists(dst) and not (args.overwrite and os.path.isfile(dst)):
            raise UsageError(
                f"output {shown(dst)} exists; give --overwrite to replace it"
                if os.path.isfile(dst)
                else f"output {shown(dst)} exists and is not a file"
            )
        with _warnings_as_lines(notice):
            model = load(src, device="cpu", strict=args.strict)
            n = model.config.num_layers
            layers = None if args.layers == "all" else resolve_layers(args.layers, n)
            save_onnx(model, dst, layers)
    except (ValueError, OSError) as e:  # UsageError, CheckpointError, a layer out of range
        _error("w2v export", e)
        return 2
    print(f"wrote {shown(dst)} ({model.info.family}, {n} layers)", file=sys.stderr)
    return 0


def _train(args: argparse.Namespace) -> int:
    """``w2v train``: a progress bar (loss, perplexity, learning rate) on a terminal."""
    bar = None

    def notice(text: str) -> None:
        if not args.quiet:
            print(f"w2v train: {escaped(text)}", file=sys.stderr)

    def on_step(m: dict) -> None:
        nonlocal bar
        if args.quiet or not sys.stderr.isatty():
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=args.steps, initial=int(m["step"]) - 1, file=sys.stderr)
        shown_parts = {"loss": f"{m['loss']:.3f}", "lr": f"{m['lr']:.2e}"}
        if "codevector_perplexity" in m:
            shown_parts["ppl"] = f"{m['codevector_perplexity']:.1f}"
        bar.set_postfix(shown_parts, refresh=False)
        bar.update(1)

    try:
        settings = TrainSettings(
            task=args.task, steps=args.steps, batch_size=args.batch_size,
            crop_seconds=args.crop_seconds, lr=args.lr, warmup_steps=args.warmup_steps,
            seed=args.seed, mask_prob=args.mask_prob, style=args.style,
            checkpoint_every=args.checkpoint_every, feature_grad_mult=args.feature_grad_mult,
            freeze_feature_encoder=args.freeze_feature_encoder,
            gradient_checkpointing=args.gradient_checkpointing,
            hidden_dropout=args.dropout, attention_dropout=args.dropout,
            activation_dropout=args.dropout, feat_proj_dropout=args.dropout,
            layerdrop=args.layerdrop,
        )  # fmt: skip
        with _warnings_as_lines(notice):
            last = run_training(
                settings, args.model, args.inputs, args.out, targets=args.targets,
                device=args.device or "cpu", on_step=on_step,
            )  # fmt: skip
    except (UsageError, CheckpointError) as e:
        _error("w2v train", e)
        return 2
    finally:
        if bar is not None:
            bar.close()
    print(
        f"w2v train: {int(last.get('step', 0))} steps, loss {last.get('loss', float('nan')):.4f}; "
        f"checkpoints and metrics.jsonl in {shown(args.out)}",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="w2v", description="wav2vec 2.0 family encoders: convert checkpoints, embed audio."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "convert",
        help="convert a Hugging Face directory, fairseq .pt or torchaudio .pth into a w2v "
        "checkpoint directory",
    )
    p.add_argument("src", help="Hugging Face model directory, fairseq .pt or torchaudio .pth file")
    p.add_argument(
        "dst",
        help="output directory (config.json + model.safetensors): new, empty, or an earlier "
        "output of w2v convert; never the source, inside it, or holding it",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty directory that holds no w2v checkpoint (its config.json "
        "and model.safetensors are replaced; nothing else is touched)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse a checkpoint with weights outside the encoder that w2v does not run "
        "(by default they are kept, unchanged, in extra.safetensors, with a notice)",
    )
    p.add_argument(
        "--arch",
        metavar="NAME",
        help="a torchaudio .pth's architecture, as a torchaudio preset name (wav2vec2_base, "
        "hubert_large, ...), when its shapes cannot tell (default: read from the weights)",
    )
    p.add_argument("--quiet", action="store_true", help="no notices; only errors and the result")
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "export",
        help="export a model as an ONNX graph for the onnxruntime backend (needs w2v[onnx])",
        description="Write MODEL (any checkpoint w2v embed takes) as an ONNX graph with dynamic "
        "batch and time axes: inputs waveforms (batch, samples) float32 and lengths (batch,) "
        "int64; outputs layer_K (batch, frames, dim) for each layer asked, output (the model "
        "output) when the last layer is among them, and frame_lengths. Load it with "
        "w2v.load(OUT, backend='onnxruntime'). Exit status 2 for usage errors.",
    )
    p.add_argument(
        "--onnx",
        nargs=2,
        required=True,
        metavar=("MODEL", "OUT.onnx"),
        help="the model to export and the graph file to write (weights over 1 GiB go beside "
        "it, to OUT.onnx.data)",
    )
    p.add_argument(
        "--layers",
        default="all",
        type=_layers_arg,
        metavar="SPEC",
        help="layers the graph outputs, as in w2v embed (default all); none past the deepest "
        "is computed",
    )
    p.add_argument("--strict", action="store_true", help="as in w2v convert")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.onnx")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "embed",
        help="write per-layer embeddings of audio files",
        description="Embed audio files: one output file per input under --out, plus "
        "manifest.jsonl. Exit status 0 when every input succeeded, 1 when some failed "
        "(the rest are written), 2 for usage errors (bad arguments, an input that does not "
        "exist, a model that cannot be loaded), another run holding DIR, DIR holding results "
        "of other settings, and a full disk.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="audio files, directories (searched recursively), or .txt/.lst files listing paths",
    )
    p.add_argument(
        "--model",
        required=True,
        help="w2v checkpoint directory, Hugging Face model directory, fairseq .pt, or hub id",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--layers",
        default="all",
        type=_layers_arg,
        metavar="SPEC",
        help="'all' (default), '12', '0,6,12', '4-8' or '-1'; 0 is the transformer input, "
        "k the output of layer k",
    )
    p.add_argument(
        "--pool",
        choices=POOLS,
        default="mean",
        help="mean over valid frames (default), mean and std concatenated, or none (all frames)",
    )
    p.add_argument("--format", choices=tuple(FORMATS), default="npy")
    p.add_argument(
        "--batch-seconds",
        type=_seconds,
        default=None,
        metavar="S",
        help="padded audio seconds per batch (longest item x batch size; default "
        f"{CPU_BATCH_SECONDS:g} on a CPU, {GPU_BATCH_SECONDS:g} on a GPU)",
    )
    p.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument(
        "--channel",
        type=_count,
        default=None,
        metavar="N",
        help="use channel N (0-based) of multichannel files instead of the mean of all channels",
    )
    p.add_argument(
        "--workers",
        type=_count,
        default=None,
        help=f"audio decoding threads, at most {MAX_WORKERS} (default: 1 per "
        f"{CPU_CORES_PER_WORKER} CPU cores with the model on the CPU, up to {GPU_MAX_WORKERS} "
        "on a GPU)",
    )
    p.add_argument(
        "--chunk-seconds",
        type=_seconds,
        default=None,
        metavar="S",
        help="compute inputs longer than S seconds in S-second windows with context "
        f"(default: only inputs over {AUTO_CHUNK_SECONDS:g} s, in {DEFAULT_CHUNK_SECONDS:g} s windows; 0: never)",
    )
    p.add_argument(
        "--context-seconds",
        type=_seconds,
        default=DEFAULT_CONTEXT_SECONDS,
        metavar="S",
        help=f"context on each side of a window (default {DEFAULT_CONTEXT_SECONDS:g})",
    )
    p.add_argument(
        "--head",
        action="store_true",
        help="also write the fine-tuned head's outputs (logits; x-vector embeddings; the CTC "
        "transcript as the manifest's text) beside the layers; needs --format safetensors",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse a checkpoint with weights outside the encoder that w2v does not run "
        "(by default they are left unused, with a notice)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile (a slow first batch, then faster on a GPU;"
        " on a CPU slower than the default eager fast paths)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="what computes the model: torch (default) or onnxruntime (needs w2v[onnx]; "
        "CPU, float32; exports the model's graph first, or give a w2v export --onnx file "
        "as --model)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="recompute inputs already done; replace results of other settings in DIR",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar or notices; only errors and the summary",
    )
    p.add_argument(
        "--dtype-out",
        choices=DTYPES_OUT,
        default="float32",
        help="value type of the stored arrays (float16 halves the disk; see README)",
    )
    p.add_argument(
        "--num-shards",
        type=_count,
        default=None,
        metavar="N",
        help="split the run into N shards of whole batches (default: from torchrun's "
        "WORLD_SIZE or SLURM's tasks or job array; else 1); needs --shard-index",
    )
    p.add_argument(
        "--shard-index",
        type=_count,
        default=None,
        metavar="I",
        help="the shard this process runs, 0 to N-1 (default: torchrun's RANK or SLURM's)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="run the model here (default), or on a Ray cluster's actors (pip install 'w2v[ray]')",
    )
    p.add_argument(
        "--actors", type=_count, default=None, metavar="K", help="Ray actors (--engine ray)"
    )
    p.add_argument(
        "--gpus-per-actor",
        type=_seconds_or_count,
        default=None,
        metavar="G",
        help="GPUs each Ray actor takes (--engine ray; default 0)",
    )
    p.set_defaults(func=_embed)

    p = sub.add_parser(
        "merge",
        help="combine the shard manifests of a sharded w2v embed run into manifest.jsonl",
        description=f"Write DIR/{MANIFEST} from DIR's manifest.shard-NNNNN-of-NNNNN.jsonl "
        "files. Exit status 0 when merged; 2 when a shard manifest is missing, an input is in "
        "two shards, shards were made with different settings, or a run is writing to DIR.",
    )
    p.add_argument("dir", metavar="DIR", help="the --out directory of the shards")
    p.set_defaults(func=_merge)
    p = sub.add_parser(
        "probe",
        help="probe every layer for labels: linear probes with a control task, CKA, layer weights",
        description="Probe each layer of a w2v embed output directory (or of audio embedded "
        "first with --model) for each label column: cross-validated linear probes with a "
        "control task, linear CKA between layers, learned layer weights. Writes "
        "results.csv, summary.json and PNG plots into --out and prints a table. Exit status "
        "0 on success, 1 when --model could not embed some inputs (the rest are probed), 2 "
        "for usage errors.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="EMB_DIR|AUDIO",
        help="a w2v embed output directory; with --model, audio files, directories or lists",
    )
    p.add_argument(
        "--labels",
        required=True,
        metavar="FILE",
        help="utterance task: CSV/TSV with a header (a path or id column, label columns) or "
        "Kaldi-style KEY VALUE lines (utt2spk); frame task: a CTM file, a TextGrid, or a "
        "directory of TextGrids",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--task", choices=PROBE_TASKS, default="utterance")
    p.add_argument("--probe", choices=PROBES, default="linear")
    p.add_argument(
        "--group-by",
        default=None,
        metavar="COLUMN",
        help="label column of groups (speakers): no group is in two folds",
    )
    p.add_argument(
        "--groups",
        default=None,
        metavar="FILE",
        help="groups from their own table (utt2spk, or CSV with --group-by naming the column); "
        "needed to group a frame task by speaker",
    )
    p.add_argument(
        "--layers",
        default=None,
        type=_layers_arg,
        metavar="SPEC",
        help="layers to probe, of those stored ('0,6,12', '4-8', '-1'; default all)",
    )
    p.add_argument(
        "--label",
        type=_csv_names,
        default=None,
        metavar="NAMES",
        help="label columns (TextGrid tiers) to probe, comma-separated (default: all)",
    )
    p.add_argument(
        "--key-column", default=None, metavar="COLUMN", help="the column naming each input"
    )
    p.add_argument(
        "--classify", type=_csv_names, default=None, metavar="NAMES", help="treat as classes"
    )
    p.add_argument(
        "--regress", type=_csv_names, default=None, metavar="NAMES", help="treat as numbers"
    )
    p.add_argument("--folds", type=_count, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=_count, default=0, help="seed of folds, samples, controls")
    p.add_argument(
        "--max-frames",
        type=_count,
        default=DEFAULT_MAX_FRAMES,
        metavar="N",
        help=f"frame task: labelled frames sampled (default {DEFAULT_MAX_FRAMES:,}); memory "
        "follows N x dim",
    )
    p.add_argument(
        "--cka-items",
        type=_count,
        default=DEFAULT_CKA_ITEMS,
        metavar="N",
        help=f"items (frames) sampled for CKA (default {DEFAULT_CKA_ITEMS:,})",
    )
    p.add_argument(
        "--compare",
        default=None,
        metavar="EMB_DIR",
        help="another model's embeddings of the same inputs: CKA between the two models' layers",
    )
    p.add_argument("--no-layer-weights", action="store_true", help="skip the learned layer weights")
    p.add_argument(
        "--layer-norm", action="store_true", help="layer-norm each layer in the weighted sum"
    )
    p.add_argument(
        "--jobs", type=_count, default=1, help="layers probed in parallel processes (default 1)"
    )
    p.add_argument(
        "--reference",
        choices=PROBE_REFERENCES,
        default=None,
        help="also CKA of each layer against this representation of the same frames (read "
        "from the audio files the manifest names)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="embed the audio INPUTs with this model first (cached in DIR/embeddings)",
    )
    p.add_argument("--batch-seconds", type=_seconds, default=None, metavar="S")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--quiet", action="store_true", help="no notices or progress")
    p.set_defaults(func=_probe)

    p = sub.add_parser(
        "train",
        help="pretrain (wav2vec 2.0), fine-tune with CTC, or train an utterance classifier",
        description="Train MODEL (a checkpoint, or a named config for random init) on audio "
        "INPUTs (files, directories, .txt/.lst lists). Writes step-N/ checkpoints (w2v "
        "checkpoint directories), metrics.jsonl and train.json into --out; running again "
        "into the same --out resumes. Exit status 0 on success, 2 for usage errors.",
    )
    p.add_argument("task", choices=TRAIN_TASKS)
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--model", required=True, help="checkpoint path, hub id or config name")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--targets",
        default=None,
        metavar="FILE",
        help="ctc: PATH<TAB>TRANSCRIPT lines; classify: PATH<TAB>LABEL lines",
    )
    p.add_argument("--steps", type=_count, default=1000)
    p.add_argument("--batch-size", type=_count, default=8)
    p.add_argument("--crop-seconds", type=_seconds, default=15.0, metavar="S")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask-prob", type=float, default=None)
    p.add_argument("--style", choices=("hf", "fairseq"), default="hf")
    p.add_argument("--checkpoint-every", type=_count, default=500, metavar="N")
    p.add_argument("--feature-grad-mult", type=float, default=1.0)
    p.add_argument("--freeze-feature-encoder", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0, help="every dropout (default 0)")
    p.add_argument("--layerdrop", type=float, default=0.0)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true", help="no notices or progress")
    p.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("w2v: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
