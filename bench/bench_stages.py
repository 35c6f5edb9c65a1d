"""Where the time goes: each stage of w2v and of transformers, timed alone, side by side.

Stages: the conv feature encoder (w2v's product form and its plain conv1d form,
transformers' conv stack), the feature projection plus positional conv, and the
transformer layers. Each stage's input is computed once; the stage then runs
``--reps`` times, alternating with its counterpart, and the median is reported.

    python -m bench.bench_stages                                   # base, fp32, CPU
    python -m bench.bench_stages --device cuda --dtype bf16 --batch 8 --seconds 10
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch

import w2v
from bench.bench_speed import build
from bench.common import machine_description, median, sync


def time_stages(stages: dict[str, callable], reps: int, device: str) -> dict[str, float]:
    """Median seconds of each callable, run alternately ``reps`` times after a warm-up."""
    import time

    for fn in stages.values():
        fn()
    times = {name: [] for name in stages}
    for _ in range(reps):
        for name, fn in stages.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {name: median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="base", choices=["base", "large"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    device = args.device
    half = args.dtype == "bf16"
    with tempfile.TemporaryDirectory() as tmp:
        ref, path = build(args.size, Path(tmp))
        ref.to(device)
        ours = w2v.load(path, device=device, dtype=torch.bfloat16 if half else torch.float32)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=half)
    x = torch.randn(args.batch, int(args.seconds * 16000), device=device) * 0.1
    fe = ours.feature_extractor

    def under_autocast(fn):  # transformers' bf16 runs use autocast; w2v's a bf16 model
        def run():
            with autocast:
                return fn()

        return run

    with torch.inference_mode():
        feats, _ = fe(x)
        h = ours.encoder.embed(ours.feature_projection(feats), None, True)
        with autocast:
            ref_feats = ref.feature_extractor(x)
            ref_h, _ = ref.feature_projection(ref_feats.transpose(1, 2))

        def ref_embed():
            # transformers' encoder: positional conv + norm, then the layers
            return ref.encoder(ref_h)

        def our_layers():
            y = h
            for layer in ours.encoder.layers:
                y = layer(y)
            return y

        pairs = {
            "conv encoder": {
                "w2v": lambda: fe(x),
                "w2v conv1d form": lambda: fe.plain(x),
                "transformers": under_autocast(lambda: ref.feature_extractor(x)),
            },
            "projection + positional conv": {
                "w2v": lambda: ours.encoder.embed(ours.feature_projection(feats), None, True),
                "transformers": under_autocast(
                    lambda: ref.encoder.pos_conv_embed(
                        ref.feature_projection(ref_feats.transpose(1, 2))[0]
                    )
                ),
            },
            "transformer layers": {"w2v": our_layers, "transformers": under_autocast(ref_embed)},
        }
        print(f"Machine: {machine_description(device)}")
        print(
            f"{args.size}, {args.dtype}, batch {args.batch}, {args.seconds:g} s, "
            f"median of {args.reps} (transformers' layers row includes its positional conv)\n"
        )
        print("| stage | variant | ms |\n|---|---|---|")
        for stage, fns in pairs.items():
            for name, t in time_stages(fns, args.reps, device).items():
                print(f"| {stage} | {name} | {1000 * t:.1f} |", flush=True)


if __name__ == "__main__":
    main()
