"""Shared test helpers: paths, tiny configs, transformers references, parameter
perturbation, per-layer comparison.

Nothing here imports ``transformers`` at module level: the fixture tests must
run without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
HF_FIXTURES = FIXTURES / "hf"
FAIRSEQ_FIXTURES = FIXTURES / "fairseq"

# Source for a child process: ``peak_rss_kb()``, the child's own peak resident memory in
# KiB. On Linux that is VmHWM: a child's ru_maxrss also counts its parent's memory at the
# fork (it survives exec), so after a test that used much memory every child would seem
# to use as much.
PEAK_RSS_CODE = """
def peak_rss_kb():
    try:
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""

FAMILIES = ("wav2vec2", "hubert", "data2vec-audio", "wavlm")
HF_PREFIX = {
    "wav2vec2": "Wav2Vec2",
    "hubert": "Hubert",
    "data2vec-audio": "Data2VecAudio",
    "wavlm": "WavLM",
}

# transformers config kwargs of a tiny model (the committed fixtures use the same sizes)
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
# w2v Config kwargs of a tiny model, for tests that need no transformers reference
TINY_W2V = dict(
    conv_dim=(32,) * 7,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    pos_conv_kernel=16,
    pos_conv_groups=2,
)
# data2vec-audio: num_conv_pos_embeddings is the depth of its positional conv stack
TINY_DATA2VEC = dict(TINY, num_conv_pos_embeddings=3, conv_pos_kernel_size=5)


def hf_class(family: str, head: str = "Model"):
    """``hf_class("wavlm", "ForCTC")`` → ``transformers.WavLMForCTC``."""
    import transformers

    return getattr(transformers, HF_PREFIX[family] + head)


def hf_config(family: str, tiny: bool = True, **overrides):
    """A transformers config of ``family``: tiny sizes, or HF's defaults (base size)."""
    kwargs = {}
    if tiny:
        kwargs = dict(TINY_DATA2VEC if family == "data2vec-audio" else TINY)
    kwargs.update(overrides)
    return hf_class(family, "Config")(**kwargs)


def perturb_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Make a random-init HF model's weights non-trivial, in place.

    HF initialises LayerNorm weights to 1, biases to 0 and WavLM's gate
    constants to 1; with those a swapped or skipped parameter would go
    unnoticed. Every parameter holding a single constant gets noise, and
    BatchNorm running statistics get non-trivial values (from a generator of their own,
    so that models with and without BatchNorm get the same parameter noise).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 0 and bool((p == p.flatten()[0]).all()):
                p.add_(0.2 * torch.randn(p.shape, generator=g).to(p.dtype))
        g = torch.Generator().manual_seed(seed)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.num_batches_tracked.fill_(1000)
    return model.eval()


def assert_layers_close(
    ours: Sequence[torch.Tensor],
    refs: Sequence[torch.Tensor],
    atol: float,
    frames: Sequence[int] | None = None,
    what: str = "layer",
) -> None:
    """Compare two lists of (batch, frames, dim) states; the failure names the layer.

    ``frames``: valid frames per batch item; only those are compared.
    """
    assert len(ours) == len(refs), f"{len(ours)} {what}s, the reference has {len(refs)}"
    for i, (a, b) in enumerate(zip(ours, refs, strict=True)):
        if frames is None:
            pairs = [(a, b, "")]
        else:
            pairs = [(a[j, :n], b[j, :n], f" item {j}") for j, n in enumerate(frames)]
        for x, y, where in pairs:
            torch.testing.assert_close(
                x, y, atol=atol, rtol=0, msg=lambda m, i=i, where=where: f"{what} {i}{where}: {m}"
            )
