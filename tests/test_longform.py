"""Chunked extraction of long audio: frame grid, exactness limits, streaming pooling, pipeline."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import w2v
from tests.helpers import PEAK_RSS_CODE, REPO, TINY_W2V
from w2v.cli import main as cli_main
from w2v.config import Config, num_frames
from w2v.longform import (
    ChunkPolicy,
    hidden_states_long,
    iter_chunks,
    iter_chunks_stream,
    plan_windows,
)
from w2v.pipeline import embed, embed_files
from w2v.pipeline.outputs import read_manifest, read_output
from w2v.pipeline.pooling import RunningPool, pool_layers

TINY = TINY_W2V
GROUP = Config(**TINY)
LAYER = Config(**TINY, conv_norm="layer", layer_norm_first=True, conv_bias=True)
ATOL = 1e-5


def _model(config: Config):
    torch.manual_seed(0)
    return w2v.from_config(config)


@pytest.mark.parametrize("total", [1, 7, 50, 149, 150, 151, 1000])
@pytest.mark.parametrize("chunk,context", [(1, 0), (50, 0), (50, 10), (64, 300)])
def test_windows_cover_every_frame_once(total, chunk, context):
    windows = plan_windows(total, chunk, context)
    kept = [f for w in windows for f in range(w.keep_start, w.keep_stop)]
    assert kept == list(range(total))
    for w in windows:
        assert 0 <= w.first <= w.keep_start < w.keep_stop <= w.last <= total
        assert w.keep_start - w.first == min(context, w.keep_start)
        assert w.last - w.keep_stop == min(context, total - w.keep_stop)


@pytest.mark.parametrize("config", [GROUP, LAYER], ids=["group", "layer"])
@pytest.mark.parametrize("samples", [400, 16000 * 3 + 123, 16000 * 5])
def test_frame_count_and_times_match_full_context(config, samples):
    model = _model(config)
    x = torch.randn(samples)
    with torch.inference_mode():
        chunks = list(iter_chunks(model, x, [0, 2], chunk_seconds=0.5, context_seconds=0.2))
        long = hidden_states_long(model, x, [0, 2], chunk_seconds=0.5, context_seconds=0.2)
    starts = [s for s, _ in chunks]
    sizes = [states[0].shape[0] for _, states in chunks]
    assert starts == list(np.cumsum([0] + sizes[:-1]))
    assert sum(sizes) == num_frames(samples, config)
    assert [t.shape for t in long] == [(num_frames(samples, config), config.hidden_size)] * 2


@pytest.mark.parametrize("config", [GROUP, LAYER], ids=["group", "layer"])
def test_window_covering_the_input_is_exact(config):
    model = _model(config)
    x = torch.randn(16000 * 4 + 77)
    with torch.inference_mode():
        full, _ = model.hidden_states(x[None])
        long = hidden_states_long(model, x, chunk_seconds=10, context_seconds=1)
    for a, b in zip(long, full, strict=True):
        assert torch.equal(a, b[0])


def test_layer0_is_exact_when_context_covers_the_positional_conv():
    # with a layer-norm conv encoder, the transformer input depends only on
    # samples within the positional conv's reach: chunks must align exactly
    model = _model(LAYER)
    x = torch.randn(16000 * 6)
    with torch.inference_mode():
        full, _ = model.hidden_states(x[None], layers=[0])
        long = hidden_states_long(model, x, [0], chunk_seconds=1.0, context_seconds=0.2)
    torch.testing.assert_close(long[0], full[0][0], atol=ATOL, rtol=0)


def test_chunked_deep_layers_close_to_full_context_and_improve_with_context():
    model = _model(LAYER)
    x = torch.randn(16000 * 8)
    with torch.inference_mode():
        full, _ = model.hidden_states(x[None], layers=[-1])
        errs = [
            (hidden_states_long(model, x, [-1], chunk_seconds=1, context_seconds=c)[0] - full[0][0])
            .abs()
            .max()
            .item()
            for c in (0.0, 1.0, 4.0)
        ]
    assert errs[0] > errs[1] > errs[2]


@pytest.mark.parametrize("config", [GROUP, LAYER], ids=["group", "layer"])
@pytest.mark.parametrize("samples", [400, 16000 * 3 + 123, 16000 * 5 + 319])
def test_windows_from_a_stream_equal_windows_from_the_whole_tensor(config, samples):
    """Blocks of any sizes give the very windows (and trailing samples) of the whole input."""
    model = _model(config)
    x = torch.randn(samples)
    cuts = np.sort(np.random.default_rng(samples).integers(0, samples, 12))
    blocks = [b for b in torch.tensor_split(x, cuts.tolist()) if b.numel()]
    kw = dict(chunk_seconds=0.5, context_seconds=0.2)
    with torch.inference_mode():
        whole = list(iter_chunks(model, x, [0, 2], **kw))
        streamed = list(iter_chunks_stream(model, iter(blocks), samples, [0, 2], **kw))
    assert [s for s, _ in streamed] == [s for s, _ in whole]
    for (_, a), (_, b) in zip(streamed, whole, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="ended after"):
        list(iter_chunks_stream(model, iter(blocks), samples + 1, [0], **kw))
    with pytest.raises(ValueError, match="more than"):
        list(iter_chunks_stream(model, iter([*blocks, x[:5]]), samples, [0], **kw))


@pytest.mark.parametrize("pool", ["mean", "stats", "none"])
def test_running_pool_equals_pooling_at_once(pool):
    torch.manual_seed(1)
    states = [torch.randn(97, 8) * 3 + 1, torch.randn(97, 8)]
    acc = RunningPool(pool)
    for lo, hi in [(0, 10), (10, 11), (11, 60), (60, 97)]:
        acc.update([s[lo:hi] for s in states])
    expected = pool_layers([s[None] for s in states], torch.tensor([97]), pool)[0]
    np.testing.assert_allclose(acc.result(), expected, atol=1e-5, rtol=0)
    assert acc.frames == 97


def test_policy():
    assert ChunkPolicy().chunk_for(16000 * 60) is None
    assert ChunkPolicy().chunk_for(16000 * 121) == 30.0
    assert ChunkPolicy(0).chunk_for(16000 * 3600) is None
    assert ChunkPolicy(10).chunk_for(16000 * 10) is None
    assert ChunkPolicy(10).chunk_for(16000 * 11) == 10
    with pytest.raises(ValueError, match="negative"):
        ChunkPolicy(-1)


@pytest.mark.parametrize("pool", ["mean", "stats", "none"])
def test_embed_api_chunked_equals_stitched_then_pooled(pool):
    model = _model(GROUP)
    x = np.random.default_rng(0).standard_normal(16000 * 5).astype(np.float32) * 0.1
    with pytest.warns(UserWarning, match="windows"):
        (got,) = embed(
            x,
            model,
            sample_rate=16000,
            layers=[0, 2],
            pool=pool,
            chunk_seconds=1,
            context_seconds=0.5,
        )
    with torch.inference_mode():
        long = hidden_states_long(
            model, torch.from_numpy(x), [0, 2], chunk_seconds=1, context_seconds=0.5
        )
    expected = pool_layers([s[None] for s in long], torch.tensor([long[0].shape[0]]), pool)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # chunking off: the full-context result, which differs
    (whole,) = embed(x, model, sample_rate=16000, layers=[0, 2], pool=pool, chunk_seconds=0)
    assert whole.shape == got.shape
    assert not np.allclose(whole, got, atol=1e-5)


def test_auto_chunking_above_threshold(monkeypatch, tmp_path, capsys):
    import w2v.longform as lf

    monkeypatch.setattr(lf, "AUTO_CHUNK_SECONDS", 2.0)
    monkeypatch.setattr(lf, "DEFAULT_CHUNK_SECONDS", 1.0)
    model = _model(GROUP)
    rng = np.random.default_rng(0)
    sf.write(
        tmp_path / "long.wav",
        rng.standard_normal(16000 * 3).astype(np.float32) * 0.1,
        16000,
        subtype="FLOAT",
    )
    sf.write(
        tmp_path / "short.wav",
        rng.standard_normal(16000 * 1).astype(np.float32) * 0.1,
        16000,
        subtype="FLOAT",
    )
    from w2v.convert.checkpoint import Checkpoint, save

    save(Checkpoint(config=GROUP, state_dict=model.state_dict()), tmp_path / "model")
    out = tmp_path / "out"
    code = cli_main(
        [
            "embed",
            str(tmp_path / "long.wav"),
            str(tmp_path / "short.wav"),
            "--model",
            str(tmp_path / "model"),
            "--out",
            str(out),
            "--layers",
            "0,2",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if "windows" in line]
    assert len(notices) == 1 and "long.wav" in notices[0] and "3.0 s long" in notices[0]
    manifest = read_manifest(out)
    assert {m["status"] for m in manifest.values()} == {"ok"}
    x = torch.from_numpy(sf.read(tmp_path / "long.wav", dtype="float32")[0])
    with torch.inference_mode():
        long = hidden_states_long(
            model, x, [0, 2], chunk_seconds=1.0, context_seconds=lf.DEFAULT_CONTEXT_SECONDS
        )
    expected = pool_layers([s[None] for s in long], torch.tensor([long[0].shape[0]]), "mean")[0]
    entry = manifest[str(tmp_path / "long.wav")]
    got = read_output(out / entry["output"])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert entry["frames"] == num_frames(16000 * 3)


def test_embed_files_chunk_options_validated(tmp_path):
    from w2v.errors import UsageError

    with pytest.raises(UsageError, match="negative"):
        embed_files([tmp_path], _model(GROUP), tmp_path / "o", chunk_seconds=1, context_seconds=-1)


# No autograd graph outside torch.no_grad() ---------------------------------------------

# Peak memory of the README's example on 60 s of audio, wav2vec2-base (random init): with a
# graph kept per window it is about 4.5 GB, without one well under 1 GB (weights 0.4 GB).
_README_EXAMPLE = (
    PEAK_RSS_CODE
    + """
import torch, w2v
torch.set_num_threads(2)
model = w2v.from_config("wav2vec2-base")
long_wave_1d = 0.1 * torch.randn(60 * 16000)
(s,) = w2v.hidden_states_long(model, long_wave_1d, layers=[12], chunk_seconds=30, context_seconds=5)
assert s.shape == (2999, 768) and not s.requires_grad, (s.shape, s.requires_grad)
print(peak_rss_kb() // 1024)
"""
)


def test_long_extraction_builds_no_graph_and_leaves_grad_mode_alone():
    model = _model(GROUP)
    x = torch.randn(16000 * 3) * 0.1
    assert torch.is_grad_enabled()
    states = hidden_states_long(model, x, [0, 2], chunk_seconds=1, context_seconds=0.5)
    assert all(not s.requires_grad and s.grad_fn is None for s in states)
    for _, window in iter_chunks(model, x, [2], chunk_seconds=1, context_seconds=0.5):
        assert torch.is_grad_enabled()  # the caller's code between windows keeps its mode
        assert not window[0].requires_grad
    with torch.inference_mode():
        want = hidden_states_long(model, x, [0, 2], chunk_seconds=1, context_seconds=0.5)
    for a, b in zip(states, want, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        hidden_states_long(model, x.numpy(), [2])


@pytest.mark.slow
def test_readme_long_example_runs_in_bounded_memory():
    proc = subprocess.run(
        [sys.executable, "-c", _README_EXAMPLE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stdout.split()[-1])
    assert peak_mb < 1500, f"peak RSS {peak_mb} MB"
