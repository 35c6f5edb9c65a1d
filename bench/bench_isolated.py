"""One case of bench_speed with each side in its own process, for cases whose sides do
not fit in memory together (wav2vec2-large, 8 × 60 s: ONNX Runtime on the transformers
model alone peaks at 19 GiB, so on a 24 GiB machine the sides cannot share a process).

The weights are made once (the same random-init checkpoint for every side); then each
side runs in a fresh child process, one after the other: a warm-up call, then ``--reps``
timed calls of every layer's states. Printed per side: audio seconds per second (median),
the ratio to the first side, and the child's peak resident memory (which includes the
model and its start-up, unlike bench_speed's peak above the pre-call level).

    python -m bench.bench_isolated --size large --batch 8 --seconds 60
    python -m bench.bench_isolated --size base --batch 1 --seconds 10 --reps 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from bench.common import loadavg, machine_description, median

SIDES = ("w2v", "transformers-ort", "w2v-ort", "transformers")


def child(side: str, workdir: Path, batch: int, seconds: float, reps: int) -> dict:
    """Run one side in this process; returns its timings and peak RSS."""
    import resource

    import w2v
    from bench.bench_speed import export_transformers, ort_session

    warnings.filterwarnings("ignore")
    x = torch.randn(batch, int(seconds * 16000), generator=torch.Generator().manual_seed(0))
    if side in ("transformers", "transformers-ort"):
        import transformers

        ref = transformers.Wav2Vec2Model.from_pretrained(
            workdir / "model", attn_implementation="sdpa"
        ).eval()
        if side == "transformers":

            def run():
                with torch.inference_mode():
                    return ref(x, output_hidden_states=True).hidden_states

        else:
            session = ort_session(export_transformers(ref, workdir / "hf.onnx"), None)
            del ref

            def run():
                return session.run(None, {session.get_inputs()[0].name: x.numpy()})

    elif side == "w2v":
        model = w2v.load(workdir / "model")

        def run():
            with torch.inference_mode():
                return model.hidden_states(x)[0]

    else:  # w2v-ort
        model = w2v.load(workdir / "model", backend="onnxruntime")

        def run():
            return model.hidden_states(x)[0]

    out = run()  # warm-up
    del out
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
        del out
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"times": times, "peak_gib": peak_gib}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="large", choices=["base", "large"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--sides", nargs="+", default=["w2v", "transformers-ort"], choices=SIDES)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = child(args.child, args.workdir, args.batch, args.seconds, args.reps)
        print("RESULT " + json.dumps(result))
        return
    from bench.bench_speed import build

    print(f"Machine: {machine_description('cpu')}; {loadavg()} at the start")
    with tempfile.TemporaryDirectory() as tmp_name:
        workdir = Path(tmp_name)
        ref, path = build(args.size, workdir)
        del ref
        path.rename(workdir / "model")
        audio = args.batch * args.seconds
        print(
            f"\n{args.size}, batch {args.batch} × {args.seconds:g} s, fp32, each side in its own "
            f"process, median of {args.reps}\n\n| side | audio s/s | vs {args.sides[0]} "
            "| peak RSS GiB |\n|---|---|---|---|"
        )
        first = None
        for side in args.sides:
            cmd = [sys.executable, "-m", "bench.bench_isolated", "--child", side]
            cmd += ["--workdir", str(workdir), "--batch", str(args.batch)]
            cmd += ["--seconds", str(args.seconds), "--reps", str(args.reps)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                lines = proc.stderr.replace("\r", "\n").strip().splitlines()
                tail = lines[-1] if lines else "(no output)"
                if proc.returncode == -9:
                    tail = "killed, most likely out of memory"
                print(f"| {side} | failed (exit {proc.returncode}: {tail}) | | |", flush=True)
                continue
            result = json.loads(line[len("RESULT ") :])
            tput = audio / median(result["times"])
            first = first or tput
            print(
                f"| {side} | {tput:.2f} | **{tput / first:.2f}x** | {result['peak_gib']:.1f} |",
                flush=True,
            )
        print(f"\n{loadavg()} at the end")


if __name__ == "__main__":
    main()
