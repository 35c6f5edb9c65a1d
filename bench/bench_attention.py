"""Where the attention core's time goes on a CPU: products, softmax, copies.

The attention core of one layer and one item (scores = q·kᵀ/√d, softmax, probabilities·v,
every head; the q/k/v and output projections are not in it) at a model's width, for a
few sequence lengths, in inference mode:

* ``w2v``: w2v's CPU form (``w2v/nn/fast/attention.py``, per item and head two oneDNN
  products over blocks of queries);
* ``sdpa``: torch's ``F.scaled_dot_product_attention`` (its fp32 flash kernel);
* ``products``: the same oneDNN products alone, on operands laid out beforehand;
* ``softmax``: torch's softmax alone over the same score blocks.

``rest`` is ``w2v`` minus ``products`` and ``softmax``: the copies that lay out each
head's operands and gather its output. The GFLOP are the core's 4·T²·D; "% of peak" is
against ONNX Runtime's (MLAS's) fp32 matmul peak measured at the start. A last table
gives how fast torch's softmax and ``exp`` go per thread, the reason the softmax is a
large share of the core: it is bound by the vectorised ``exp``, not by memory.

With ``--onednn-graph``, one transformer layer of a random-init model (base and large
for widths 768 and 1024) is also traced and frozen with TorchScript's oneDNN Graph
fusion on (``torch.jit.enable_onednn_fusion``: fused attention, products with their
bias, GELU and sums), and timed against w2v's eager layer, first at each fixed shape,
then over 30 distinct lengths of 300-700 frames each called once, the way a corpus
arrives (bench/RESULTS.md: why this fusion was not taken).

    python -m bench.bench_attention
    python -m bench.bench_attention --widths 768 --frames 499 2999 --reps 9
    python -m bench.bench_attention --onednn-graph --widths 768
"""

from __future__ import annotations

import argparse
import math
import random
import time
import warnings
from functools import partial

import torch
import torch.nn.functional as F

import w2v
from bench.common import alternating_ms, loadavg, machine_description, ort_matmul_peak
from w2v.nn.fast import attention as fast_attention
from w2v.nn.fast.linear import onednn_linear

HEAD_DIM = 64


def forms(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> dict:
    """name → a function of no arguments computing that part of the core of (1, T, D) q, k, v."""
    t = q.shape[1]
    lengths = torch.tensor([t])
    block = fast_attention.QUERY_BLOCK
    per_head = [
        (
            q[0, :, h * HEAD_DIM : (h + 1) * HEAD_DIM].contiguous(),
            (k[0, :, h * HEAD_DIM : (h + 1) * HEAD_DIM] / math.sqrt(HEAD_DIM)).contiguous(),
            v[0, :, h * HEAD_DIM : (h + 1) * HEAD_DIM].T.contiguous(),
        )
        for h in range(heads)
    ]
    scores = [
        onednn_linear(qh[r : r + block], kh, None)
        for qh, kh, _ in per_head
        for r in range(0, t, block)
    ]

    def products() -> None:
        for qh, kh, vh in per_head:
            for r in range(0, t, block):
                probs = onednn_linear(qh[r : r + block], kh, None)  # stands in for softmax's
                onednn_linear(probs, vh, None)

    def softmax() -> None:
        for s in scores:
            torch.softmax(s, -1)

    split = q.view(1, t, heads, HEAD_DIM).transpose(1, 2)
    ks = k.view(1, t, heads, HEAD_DIM).transpose(1, 2)
    vs = v.view(1, t, heads, HEAD_DIM).transpose(1, 2)
    return {
        "w2v": lambda: fast_attention.attention(q, k, v, heads, lengths),
        "sdpa": lambda: F.scaled_dot_product_attention(split, ks, vs),
        "products": products,
        "softmax": softmax,
    }


def rates(reps: int) -> list[str]:
    """Table rows: torch's softmax and exp, elements per ns, on 1 thread and on all."""
    rows = []
    x = torch.randn(512, 2999)
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        for name, fn in (("softmax", lambda: torch.softmax(x, -1)), ("exp", lambda: x.exp())):
            fn()
            per_ns = x.numel() / alternating_ms({name: fn}, reps * 5)[name] / 1e6
            rows.append(f"| {name} | {n} | {per_ns:.2f} | {per_ns / n:.2f} |")
    torch.set_num_threads(threads)
    return rows


class TracedLayer(torch.nn.Module):
    """A w2v EncoderLayer in plain ops that oneDNN Graph can fuse: ``F.linear``, the
    attention core as matmul · scale → softmax → matmul, ``F.gelu``, ``F.layer_norm``."""

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.layer = layer

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        a = self.layer.attention
        b, t, d = x.shape
        heads, hd = a.num_heads, a.head_dim

        def split(proj: torch.nn.Linear) -> torch.Tensor:
            return F.linear(x, proj.weight, proj.bias).view(b, t, heads, hd).transpose(1, 2)

        q, k, v = split(a.q_proj), split(a.k_proj), split(a.v_proj)
        s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        y = torch.matmul(torch.softmax(s, -1), v).transpose(1, 2).reshape(b, t, d)
        return F.linear(y, a.out_proj.weight, a.out_proj.bias)

    def ff(self, x: torch.Tensor) -> torch.Tensor:
        f = self.layer.feed_forward
        h = F.gelu(F.linear(x, f.intermediate_dense.weight, f.intermediate_dense.bias))
        return F.linear(h, f.output_dense.weight, f.output_dense.bias)

    def norm(self, x: torch.Tensor, ln: torch.nn.Module) -> torch.Tensor:
        return F.layer_norm(x, ln.weight.shape, ln.weight, ln.bias, ln.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if layer.layer_norm_first:
            x = x + self.attend(self.norm(x, layer.layer_norm))
            return x + self.ff(self.norm(x, layer.final_layer_norm))
        x = self.norm(x + self.attend(x), layer.layer_norm)
        return self.norm(x + self.ff(x), layer.final_layer_norm)


def onednn_graph(widths: list[int], frames: list[int], reps: int) -> None:
    """Print the fused layer against w2v's eager layer: fixed shapes, then varying ones."""
    torch.jit.enable_onednn_fusion(True)
    print(
        "\none layer traced for oneDNN Graph against w2v's eager layer (ms, median)\n\n"
        "| model | input | fused ms | w2v ms | speed-up | max diff |\n|---|---|---|---|---|---|"
    )
    names = {768: "wav2vec2-base", 1024: "wav2vec2-large-lv60"}
    for width in widths:
        layer = w2v.from_config(names[width]).eval().encoder.layers[0]
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation warnings
            example = torch.randn(1, frames[0], width)
            fused = torch.jit.freeze(torch.jit.trace(TracedLayer(layer).eval(), (example,)))
            for batch, t in [(1, f) for f in frames] + [(8, frames[0])]:
                x = torch.randn(batch, t, width)
                for _ in range(3):  # profiling runs, then the fused graph for this shape
                    fused(x)
                diff = (fused(x) - layer(x)).abs().max().item()
                ms = alternating_ms({"fused": partial(fused, x), "w2v": partial(layer, x)}, reps)
                a, b = ms["fused"], ms["w2v"]
                print(
                    f"| {names[width]} | {batch} × {t} | {a:.2f} | {b:.2f} | {b / a:.2f}x | "
                    f"{diff:.1e} |",
                    flush=True,
                )
            lengths = random.Random(0).sample(range(300, 701), 30)
            total = {"fused": 0.0, "w2v": 0.0}
            for t in lengths:
                x = torch.randn(1, t, width)
                for name, fn in (("fused", fused), ("w2v", layer)):
                    start = time.perf_counter()
                    fn(x)
                    total[name] += time.perf_counter() - start
            print(
                f"| {names[width]} | 30 lengths of 300-700, once each | "
                f"{1000 * total['fused']:.0f} | {1000 * total['w2v']:.0f} | "
                f"{total['w2v'] / total['fused']:.2f}x | |",
                flush=True,
            )
    torch.jit.enable_onednn_fusion(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[768, 1024])
    parser.add_argument("--frames", type=int, nargs="+", default=[499, 2999])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument(
        "--onednn-graph", action="store_true", help="also time one layer fused by oneDNN Graph"
    )
    args = parser.parse_args()
    peak = ort_matmul_peak()
    print(machine_description("cpu"))
    print(f"ONNX Runtime (MLAS) fp32 matmul peak: {peak:.0f} GFLOP/s; median of {args.reps}\n")
    print(
        "| width | frames | GFLOP | w2v ms | w2v % of peak | sdpa ms | products ms | "
        "products % of peak | softmax ms | rest ms |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    g = torch.Generator().manual_seed(0)
    for width in args.widths:
        for frames in args.frames:
            q, k, v = (torch.randn(1, frames, width, generator=g) for _ in range(3))
            gflop = 4 * frames * frames * width / 1e9
            with torch.inference_mode():
                runs = forms(q, k, v, width // HEAD_DIM)
                for fn in runs.values():
                    fn()
                ms = alternating_ms(runs, args.reps)
            rest = ms["w2v"] - ms["products"] - ms["softmax"]

            def pct(t: float, gflop: float = gflop) -> str:
                return f"{100 * gflop / (t / 1000) / peak:.0f}%" if peak else "-"

            print(
                f"| {width} | {frames} | {gflop:.2f} | {ms['w2v']:.2f} | {pct(ms['w2v'])} | "
                f"{ms['sdpa']:.2f} | {ms['products']:.2f} | {pct(ms['products'])} | "
                f"{ms['softmax']:.2f} | {rest:.2f} |",
                flush=True,
            )
    print("\n| op | threads | elements / ns | per thread |\n|---|---|---|---|")
    print("\n".join(rates(args.reps)))
    if args.onednn_graph:
        onednn_graph(args.widths, args.frames, args.reps)
    print(f"\n{loadavg()} at the end")


if __name__ == "__main__":
    main()
