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
from w2v.loading import DTYPES, convert
from w2v.longform import AUTO_CHUNK_SECONDS, DEFAULT_CHUNK_SECONDS, DEFAULT_CONTEXT_SECONDS
from w2v.pipeline import embed_files, parse_layers
from w2v.pipeline.batching import (
    CPU_BATCH_SECONDS,
    CPU_CORES_PER_WORKER,
    GPU_BATCH_SECONDS,
    GPU_MAX_WORKERS,
)
from w2v.pipeline.options import MAX_WORKERS
from w2v.pipeline.outputs import FORMATS, MANIFEST
from w2v.pipeline.pooling import POOLS


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
            ckpt = convert(args.src, args.dst, overwrite=args.overwrite, strict=args.strict)
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
            )
    except UsageError as e:
        _error("w2v embed", e)
        return 2
    line = f"w2v embed: {summary.line()}"
    if summary.failed:
        line += f" (reasons in {shown(str(summary.out_dir / MANIFEST))})"
    print(line, file=sys.stderr)
    return summary.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="w2v", description="wav2vec 2.0 family encoders: convert checkpoints, embed audio."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "convert",
        help="convert a Hugging Face directory or fairseq .pt into a w2v checkpoint directory",
    )
    p.add_argument("src", help="Hugging Face model directory or fairseq .pt file")
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
    p.add_argument("--quiet", action="store_true", help="no notices; only errors and the result")
    p.set_defaults(func=_convert)

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
        help="run the model through torch.compile (a slow first batch, then faster)",
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
    p.set_defaults(func=_embed)
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
