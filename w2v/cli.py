"""The ``w2v`` command: argument parsing only; the work is done by library functions."""

from __future__ import annotations

import argparse
import os
import sys

from w2v.allocator import MODES, tune_allocator
from w2v.convert.checkpoint import CheckpointError, save
from w2v.convert.load import read_checkpoint
from w2v.errors import UsageError
from w2v.loading import DTYPES
from w2v.longform import AUTO_CHUNK_SECONDS, DEFAULT_CHUNK_SECONDS, DEFAULT_CONTEXT_SECONDS
from w2v.pipeline import embed_files, parse_layers
from w2v.pipeline.batching import (
    CPU_BATCH_SECONDS,
    CPU_CORES_PER_WORKER,
    GPU_BATCH_SECONDS,
    GPU_MAX_WORKERS,
)
from w2v.pipeline.outputs import FORMATS, MANIFEST
from w2v.pipeline.pooling import POOLS


def _convert(args: argparse.Namespace) -> int:
    try:
        ckpt = read_checkpoint(args.src)
    except CheckpointError as e:
        print(f"w2v convert: error: {e}", file=sys.stderr)
        return 2
    for notice in ckpt.notices:
        print(f"w2v convert: {notice}", file=sys.stderr)
    try:
        out = save(ckpt, args.dst)
    except OSError as e:
        print(f"w2v convert: error: cannot write {args.dst}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({ckpt.info.family}, {ckpt.config.num_layers} layers)", file=sys.stderr)
    return 0


class _Bar:
    """tqdm progress on stderr (files, audio seconds per second, ETA) and one line per failure.

    Implements :class:`w2v.pipeline.Progress`; the bar shows only on a terminal.
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.files = 0
        self.done = 0

    def start(self, files: int, seconds: float, skipped: int) -> None:
        self.files = files
        if self.quiet or not sys.stderr.isatty() or files == 0:
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=seconds,
            unit=" audio s",
            unit_scale=True,
            dynamic_ncols=True,
            file=sys.stderr,
            desc="w2v embed",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}, {rate_fmt}]",
        )
        self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.done}/{self.files} files", refresh=False)

    def item(self, entry: dict) -> None:
        self.done += 1
        if entry["status"] != "ok" and not self.quiet:
            line = f"w2v embed: error: {entry['error']}"
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)
        if self.bar is not None:
            self._postfix()
            self.bar.update(entry.get("duration") or 0.0)

    def notice(self, text: str) -> None:
        if self.quiet:
            return
        line = f"w2v embed: {text}"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _layers_arg(text: str) -> str:
    try:
        parse_layers(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
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
        )
    except UsageError as e:
        print(f"w2v embed: error: {e}", file=sys.stderr)
        return 2
    line = f"w2v embed: {summary.line()}"
    if summary.failed:
        line += f" (reasons in {summary.out_dir / MANIFEST})"
    print(line, file=sys.stderr)
    return summary.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="w2v", description="wav2vec 2.0 family encoders: convert checkpoints, embed audio."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "convert",
        help="convert a Hugging Face directory or fairseq .pt into a w2v checkpoint directory",
    )
    p.add_argument("src", help="Hugging Face model directory or fairseq .pt file")
    p.add_argument("dst", help="output directory (config.json + model.safetensors)")
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "embed",
        help="write per-layer embeddings of audio files",
        description="Embed audio files: one output file per input under --out, plus "
        "manifest.jsonl. Exit status 0 when every input succeeded, 1 when some failed "
        "(the rest are written), 2 for usage errors.",
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
        type=_positive,
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
        type=int,
        default=None,
        metavar="N",
        help="use channel N (0-based) of multichannel files instead of the mean of all channels",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"audio decoding threads (default: 1 per {CPU_CORES_PER_WORKER} CPU cores with the "
        f"model on the CPU, up to {GPU_MAX_WORKERS} on a GPU)",
    )
    p.add_argument(
        "--chunk-seconds",
        type=_non_negative,
        default=None,
        metavar="S",
        help="compute inputs longer than S seconds in S-second windows with context "
        f"(default: only inputs over {AUTO_CHUNK_SECONDS:g} s, in {DEFAULT_CHUNK_SECONDS:g} s windows; 0: never)",
    )
    p.add_argument(
        "--context-seconds",
        type=_non_negative,
        default=DEFAULT_CONTEXT_SECONDS,
        metavar="S",
        help=f"context on each side of a window (default {DEFAULT_CONTEXT_SECONDS:g})",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile (a slow first batch, then faster)",
    )
    p.add_argument("--overwrite", action="store_true", help="recompute inputs already done")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar or error lines; only the summary"
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
