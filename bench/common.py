"""Shared helpers for the benchmarks: timing, peak memory, FLOP counts, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable

import torch

from w2v.config import Config, num_frames

# transformers Wav2Vec2Config kwargs of the benchmarked sizes
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


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory above the level at entry: RSS sampled every 2 ms on CPU, the allocator's peak on CUDA."""

    def __init__(self, device: str):
        self.device = device
        self.peak = 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = _rss_bytes()
        self._stop = threading.Event()
        self._max = self._base

        def sample():
            while not self._stop.is_set():
                self._max = max(self._max, _rss_bytes())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            self.peak = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, _rss_bytes()) - self._base


SETTLE_SECONDS = 0.2
"""Pause before each timed call. Both runtimes' worker threads keep spinning for a while
after a call returns (ONNX Runtime's intra-op pool, OpenMP's): timed right after another
side, a side shares the two cores with them, which cost w2v 5-10% against ONNX Runtime
in our alternating runs."""


def settle() -> None:
    """Let the previous call's spinning worker threads go idle (:data:`SETTLE_SECONDS`)."""
    time.sleep(SETTLE_SECONDS)


def timed(fn, device: str) -> tuple[float, int, object]:
    """(seconds, peak bytes, result) of one call, after :func:`settle`."""
    settle()
    sync(device)
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        out = fn()
        sync(device)
        elapsed = time.perf_counter() - start
    return elapsed, mem.peak, out


def median(xs):
    return statistics.median(xs)


def alternating_ms(runs: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median milliseconds of each no-argument function, over ``reps`` rounds that call
    every one in turn, so a slow spell of the machine falls on all of them alike (no
    warm-up: the caller's)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(ts) for name, ts in times.items()}


def model_flops(config: Config, batch: int, samples: int) -> float:
    """Multiply-adds × 2 of one forward pass (conv encoder, projection, pos conv, layers),
    direct convolutions, as every side computes them."""
    flops = 0.0
    length = samples
    c_in = 1
    for c, k, s in zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=True):
        length = (length - k) // s + 1
        flops += 2 * c_in * c * k * length
        c_in = c
    t = num_frames(samples, config)
    d, f = config.hidden_size, config.intermediate_size
    flops += 2 * c_in * d * t
    if config.pos_conv == "stack":
        flops += (
            config.pos_conv_depth
            * 2
            * d
            * (d // config.pos_conv_groups)
            * config.pos_conv_kernel
            * t
        )
    else:
        flops += 2 * d * (d // config.pos_conv_groups) * config.pos_conv_kernel * t
    per_layer = 2 * t * d * d * 4 + 2 * 2 * t * t * d + 2 * 2 * t * d * f
    flops += config.num_layers * per_layer
    return flops * batch


def matmul_peak(dtype: torch.dtype, device: str, reps: int = 5) -> float:
    """The machine's practical matmul peak for ``dtype``, GFLOP/s: the best of a square
    2048³ product and a (4096 × 768) @ (768 × 3072) one (the shape of a transformer
    feed-forward layer), and on a GPU an 8192³ one, each the fastest of ``reps`` runs."""
    best = 0.0
    shapes = [(2048, 2048, 2048), (4096, 768, 3072)]
    if device.startswith("cuda"):
        shapes.append((8192, 8192, 8192))  # a GPU needs a bigger product to reach its peak
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(k, n, device=device).to(dtype)
        for _ in range(2):
            a @ b
        for _ in range(reps):
            sync(device)
            t = time.perf_counter()
            a @ b
            sync(device)
            best = max(best, 2 * m * k * n / (time.perf_counter() - t) / 1e9)
    return best


def machine_description(device: str) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = (
        f"{cpu}; {os.cpu_count()} logical CPUs; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); Python {platform.python_version()}"
    )
    if device.startswith("cuda"):
        desc += (
            f"; GPU {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}; TF32 "
            f"matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN {torch.backends.cudnn.allow_tf32}"
        )
    return desc


def ort_matmul_peak(reps: int = 5, threads: int | None = None) -> float:
    """ONNX Runtime's (MLAS's) fp32 matmul peak on this machine, GFLOP/s, over the shapes
    :func:`matmul_peak` uses; 0 when onnxruntime is not installed. On the AMD EPYC of
    bench/RESULTS.md it is about twice ``torch.mm``'s, so FLOP bounds use the larger."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return 0.0
    best = 0.0
    for m, k, n in [(2048, 2048, 2048), (4096, 768, 3072)]:
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])],
            "matmul",
            [
                helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k]),
                helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n]),
            ],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        session = ort.InferenceSession(
            model.SerializeToString(),
            options,
            providers=["CPUExecutionProvider"],
        )
        feeds = {"a": torch.randn(m, k).numpy(), "b": torch.randn(k, n).numpy()}
        for _ in range(2):
            session.run(None, feeds)
        for _ in range(reps):
            t = time.perf_counter()
            session.run(None, feeds)
            best = max(best, 2 * m * k * n / (time.perf_counter() - t) / 1e9)
    return best


def loadavg() -> str:
    """``/proc/loadavg`` (1, 5, 15 minutes): other processes' load on this machine, printed
    with every result since a busy machine makes the timings noisy."""
    try:
        with open("/proc/loadavg") as f:
            return "load average " + " ".join(f.read().split()[:3])
    except OSError:
        return "load average unknown"
