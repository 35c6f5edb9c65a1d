"""Where the time goes: each stage of w2v in PyTorch and the same stage in ONNX Runtime.

Each stage of one random-init model is wrapped as a module, run by PyTorch, and exported
(``torch.onnx.export``, the exporter ``w2v export --onnx`` uses, with the same fused
attention) and run by ONNX Runtime with every graph optimisation, on the same input
(exact mode: lengths given, the last item padded). Stages: the conv feature encoder, the
feature projection, the positional conv (with the padding re-zeroed and the post-LN
LayerNorm), then over all transformer layers: attention (q/k/v/out products and the
scores), the feed-forward (two products and GELU), and the layer norms. Each stage runs
``--reps`` times alternating between the two, after a warm-up; the median is reported
with its direct-convolution / matmul FLOPs as GFLOP/s and as a fraction of the machine's
best measured fp32 matmul peak (the larger of torch's and ONNX Runtime's, both printed).

    python -m bench.bench_stages                          # base, batch 1, 10 s
    python -m bench.bench_stages --size large --batch 8 --seconds 10 --reps 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import w2v
from bench.bench_speed import build, ort_session
from bench.common import (
    loadavg,
    machine_description,
    matmul_peak,
    median,
    ort_matmul_peak,
    settle,
)
from w2v.config import Config
from w2v.nn.functional import frame_mask
from w2v.onnx.export import _quiet_exporter, _translations


class Stage(nn.Module):
    """One stage as a module of tensors only (so that it exports)."""

    def __init__(self, model, name: str):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        m, layers = self.model, self.model.encoder.layers
        if self.name == "conv encoder":  # x: waveforms, aux: lengths
            return m.feature_extractor(x, aux)[0]
        if self.name == "projection":
            return m.feature_projection(x)
        if self.name == "positional conv":  # aux: valid frames (B, T)
            return m.encoder.embed(x, aux)
        if self.name == "attention":  # aux: key mask (B, 1, 1, T)
            for layer in layers:
                x = layer.attention(x, aux)
            return x
        if self.name == "feed-forward":
            for layer in layers:
                x = layer.feed_forward(x)
            return x
        if self.name == "layer norms":
            for layer in layers:
                x = layer.final_layer_norm(layer.layer_norm(x))
            return x
        raise ValueError(self.name)


def stage_flops(config: Config, name: str, batch: int, samples: int, frames: int) -> float:
    """Multiply-adds × 2 of a stage, direct convolutions (no F(3, 2)); 0 for norms."""
    d, f, n, t = config.hidden_size, config.intermediate_size, config.num_layers, frames
    if name == "conv encoder":
        flops, length, c_in = 0.0, samples, 1
        for c, k, s in zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=True):
            length = (length - k) // s + 1
            flops += 2 * c_in * c * k * length
            c_in = c
        return flops * batch
    if name == "projection":
        return 2 * config.conv_dim[-1] * d * t * batch
    if name == "positional conv":
        depth = config.pos_conv_depth if config.pos_conv == "stack" else 1
        return depth * 2 * d * (d // config.pos_conv_groups) * config.pos_conv_kernel * t * batch
    if name == "attention":
        return n * (2 * t * d * d * 4 + 4 * t * t * d) * batch
    if name == "feed-forward":
        return n * 4 * t * d * f * batch
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="base", choices=["base", "large"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = {"torch": matmul_peak(torch.float32, "cpu"), "onnxruntime": ort_matmul_peak()}
    peak = max(peaks.values())
    samples = int(args.seconds * 16000)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _, path = build(args.size, tmp)
        model = w2v.load(path)
        config = model.config
        torch.manual_seed(0)
        x = torch.randn(args.batch, samples) * 0.1
        lengths = torch.full((args.batch,), samples)
        lengths[-1] = samples * 3 // 4  # one padded item: the masks are real
        with torch.inference_mode():
            feats, frames = model.feature_extractor(x, lengths)
            projected = model.feature_projection(feats)
            valid = frame_mask(frames, projected.shape[1])
            hidden = model.encoder.embed(projected, valid)
        t = projected.shape[1]
        inputs = {
            "conv encoder": (x, lengths),
            "projection": (feats, torch.zeros(0)),
            "positional conv": (projected, valid),
            "attention": (hidden, valid[:, None, None, :]),
            "feed-forward": (hidden, torch.zeros(0)),
            "layer norms": (hidden, torch.zeros(0)),
        }
        print(f"Machine: {machine_description('cpu')}; {loadavg()}")
        print(
            f"Measured fp32 matmul peak: torch {peaks['torch']:.0f} GFLOP/s, ONNX Runtime "
            f"{peaks['onnxruntime']:.0f}; fractions below are of {peak:.0f}"
        )
        print(
            f"{args.size}, fp32, batch {args.batch}, {args.seconds:g} s ({t} frames), exact mode, "
            f"median of {args.reps}; FLOPs of direct convolutions\n"
        )
        print(
            "| stage | GFLOP | w2v ms | w2v GFLOP/s | w2v % of peak | ORT ms | ORT GFLOP/s "
            "| ORT % of peak | w2v / ORT time |\n|---|---|---|---|---|---|---|---|---|"
        )
        totals = [0.0, 0.0]
        for name, (a, b) in inputs.items():
            stage = Stage(model, name).eval()
            graph = tmp / f"{name.replace(' ', '_')}.onnx"
            with _quiet_exporter(), torch.no_grad():
                torch.onnx.export(
                    stage,
                    (a, b),
                    dynamo=True,
                    custom_translation_table=_translations(),
                    verbose=False,
                ).save(graph)
            session = ort_session(graph, args.threads)
            feeds = {i.name: v.numpy() for i, v in zip(session.get_inputs(), (a, b), strict=False)}

            def ours(stage=stage, a=a, b=b):
                with torch.inference_mode():
                    return stage(a, b)

            def theirs(session=session, feeds=feeds):
                return session.run(None, feeds)

            ours(), theirs()
            times = ([], [])
            for _ in range(args.reps):
                for i, fn in enumerate((ours, theirs)):
                    settle()  # the other runtime's spinning threads go idle first
                    start = time.perf_counter()
                    fn()
                    times[i].append(time.perf_counter() - start)
            ms = [1000 * median(ts) for ts in times]
            totals = [totals[0] + ms[0], totals[1] + ms[1]]
            flops = stage_flops(config, name, args.batch, samples, t)
            rates = [flops / (m / 1000) / 1e9 for m in ms]
            cells = [
                f"{m:.1f} | {r:.0f} | {100 * r / peak:.0f}%" if flops else f"{m:.1f} | - | -"
                for m, r in zip(ms, rates, strict=True)
            ]
            print(
                f"| {name} | {flops / 1e9:.1f} | {cells[0]} | {cells[1]} | {ms[0] / ms[1]:.2f} |",
                flush=True,
            )
        print(
            f"| sum of stages | | {totals[0]:.1f} | | | {totals[1]:.1f} | | | "
            f"{totals[0] / totals[1]:.2f} |"
        )
        print(f"\n{loadavg()} at the end")


if __name__ == "__main__":
    main()
