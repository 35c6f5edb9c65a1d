"""Gradient checkpointing of the transformer layers: peak memory and time of one training
step (forward + backward of the wav2vec 2.0 loss), with and without it.

Each case runs in a fresh subprocess so that its peak memory is its own: peak resident
memory (VmHWM) on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU. The model is a
random-init config (default wav2vec2-base) in train mode with pretraining parts; the
input is noise; masks and negatives as in pretraining (p=0.65, length 10, 100 negatives).
The gradients of the two cases are compared too (they must agree within 1e-6 relative).

    python -m bench.bench_checkpointing                       # base, 2 x 15 s
    python -m bench.bench_checkpointing --batch 1 --seconds 5 --config wav2vec2-base
    python -m bench.bench_checkpointing --device cuda --batch 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_case(args: argparse.Namespace, checkpointing: bool, grads_out: str) -> dict:
    import torch

    import w2v
    from w2v.nn.pretraining import PretrainingConfig
    from w2v.train import compute_mask_indices, sample_negative_indices, wav2vec2_loss

    torch.manual_seed(0)
    model = w2v.from_config(args.config).add_pretraining(PretrainingConfig())
    model.to(args.device).train()
    model.gradient_checkpointing = checkpointing
    samples = int(args.seconds * 16000)
    x = torch.randn(args.batch, samples, device=args.device) * 0.1
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, w2v.num_frames(samples, model.config))
    mask = compute_mask_indices(shape, 0.65, 10, min_masks=2, generator=g)
    negatives = sample_negative_indices(shape, 100, mask_time_indices=mask, generator=g)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    torch.manual_seed(1)  # the same Gumbel noise in both cases
    out = wav2vec2_loss(
        model, x, mask_time_indices=mask.to(args.device),
        sampled_negative_indices=negatives.to(args.device),
    )  # fmt: skip
    out["loss"].backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    grads = {k: p.grad.detach().cpu() for k, p in model.named_parameters() if p.grad is not None}
    torch.save(grads, grads_out)
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        with open("/proc/self/status") as f:
            peak_mb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    return {"checkpointing": checkpointing, "seconds": seconds, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="wav2vec2-base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", choices=("plain", "checkpointed"), help=argparse.SUPPRESS)
    parser.add_argument("--grads", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # the child process
        print(json.dumps(run_case(args, args.case == "checkpointed", args.grads)))
        return
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in ("plain", "checkpointed"):
            grads = str(Path(tmp) / f"{case}.pt")
            cmd = [sys.executable, "-m", "bench.bench_checkpointing", *sys.argv[1:]]
            cmd += ["--case", case, "--grads", grads]
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        a = torch.load(Path(tmp) / "plain.pt")
        b = torch.load(Path(tmp) / "checkpointed.pt")
        worst = max(((a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-12)).item() for k in a)
    print(f"{args.config}, batch {args.batch} x {args.seconds:g} s, {args.device}")
    print("| gradient checkpointing | peak memory (MiB) | step time (s) |")
    print("|---|---|---|")
    for r in rows:
        print(
            f"| {'on' if r['checkpointing'] else 'off'} | {r['peak_mb']:.0f} | {r['seconds']:.2f} |"
        )
    print(f"largest relative gradient difference: {worst:.1e}")


if __name__ == "__main__":
    main()
