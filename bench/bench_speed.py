"""w2v vs transformers vs ONNX Runtime, side by side in one process on the same weights.

For each case (model size, batch, clip length) every side runs alternately on the same
input; the table gives audio seconds processed per second, the speed-up over
transformers fp32 of the same case, peak memory above the pre-call level, the fraction
of the machine's best measured fp32 matmul peak (the larger of torch's and ONNX
Runtime's), max |difference| of the last layer to transformers fp32, and for reduced
precision the lowest cosine similarity to its own fp32 run over every layer and frame.

Sides (``--sides``; per precision, ``--dtypes``):

* fp32: ``transformers`` (``attn_implementation="sdpa"``), ``w2v`` (PyTorch),
  ``w2v-ort`` (``w2v.load(..., backend="onnxruntime")``: w2v's own graph, fused attention,
  exact mode), ``transformers-ort`` (transformers' model through the legacy
  ``torch.onnx.export`` and ONNX Runtime with every graph optimisation);
* bf16: transformers under ``torch.autocast``, w2v as a bf16 model (norms in fp32);
  ONNX Runtime's CPU provider has no bf16 matrix products, so no ORT side;
* int8: dynamic int8 quantisation of the Linear layers (weights int8, activations
  quantised per call): ``torch.ao.quantization.quantize_dynamic`` for the PyTorch sides,
  ``onnxruntime.quantization.quantize_dynamic`` (MatMul) for the ORT sides.

    python -m bench.bench_speed                  # the full matrix (long on 2 CPU cores)
    python -m bench.bench_speed --quick          # base, batch 1, 10 s, fp32 and int8
    python -m bench.bench_speed --sizes base --seconds 10 --batches 1 8 --reps 3
    python -m bench.bench_speed --out bench/RESULTS.md

With --compile, w2v is also timed under torch.compile (compiled in the warm-up call).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import w2v
from bench.common import (
    SIZES,
    loadavg,
    machine_description,
    matmul_peak,
    median,
    model_flops,
    ort_matmul_peak,
    timed,
)
from w2v.onnx import OnnxModel, save_onnx

SIDES = ("transformers", "w2v", "w2v-ort", "transformers-ort")
DTYPES = ("fp32", "bf16", "int8")
Runner = Callable[[torch.Tensor], list[torch.Tensor]]
"""(batch, samples) → every layer's states, 0..N (transformers' ``hidden_states``)."""


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


def ort_session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_transformers(ref, path: Path) -> Path:
    """transformers' model, every hidden state as an output, through the legacy exporter
    (the faster of the two exporters for it, see bench/RESULTS.md)."""

    class States(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x, output_hidden_states=True).hidden_states

    n = ref.config.num_hidden_layers + 1
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            States(ref).eval(),
            (torch.randn(1, 16000),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=[f"h{i}" for i in range(n)],
            dynamic_axes={"x": {0: "batch", 1: "samples"}},
            opset_version=17,
        )
    return path


def quantize_onnx(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
    )
    return dst


def quantize_torch(model: torch.nn.Module) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def runners(size, dtypes, sides, ref, path, tmp, threads, compile) -> dict[tuple[str, str], Runner]:
    """(side, dtype) → runner, for the sides and dtypes asked that exist."""
    import copy

    out: dict[tuple[str, str], Runner] = {}
    n = ref.config.num_hidden_layers

    def hf(model, autocast=False):
        def run(x):
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
                return list(model(x, output_hidden_states=True).hidden_states)

        return run

    def ours(model):
        def run(x):
            with torch.inference_mode():
                return model.hidden_states(x)[0]

        return run

    def session_runner(session):
        def run(x):
            outs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            return [torch.from_numpy(a) for a in outs[: n + 1]]

        return run

    fp32 = w2v.load(path, device="cpu")
    for dtype in dtypes:
        if "transformers" in sides:
            model = {"fp32": ref, "bf16": ref, "int8": None}[dtype]
            if dtype == "int8":
                model = quantize_torch(copy.deepcopy(ref))
            out["transformers", dtype] = hf(model, autocast=dtype == "bf16")
        if "w2v" in sides:
            model = {"fp32": fp32, "bf16": None, "int8": None}[dtype]
            if dtype == "bf16":
                model = w2v.load(path, dtype=torch.bfloat16)
            if dtype == "int8":
                model = quantize_torch(w2v.load(path))
            out["w2v", dtype] = ours(model)
            if compile and dtype != "int8":
                out["w2v-compiled", dtype] = ours(
                    w2v.load(path, dtype=torch.bfloat16 if dtype == "bf16" else None).compile()
                )
        if dtype == "bf16":
            continue  # ONNX Runtime's CPU provider computes no bf16 products
        if "w2v-ort" in sides:
            graph = tmp / f"{size}-w2v.onnx"
            if not graph.exists():
                t = time.perf_counter()
                save_onnx(fp32, graph)
                print(f"({size}: w2v export --onnx took {time.perf_counter() - t:.0f} s)")
            if dtype == "int8":
                graph = quantize_onnx(graph, tmp / f"{size}-w2v-int8.onnx")
            model = OnnxModel.from_file(graph, threads=threads)
            out["w2v-ort", dtype] = ours(model)
        if "transformers-ort" in sides:
            graph = tmp / f"{size}-hf.onnx"
            if not graph.exists():
                export_transformers(ref, graph)
            if dtype == "int8":
                graph = quantize_onnx(graph, tmp / f"{size}-hf-int8.onnx")
            out["transformers-ort", dtype] = session_runner(ort_session(graph, threads))
    return out


def min_cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Lowest cosine similarity over every layer and frame."""
    return min(
        torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1).min().item()
        for x, y in zip(a, b, strict=True)
    )


def run_case(run, config, batch, seconds, reps, min_time, peak):
    """Rows of one (batch, clip) case: every runner alternately on the same input."""
    x = torch.randn(batch, int(seconds * 16000)) * 0.1
    outs = {key: fn(x) for key, fn in run.items()}  # warm-up (and compilation)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in run}
    mems: dict[tuple[str, str], int] = dict.fromkeys(run, 0)
    ref_key = next(iter(run))  # transformers fp32 when asked for
    done = 0
    while done < reps or sum(times[ref_key]) < min_time:
        done += 1
        for key, fn in run.items():
            t, m, _ = timed(lambda fn=fn: fn(x), "cpu")
            times[key].append(t)
            mems[key] = max(mems[key], m)
    audio = batch * seconds
    rows = []
    for (side, dtype), ts in times.items():
        tput = audio / median(ts)
        fp32_key = (side, "fp32") if (side, "fp32") in outs else None
        flops = model_flops(config, batch, x.shape[1])
        rows.append(
            dict(
                side=side,
                dtype=dtype,
                tput=tput,
                speedup=tput / (audio / median(times[ref_key])),
                mem=mems[side, dtype] / 2**20,
                peak=flops * tput / audio / 1e9 / peak if dtype == "fp32" else float("nan"),
                diff=(outs[side, dtype][-1].float() - outs[ref_key][-1].float()).abs().max().item(),
                cos=(
                    min_cosine(outs[side, dtype], outs[fp32_key])
                    if fp32_key and dtype != "fp32"
                    else float("nan")
                ),
            )
        )
    return rows


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.0f}%"


def _num(x: float, spec: str) -> str:
    return "-" if x != x else format(x, spec)


def early_exit(path, batch, seconds, reps):
    """Time of extract_features(num_layers=N/2) relative to the full forward (medians of at
    least 5 alternating runs)."""
    ours = w2v.load(path)
    x = torch.randn(batch, int(seconds * 16000)) * 0.1
    half = ours.config.num_layers // 2
    full, part = [], []
    with torch.inference_mode():
        ours(x), ours.extract_features(x, num_layers=half)
        for _ in range(max(reps, 5)):
            full.append(timed(lambda: ours(x), "cpu")[0])
            part.append(timed(lambda: ours.extract_features(x, num_layers=half), "cpu")[0])
    return ours.config.num_layers, half, median(part) / median(full)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", nargs="+", default=["base", "large"], choices=list(SIZES))
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    ap.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--seconds", nargs="+", type=float, default=[10, 60])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--min-time",
        type=float,
        default=8.0,
        help="repeat a case (beyond --reps) until transformers fp32 has run this many seconds",
    )
    ap.add_argument(
        "--quick", action="store_true", help="base, batch 1, 10 s, fp32 and int8, 2 reps"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads")
    ap.add_argument("--compile", action="store_true", help="also time w2v under torch.compile")
    ap.add_argument("--no-early-exit", action="store_true", help="skip the extract_features ratio")
    ap.add_argument("--out", type=Path, help="append the tables to this markdown file")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.batches, args.seconds = ["base"], [1], [10]
        args.dtypes, args.reps, args.min_time = ["fp32", "int8"], 2, 0.0
        args.no_early_exit = True
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    peaks = {"torch": matmul_peak(torch.float32, "cpu"), "onnxruntime": ort_matmul_peak()}
    peak = max(peaks.values())
    lines = [
        f"Machine: {machine_description('cpu')}; {loadavg()} at the start",
        f"Measured fp32 matmul peak: torch {peaks['torch']:.0f} GFLOP/s, ONNX Runtime (MLAS) "
        f"{peaks['onnxruntime']:.0f} GFLOP/s; '% of peak' uses the larger, {peak:.0f}",
        "",
        "| model | batch | clip | side | dtype | audio s/s | vs transformers fp32 | peak MiB "
        "| % of fp32 peak | max abs diff to transformers fp32 | min cos to own fp32 |",
        "|---" * 11 + "|",
    ]
    print("\n".join(lines), flush=True)
    extra = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for size in args.sizes:
            ref, path = build(size, tmp)
            config = w2v.load(path).config
            run = runners(size, args.dtypes, args.sides, ref, path, tmp, args.threads, args.compile)
            # transformers fp32 first: the reference of every row
            run = dict(sorted(run.items(), key=lambda kv: kv[0] != ("transformers", "fp32")))
            for batch in args.batches:
                for seconds in args.seconds:
                    for r in run_case(run, config, batch, seconds, args.reps, args.min_time, peak):
                        line = (
                            f"| {size} | {batch} | {seconds:g} s | {r['side']} | {r['dtype']} | "
                            f"{r['tput']:.1f} | **{r['speedup']:.2f}x** | {r['mem']:.0f} | "
                            f"{_pct(r['peak'])} | {r['diff']:.1e} | {_num(r['cos'], '.5f')} |"
                        )
                        lines.append(line)
                        print(line, flush=True)
                    print(f"({loadavg()})", flush=True)
                    gc.collect()
            del run, ref
            gc.collect()
            if not args.no_early_exit:
                n, k, ratio = early_exit(path, 1, min(args.seconds), args.reps)
                extra.append(
                    f"{size}: extract_features(num_layers={k}) takes {ratio:.2f} of the full "
                    f"forward ({n} layers), w2v fp32, batch 1, {min(args.seconds):g} s"
                )
                print(extra[-1], flush=True)
    extra.append(f"{loadavg()} at the end")
    print(extra[-1])
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
    np.seterr(all="ignore")
    main()
