"""Long audio: peak memory and run time of chunked extraction, 10 min vs 60 min of 16 kHz audio.

Each case runs in a fresh subprocess so its peak resident memory (ru_maxrss) is
its own. The model is a random-init wav2vec2-base; the input is noise held in
memory (a 1-hour float32 input is 230 MB of it); per-layer features are
mean-pooled as they stream out, as `w2v embed --pool mean` does.

    python -m bench.bench_long                 # 10 and 60 minutes
    python -m bench.bench_long --minutes 2 12  # a quicker look
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_case(minutes: float, chunk: float, context: float, threads: int | None) -> dict:
    import torch

    import w2v
    from w2v.longform import iter_chunks

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = w2v.from_config("wav2vec2-base")
    wave = torch.randn(int(minutes * 60 * 16000)) * 0.1
    sums = None
    frames = 0
    window_times = []
    start = last = time.perf_counter()
    with torch.inference_mode():
        for _, states in iter_chunks(
            model, wave, [0, 6, 12], chunk_seconds=chunk, context_seconds=context
        ):
            block = torch.stack([s.double().sum(0) for s in states])
            sums = block if sums is None else sums + block
            frames += states[0].shape[0]
            now = time.perf_counter()
            window_times.append(now - last)
            last = now
    elapsed = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "minutes": minutes,
        "frames": frames,
        "expected_frames": w2v.num_frames(wave.shape[0]),
        "seconds": elapsed,
        "peak_rss_gb": peak_kb / 1024**2,
        "finite": bool(torch.isfinite(sums).all()),
        "windows": len(window_times),
        "median_window_s": sorted(window_times)[len(window_times) // 2],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    ap.add_argument("--chunk-seconds", type=float, default=30.0)
    ap.add_argument("--context-seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--case", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case is not None:
        print(
            json.dumps(run_case(args.case, args.chunk_seconds, args.context_seconds, args.threads))
        )
        return
    results = []
    for minutes in args.minutes:
        cmd = [
            sys.executable,
            "-m",
            "bench.bench_long",
            "--case",
            str(minutes),
            "--chunk-seconds",
            str(args.chunk_seconds),
            "--context-seconds",
            str(args.context_seconds),
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results.append(r)
        print(
            f"{r['minutes']:6.1f} min  {r['seconds']:8.1f} s  peak RSS {r['peak_rss_gb']:.2f} GB  "
            f"frames {r['frames']} (full-context formula {r['expected_frames']})",
            flush=True,
        )
    base = results[0]
    print(
        "\n| audio | run time | time / first | audio ratio | windows | median s / window | "
        "windows × median / first | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base_est = base["windows"] * base["median_window_s"]
    for r in results:
        est = r["windows"] * r["median_window_s"]
        print(
            f"| {r['minutes']:g} min | {r['seconds']:.1f} s | {r['seconds'] / base['seconds']:.2f}x | "
            f"{r['minutes'] / base['minutes']:.1f}x | {r['windows']} | {r['median_window_s']:.2f} | "
            f"{est / base_est:.2f}x | {r['peak_rss_gb']:.2f} GB |"
        )


if __name__ == "__main__":
    main()
