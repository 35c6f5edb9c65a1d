"""w2v vs transformers, side by side in one process on the same weights and inputs.

For each case (model size, dtype, batch, clip length) both implementations run
alternately; the table reports audio seconds processed per second, peak memory
above the pre-call level, max |difference| of the final output, and the fraction
of this machine's measured matmul peak that w2v achieves.

    python bench/bench_speed.py                       # the full matrix (long on 2 CPU cores)
    python bench/bench_speed.py --sizes base --seconds 10 --batches 1 --reps 2
    python bench/bench_speed.py --device cuda         # the same on a GPU
    python bench/bench_speed.py --out bench/RESULTS.md

transformers runs with attn_implementation="sdpa"; its bf16 runs use
torch.autocast(bfloat16) on fp32 weights, w2v's bf16 runs a bf16 model whose
norms compute in fp32.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description, matmul_peak, median, model_flops, timed  # noqa: E402

import w2v  # noqa: E402

SIZES = {
    "base": dict(),  # transformers defaults: wav2vec2-base
    "large": dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
    ),  # large-lv60 / XLS-R 300M
}


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


def run_case(ref, ours_fp32, ours_bf16, config, dtype, batch, seconds, reps, device, peaks):
    x = torch.randn(batch, int(seconds * 16000), device=device) * 0.1
    ours = ours_fp32 if dtype == "fp32" else ours_bf16
    autocast = torch.autocast(
        device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16"
    )
    xin = x if dtype == "fp32" else x.to(torch.bfloat16)

    def run_ref():
        with torch.inference_mode(), autocast:
            return ref(x).last_hidden_state

    def run_ours():
        with torch.inference_mode():
            return ours(xin)[0]

    run_ref(), run_ours()  # warm-up
    t_ref, t_ours, m_ref, m_ours = [], [], [], []
    for _ in range(reps):
        t, m, out_ref = timed(run_ref, device)
        t_ref.append(t), m_ref.append(m)
        t, m, out_ours = timed(run_ours, device)
        t_ours.append(t), m_ours.append(m)
    diff = (out_ref.float() - out_ours.float()).abs().max().item()
    audio = batch * seconds
    row = dict(
        ref_tput=audio / median(t_ref),
        ours_tput=audio / median(t_ours),
        ref_mem=max(m_ref) / 2**20,
        ours_mem=max(m_ours) / 2**20,
        diff=diff,
        peak_frac=model_flops(config, batch, x.shape[1]) / median(t_ours) / 1e9 / peaks[dtype],
    )
    if dtype == "bf16":
        with torch.inference_mode():
            full, _ = ours_fp32.hidden_states(x)
            half, _ = ours_bf16.hidden_states(xin)
        row["cos"] = cosine_per_layer(half, full)
    return row


def early_exit(ours, batch, seconds, reps, device):
    """Time of extract_features(num_layers=N/2) relative to the full forward."""
    x = torch.randn(batch, int(seconds * 16000), device=device) * 0.1
    half = ours.config.num_layers // 2
    with torch.inference_mode():
        ours(x), ours.extract_features(x, num_layers=half)
        full = median([timed(lambda: ours(x), device)[0] for _ in range(reps)])
        part = median(
            [
                timed(lambda: ours.extract_features(x, num_layers=half), device)[0]
                for _ in range(reps)
            ]
        )
    return half, part / full


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", nargs="+", default=["base", "large"], choices=list(SIZES))
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--seconds", nargs="+", type=float, default=[10, 60])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, help="append the tables to this markdown file")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device

    peaks = {
        "fp32": matmul_peak(torch.float32, device),
        "bf16": matmul_peak(torch.bfloat16, device),
    }
    lines = [
        f"Machine: {machine_description(device)}",
        f"Measured matmul peak (2048³): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s",
        "",
        "| model | dtype | batch | clip | transformers audio s/s | w2v audio s/s | speed-up | "
        "transformers peak MiB | w2v peak MiB | max abs diff | w2v % of matmul peak | bf16 cos vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    extra = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            ref, path = build(size, Path(tmp))
            ref.to(device)
            ours_fp32 = w2v.load(path, device=device)
            ours_bf16 = (
                w2v.load(path, device=device, dtype=torch.bfloat16)
                if "bf16" in args.dtypes
                else None
            )
            for dtype in args.dtypes:
                for batch in args.batches:
                    for seconds in args.seconds:
                        r = run_case(
                            ref,
                            ours_fp32,
                            ours_bf16,
                            ours_fp32.config,
                            dtype,
                            batch,
                            seconds,
                            args.reps,
                            device,
                            peaks,
                        )
                        line = (
                            f"| {size} | {dtype} | {batch} | {seconds:g} s | {r['ref_tput']:.1f} | "
                            f"{r['ours_tput']:.1f} | **{r['ours_tput'] / r['ref_tput']:.2f}x** | "
                            f"{r['ref_mem']:.0f} | {r['ours_mem']:.0f} | {r['diff']:.1e} | "
                            f"{100 * r['peak_frac']:.0f}% | {r.get('cos', float('nan')):.5f} |"
                        )
                        lines.append(line)
                        print(line, flush=True)
                        gc.collect()
            k, ratio = early_exit(ours_fp32, 1, min(args.seconds), args.reps, device)
            extra.append(
                f"{size}: extract_features(num_layers={k}) takes {ratio:.2f} of the full forward "
                f"({ours_fp32.config.num_layers} layers), fp32, batch 1, {min(args.seconds):g} s"
            )
            print(extra[-1], flush=True)
            del ref, ours_fp32, ours_bf16
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
