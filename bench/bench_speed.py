"""w2v vs transformers, side by side in one process on the same weights and inputs.

For each case (model size, dtype, batch, clip length) both implementations run
alternately; the table reports audio seconds processed per second, peak memory
above the pre-call level, max |difference| of the final output, and the fraction
of this machine's measured matmul peak that w2v achieves (counting the FLOPs w2v
performs: in fp32 on a CPU its kernel-3 / stride-2 convs use F(3, 2), 7/9 of the
direct products).

    python -m bench.bench_speed                       # the full matrix (long on 2 CPU cores)
    python -m bench.bench_speed --sizes base --seconds 10 --batches 1 --reps 2
    python -m bench.bench_speed --device cuda         # the same on a GPU
    python -m bench.bench_speed --out bench/RESULTS.md

transformers runs with attn_implementation="sdpa"; its bf16 runs use
torch.autocast(bfloat16) on fp32 weights, w2v's bf16 runs a bf16 model whose
norms compute in fp32. With --compile, w2v is also timed under torch.compile
(compilation happens in the warm-up call and is not timed).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import warnings
from pathlib import Path

import torch

import w2v
from bench.common import (
    SIZES,
    machine_description,
    matmul_peak,
    median,
    model_flops,
    timed,
)


def build(size: str, workdir: Path):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(**SIZES[size])
    ref = transformers.Wav2Vec2Model(cfg)
    path = workdir / size
    ref.save_pretrained(path)
    del ref
    ref = transformers.Wav2Vec2Model.from_pretrained(path, attn_implementation="sdpa").eval()
    return ref, path


def cosine_per_layer(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return min(
        torch.nn.functional.cosine_similarity(x.float().flatten(1), y.float().flatten(1), dim=-1)
        .min()
        .item()
        for x, y in zip(a, b, strict=True)
    )


def run_case(ref, variants, config, dtype, batch, seconds, reps, device, peaks, min_time=0.0):
    """variants: name → model for this dtype ("w2v", optionally "compiled", and "fp32" for cos)."""
    x = torch.randn(batch, int(seconds * 16000), device=device) * 0.1
    cpu = x.device.type == "cpu"
    autocast = torch.autocast(
        device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16"
    )
    xin = x  # w2v's first conv layer takes the fp32 waveform whatever the model's dtype

    def run_ref():
        with torch.inference_mode(), autocast:
            return ref(x).last_hidden_state

    def runner(model):
        def run():
            with torch.inference_mode():
                return model(xin)[0]

        return run

    ours = {name: runner(variants[name]) for name in ("w2v", "compiled") if name in variants}
    run_ref()
    for run in ours.values():
        run()  # warm-up (and compilation)
    times = {name: [] for name in ["ref", *ours]}
    mems = {"ref": [], "w2v": []}
    done = 0
    while done < reps or sum(times["ref"]) < min_time:  # short cases: repeat for stable medians
        done += 1
        t, m, out_ref = timed(run_ref, device)
        times["ref"].append(t), mems["ref"].append(m)
        for name, run in ours.items():
            t, m, out = timed(run, device)
            times[name].append(t)
            if name == "w2v":
                mems["w2v"].append(m)
                out_ours = out
    audio = batch * seconds
    tput = {name: audio / median(ts) for name, ts in times.items()}
    flops = model_flops(config, batch, x.shape[1], winograd=dtype == "fp32" and cpu)
    row = dict(
        tput=tput,
        ref_mem=max(mems["ref"]) / 2**20,
        ours_mem=max(mems["w2v"]) / 2**20,
        diff=(out_ref.float() - out_ours.float()).abs().max().item(),
        peak_frac=flops * tput["w2v"] / audio / 1e9 / peaks[dtype],
        cos=float("nan"),
    )
    if dtype == "bf16":
        with torch.inference_mode():
            full, _ = variants["fp32"].hidden_states(x)
            half, _ = variants["w2v"].hidden_states(xin)
        row["cos"] = cosine_per_layer(half, full)
    return row


def early_exit(ours, batch, seconds, reps, device):
    """Time of extract_features(num_layers=N/2) relative to the full forward: the ratio of
    medians over at least 5 alternating runs of each."""
    x = torch.randn(batch, int(seconds * 16000), device=device) * 0.1
    half = ours.config.num_layers // 2
    full, part = [], []
    with torch.inference_mode():
        ours(x), ours.extract_features(x, num_layers=half)
        for _ in range(max(reps, 5)):
            full.append(timed(lambda: ours(x), device)[0])
            part.append(timed(lambda: ours.extract_features(x, num_layers=half), device)[0])
    return half, median(part) / median(full)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", nargs="+", default=["base", "large"], choices=list(SIZES))
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--seconds", nargs="+", type=float, default=[10, 60])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--min-time",
        type=float,
        default=8.0,
        help="repeat a case (beyond --reps) until transformers has run this many seconds",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="also time w2v under torch.compile")
    ap.add_argument(
        "--tune-allocator",
        action="store_true",
        help="call w2v.tune_allocator('reuse') first (process-wide: both sides benefit; the RSS-based "
        "peak memory columns then read near 0 once memory is being reused)",
    )
    ap.add_argument("--out", type=Path, help="append the tables to this markdown file")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    tuned = w2v.tune_allocator("reuse") if args.tune_allocator else False
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device

    peaks = {
        "fp32": matmul_peak(torch.float32, device),
        "bf16": matmul_peak(torch.bfloat16, device),
    }
    lines = [
        f"Machine: {machine_description(device)}"
        + ("; glibc allocator in reuse mode (w2v.tune_allocator) for both sides" if tuned else ""),
        f"Measured matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s",
        "",
        "| model | dtype | batch | clip | transformers audio s/s | w2v audio s/s | speed-up | "
        + ("w2v compiled audio s/s | compiled speed-up | " if args.compile else "")
        + "transformers peak MiB | w2v peak MiB | max abs diff | w2v % of matmul peak | "
        "bf16 cos vs fp32 |",
        "|---" * (14 if args.compile else 12) + "|",
    ]
    print("\n".join(lines), flush=True)
    extra = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            ref, path = build(size, Path(tmp))
            ref.to(device)
            fp32 = w2v.load(path, device=device)
            for dtype in args.dtypes:
                torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
                variants = {"fp32": fp32, "w2v": w2v.load(path, device=device, dtype=torch_dtype)}
                if args.compile:
                    variants["compiled"] = w2v.load(
                        path, device=device, dtype=torch_dtype, compile=True
                    )
                for batch in args.batches:
                    for seconds in args.seconds:
                        r = run_case(
                            ref,
                            variants,
                            fp32.config,
                            dtype,
                            batch,
                            seconds,
                            args.reps,
                            device,
                            peaks,
                            args.min_time,
                        )
                        t = r["tput"]
                        fast = t.get("compiled", float("nan"))
                        compiled = f"{fast:.1f} | {fast / t['ref']:.2f}x | " if args.compile else ""
                        line = (
                            f"| {size} | {dtype} | {batch} | {seconds:g} s | {t['ref']:.1f} | "
                            f"{t['w2v']:.1f} | **{t['w2v'] / t['ref']:.2f}x** | "
                            + compiled
                            + f"{r['ref_mem']:.0f} | {r['ours_mem']:.0f} | {r['diff']:.1e} | "
                            f"{100 * r['peak_frac']:.0f}% | {r['cos']:.5f} |"
                        )
                        lines.append(line)
                        print(line, flush=True)
                        gc.collect()
                del variants
                gc.collect()
            k, ratio = early_exit(fp32, 1, min(args.seconds), args.reps, device)
            extra.append(
                f"{size}: extract_features(num_layers={k}) takes {ratio:.2f} of the full forward "
                f"({fp32.config.num_layers} layers), fp32, batch 1, {min(args.seconds):g} s"
            )
            print(extra[-1], flush=True)
            del ref, fp32
            gc.collect()
    if args.out:
        with open(args.out, "a") as f:
            f.write(
                "\n## bench_speed.py "
                + " ".join(sys.argv[1:])
                + "\n\n"
                + "\n".join(lines + [""] + extra)
                + "\n"
            )


if __name__ == "__main__":
    main()
