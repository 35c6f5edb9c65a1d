"""The positional convolution's forms side by side: speed and accuracy.

wav2vec2's positional convolution (kernel 128, 16 groups) at base and large width, on
time-major activations as the model holds them, computed as

* ``conv1d``: plain channel-major ``F.conv1d`` (transformers' form);
* ``direct``: oneDNN's direct convolution of the channels-last view with a
  channels-last weight (w2v's CPU form before the FFT, and its form for short kernels);
* ``fft N``: w2v's FFT form (``w2v/nn/fast/fft_conv.py``) with blocks of N frames,
  its kernel transform made beforehand (the model keeps it); N = 384 is what w2v uses.

Each form runs alternately with the others, ``--reps`` times after a warm-up, in
inference mode; the table gives the median ms, the speed-up over ``direct``, and the max
|error| against a float64 convolution of the same inputs.

    python -m bench.bench_positional
    python -m bench.bench_positional --widths 768 --inputs 1x499 8x499 --reps 9
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F

from bench.common import alternating_ms, loadavg, machine_description
from w2v.nn.fast import fft_conv
from w2v.nn.functional import channels_last_weight, conv1d_channels_last

KERNEL, GROUPS = 128, 16
BLOCKS = (256, 384, 512, 1024)


def forms(weight: torch.Tensor, bias: torch.Tensor) -> dict:
    padding = KERNEL // 2
    cl = channels_last_weight(weight)
    out = {
        "conv1d": lambda x: F.conv1d(x, weight, bias, padding=padding, groups=GROUPS),
        "direct": lambda x: conv1d_channels_last(x, cl, bias, padding=padding, groups=GROUPS),
    }
    for n in BLOCKS:
        transform = fft_conv.kernel_transform(weight, GROUPS, block=n)
        out[f"fft {n}"] = lambda x, t=transform: fft_conv.conv1d(x, t, bias, KERNEL, padding)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[768, 1024])
    parser.add_argument(
        "--inputs", nargs="+", default=["1x499", "8x499", "1x2999"], help="BATCHxFRAMES"
    )
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(machine_description("cpu"))
    print(
        f"kernel {KERNEL}, {GROUPS} groups; median of {args.reps}; error: max |difference| "
        "to a float64 convolution\n"
    )
    print("| width | input | form | ms | vs direct | max error |\n|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for width in args.widths:
        weight = torch.randn(width, width // GROUPS, KERNEL, generator=g) / 100
        bias = torch.randn(width, generator=g) / 10
        runs = forms(weight, bias)
        for spec in args.inputs:
            batch, frames = (int(v) for v in spec.split("x"))
            x = torch.randn(batch, frames, width, generator=g).transpose(1, 2)  # time-major
            ref = F.conv1d(
                x.double(), weight.double(), bias.double(), padding=KERNEL // 2, groups=GROUPS
            )
            errors = {}
            with torch.inference_mode():
                for name, fn in runs.items():
                    errors[name] = (fn(x).double() - ref).abs().max().item()
                ms = alternating_ms({name: partial(fn, x) for name, fn in runs.items()}, args.reps)
            for name in runs:
                print(
                    f"| {width} | {batch} × {frames} | {name} | {ms[name]:.2f} | "
                    f"{ms['direct'] / ms[name]:.2f}x | {errors[name]:.2e} |",
                    flush=True,
                )
    print(f"\n{loadavg()} at the end")


if __name__ == "__main__":
    main()
