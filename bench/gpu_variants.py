"""GPU only: the ways of computing the two convolution stages, timed side by side.

The numbers behind w2v's choice of kernel per device and dtype (see bench/RESULTS.md):

* the conv feature encoder: layer 0 and layers 1-6 separately, in w2v's
  product form (time-major matrix products) and as plain cuDNN conv1d, in fp32
  (with and without TF32 for cuDNN) and bf16;
* the grouped positional convolution (kernel 128, 16 groups) in bf16, fp16
  and fp32, with and without TF32 and ``cudnn.benchmark``.

    python -m bench.gpu_variants --batch 8 --seconds 10
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch
import torch.nn.functional as F

import w2v
from w2v.nn.fast import layer0, layers


def gpu_ms(fn, reps: int) -> float:
    """Median milliseconds of ``fn`` by CUDA events, after a warm-up."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


@contextlib.contextmanager
def flags(tf32: bool = True, benchmark: bool = False):
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = tf32, benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def conv_encoder_cases(model, x: torch.Tensor, dtype: torch.dtype) -> dict:
    fe = model.feature_extractor
    first, rest = fe.conv_layers[0], fe.conv_layers[1:]
    x0 = layer0.forward(first.conv, first.layer_norm, x, None, dtype)
    x0_cm = x0.transpose(1, 2).contiguous()

    def rest_products():
        y = x0
        for layer in rest:
            y = layers.forward(y, layer.conv, layer.layer_norm)
        return y

    def rest_conv1d():
        y = x0_cm
        for layer in rest:
            y = layer(y)
        return y

    return {
        "layer 0, product form": lambda: layer0.forward(
            first.conv, first.layer_norm, x, None, dtype
        ),
        "layer 0, conv1d": lambda: first(x[:, None]).to(dtype),
        "layers 1-6, product form": rest_products,
        "layers 1-6, conv1d": rest_conv1d,
        "whole, product form": lambda: fe(x),
        "whole, conv1d": lambda: fe.plain(x),
    }


def conv_encoder_rows(config: str, x: torch.Tensor, reps: int) -> list[str]:
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        model = w2v.from_config(config).to("cuda", dtype)
        if dtype != torch.float32:
            model.feature_extractor.conv_layers[0].float()  # as w2v.load keeps it
        name = f"{dtype}".replace("torch.", "")
        with torch.inference_mode():
            cases = conv_encoder_cases(model, x, dtype)
            for tf32 in (True, False) if dtype == torch.float32 else (True,):
                label = name + (f", cuDNN TF32 {tf32}" if dtype == torch.float32 else "")
                with flags(tf32=tf32):
                    for variant, fn in cases.items():
                        ms = gpu_ms(fn, reps)
                        rows.append(f"| {config} | conv encoder | {label} | {variant} | {ms:.2f} |")
        del model
    return rows


def pos_conv_rows(config: str, batch: int, frames: int, reps: int) -> list[str]:
    model = w2v.from_config(config).cuda()
    conv = model.encoder.pos_conv_embed.conv
    d = model.config.hidden_size
    x32 = torch.randn(batch, d, frames, device="cuda")
    rows = []
    with torch.inference_mode():
        w32 = torch._weight_norm(conv.weight_v, conv.weight_g, 2)

        def run(x, w, b):
            return lambda: F.conv1d(x, w, b, padding=conv.padding, groups=conv.groups)

        cases = []
        for dtype in (torch.bfloat16, torch.float16):
            run_half = run(x32.to(dtype), w32.to(dtype), conv.bias.to(dtype))
            cases.append((f"{dtype}".replace("torch.", ""), {}, run_half))
            cases.append((f"{dtype}, cudnn.benchmark", dict(benchmark=True), run_half))
        xb = x32.to(torch.bfloat16)

        def bf16_via_fp32():
            return F.conv1d(
                xb.float(), w32, conv.bias, padding=conv.padding, groups=conv.groups
            ).to(torch.bfloat16)

        cases += [
            ("fp32, cuDNN TF32", dict(tf32=True), run(x32, w32, conv.bias)),
            ("fp32, no TF32", dict(tf32=False), run(x32, w32, conv.bias)),
            ("bf16 in, fp32 conv (TF32), bf16 out", dict(tf32=True), bf16_via_fp32),
            ("bf16 in, fp32 conv (no TF32), bf16 out", dict(tf32=False), bf16_via_fp32),
        ]
        for name, kw, fn in cases:
            with flags(**kw):
                rows.append(
                    f"| {config} | positional conv | {name} | B={batch}, T={frames} | {gpu_ms(fn, reps):.2f} |"
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--configs", nargs="+", default=["wav2vec2-base", "wav2vec2-large-lv60"])
    args = ap.parse_args()
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| model | stage | dtype / flags | variant | ms |\n|---|---|---|---|---|")
    x = torch.randn(args.batch, int(args.seconds * 16000), device="cuda") * 0.1
    frames = w2v.num_frames(x.shape[1])
    for config in args.configs:
        for row in conv_encoder_rows(config, x, args.reps) + pos_conv_rows(
            config, args.batch, frames, args.reps
        ):
            print(row, flush=True)


if __name__ == "__main__":
    main()
