"""The embedding pipeline against the model called directly on independently decoded audio."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from w2v.convert.checkpoint import Checkpoint, save

import w2v
from tests.helpers import TINY_W2V
from w2v.config import Config
from w2v.errors import UsageError
from w2v.loading import check_device
from w2v.pipeline import (
    Progress,
    collect_inputs,
    embed,
    embed_files,
    parse_layers,
    resolve_layers,
)
from w2v.pipeline.audio import AudioError
from w2v.pipeline.outputs import ENTRY_FIELDS, MANIFEST, SETTINGS, read_manifest, read_output

TINY = Config(**{**TINY_W2V, "num_layers": 3})
ATOL = 1e-4

FILES = [
    # (relative path, format, subtype, rate, channels, seconds)
    ("a.wav", "WAV", "PCM_16", 8000, 1, 0.7),
    ("sub/b.flac", "FLAC", "PCM_24", 22050, 2, 1.3),
    ("sub/deep/c.ogg", "OGG", "VORBIS", 44100, 1, 0.45),
    ("d.WAV", "WAV", "FLOAT", 48000, 2, 2.1),
    ("e.flac", "FLAC", "PCM_16", 16000, 1, 0.026),  # 416 samples: one frame
]


def _model(normalize: bool = False, config: Config = TINY):
    torch.manual_seed(0)
    model = w2v.from_config(config)
    model.normalize = normalize
    return model


def _write_files(root, files=FILES, seed=0):
    rng = np.random.default_rng(seed)
    for rel, fmt, subtype, rate, channels, seconds in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        n = int(round(rate * seconds))
        data = 0.2 * rng.standard_normal((n, channels)) + 0.1
        sf.write(path, data.astype(np.float32), rate, format=fmt, subtype=subtype)
    return root


def _decode(path, channel=None, normalize=False):
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    x = (data.mean(axis=1) if channel is None else data[:, channel]).astype(np.float32)
    if rate != 16000:
        x = soxr.resample(x, rate, 16000, quality="HQ")
    if normalize:
        x = ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)
    return x


def _direct(model, wave, layers, pool):
    """Model run on one unpadded item, pooled by hand."""
    with torch.inference_mode():
        states, _ = model.hidden_states(torch.from_numpy(wave)[None], layers=layers)
    per_layer = []
    for s in states:
        s = s[0].double().numpy()  # (frames, dim)
        if pool == "mean":
            per_layer.append(s.mean(0))
        elif pool == "stats":
            per_layer.append(np.concatenate([s.mean(0), s.std(0)]))
        else:
            per_layer.append(s)
    return np.stack(per_layer)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    model = _model()
    save(Checkpoint(model.config, model.state_dict()), d)
    return d


# Layer specs ---------------------------------------------------------------------


def test_layer_specs():
    assert resolve_layers("all", 12) == list(range(13))
    assert resolve_layers("12", 12) == [12]
    assert resolve_layers("0,6,12", 12) == [0, 6, 12]
    assert resolve_layers("4-8", 12) == [4, 5, 6, 7, 8]
    assert resolve_layers("-1", 12) == [12]
    assert resolve_layers("-3--1", 12) == [10, 11, 12]
    assert resolve_layers([3, 1, 3], 12) == [3, 1]
    assert parse_layers("all") is None
    with pytest.raises(UsageError, match=r"valid layers are 0\.\.12"):
        resolve_layers("13", 12)
    with pytest.raises(UsageError, match=r"0\.\.12"):
        resolve_layers("-14", 12)
    with pytest.raises(UsageError, match="bad layer"):
        parse_layers("1;2")
    with pytest.raises(UsageError, match="start is after end"):
        resolve_layers("8-4", 12)


# Inputs --------------------------------------------------------------------------


def test_collect_inputs_keys(tmp_path):
    root = _write_files(tmp_path / "data")
    (root / "notes.txt").write_text("not audio, ignored in directories")
    (root / "._a.wav").write_bytes(b"macOS resource fork")  # hidden: left out
    (root / ".cache").mkdir()
    sf.write(root / ".cache" / "x.wav", np.zeros(800, np.float32), 16000)
    items = collect_inputs([root])
    keys = sorted(i.key for i in items)
    assert keys == sorted(rel for rel, *_ in FILES)  # d.WAV found: extension case-insensitive

    single = collect_inputs([root / "sub" / "b.flac"])
    assert [i.key for i in single] == ["b.flac"]

    outside = tmp_path / "elsewhere.wav"
    sf.write(outside, np.zeros(800, np.float32), 16000)
    lst = root / "files.lst"
    lst.write_text(f"# a comment\n\nsub/b.flac\n  sub/deep/c.ogg  \n{outside}\nmissing.wav\n")
    listed = {i.key: i for i in collect_inputs([lst])}
    assert set(listed) == {"sub/b.flac", "sub/deep/c.ogg", "elsewhere.wav", "missing.wav"}
    assert listed["sub/b.flac"].path == root / "sub" / "b.flac"

    odd = tmp_path / "x.xyz"
    odd.write_text("?")
    (bad,) = collect_inputs([odd])
    assert bad.error and "unknown audio extension" in bad.error


def test_collect_inputs_usage_errors(tmp_path):
    root = _write_files(tmp_path / "data")
    other = tmp_path / "other"
    other.mkdir()
    sf.write(other / "a.wav", np.zeros(800, np.float32), 16000)
    with pytest.raises(UsageError, match=r"a\.wav: .*data.*other|a\.wav: .*other.*data"):
        collect_inputs([root / "a.wav", other / "a.wav"])
    # the same file twice is one input
    assert len(collect_inputs([root / "a.wav", root / "sub" / ".." / "a.wav"])) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no inputs"):
        collect_inputs([tmp_path / "empty"])
    with pytest.raises(UsageError, match="list file"):
        collect_inputs([tmp_path / "missing.txt"])


def test_collect_inputs_missing_paths_and_special_files(tmp_path):
    import os
    import threading

    with pytest.raises(UsageError, match=rf"^{tmp_path / 'gone'}: no such file or directory$"):
        collect_inputs([tmp_path / "gone"])
    with pytest.raises(UsageError, match=r"^list file .*gone\.lst: no such file .*\(and 1 more"):
        collect_inputs([tmp_path / "gone.lst", tmp_path / "gone.wav"])
    os.symlink(tmp_path / "nowhere.wav", tmp_path / "dangling.wav")
    os.mkfifo(tmp_path / "fifo.txt")  # read as a list, it would block forever
    (tmp_path / "in.txt").write_text("dangling.wav\nfifo.txt\n")
    found: list = []
    given = [tmp_path / "in.txt", tmp_path / "fifo.txt"]
    t = threading.Thread(target=lambda: found.extend(collect_inputs(given)), daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "collect_inputs opened a FIFO"
    assert len(found) == 2  # the FIFO given directly and listed is one input
    by_key = {i.key: i for i in found}
    assert by_key["dangling.wav"].error == (
        "no such file or directory (a symbolic link to a missing target)"
    )
    assert by_key["fifo.txt"].error is None  # left to the audio reader, which refuses it


# Files → files --------------------------------------------------------------------


@pytest.mark.parametrize(
    "pool,fmt,layers,expect",
    [
        ("mean", "npy", "all", [0, 1, 2, 3]),
        ("stats", "safetensors", "0,-1", [0, 3]),
        ("none", "npy", "1-2", [1, 2]),
    ],
)
def test_outputs_equal_direct_model(tmp_path, ckpt_dir, pool, fmt, layers, expect):
    root = _write_files(tmp_path / "data")
    out = tmp_path / "out"
    summary = embed_files([root], ckpt_dir, out, layers=layers, pool=pool, fmt=fmt, batch_seconds=3)
    assert (summary.ok, summary.failed, summary.skipped) == (len(FILES), 0, 0)
    assert summary.exit_code == 0
    model = w2v.load(ckpt_dir)
    manifest = read_manifest(out)
    assert len(manifest) == len(FILES)
    for rel, _, _, rate, channels, seconds in FILES:
        entry = manifest[str(root / rel)]
        suffix = ".npy" if fmt == "npy" else ".safetensors"
        assert entry["status"] == "ok" and entry["error"] is None
        assert entry["output"] == rel + suffix
        assert (entry["sample_rate"], entry["channels"]) == (rate, channels)
        assert entry["duration"] == pytest.approx(seconds, abs=1e-3)
        assert entry["layers"] == expect and entry["pool"] == pool
        wave = _decode(root / rel)
        assert entry["frames"] == w2v.num_frames(wave.shape[0], model.config)
        got = read_output(out / entry["output"])
        want = _direct(model, wave, expect, pool)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    lines = (out / MANIFEST).read_text().splitlines()
    assert len(lines) == len(FILES)


def test_normalisation_channel_and_batching_independence(tmp_path):
    root = _write_files(tmp_path / "data")
    model = _model(normalize=True)
    common = dict(layers="-1", pool="mean")
    one = embed_files([root], model, tmp_path / "o1", batch_seconds=0.01, channel=0, **common)
    big = embed_files([root], model, tmp_path / "o2", batch_seconds=1000, channel=0, **common)
    assert one.ok == big.ok == len(FILES)
    for rel, *_ in FILES:
        a = np.load(tmp_path / "o1" / (rel + ".npy"))
        b = np.load(tmp_path / "o2" / (rel + ".npy"))
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
        want = _direct(model, _decode(root / rel, channel=0, normalize=True), [3], "mean")
        np.testing.assert_allclose(a, want, atol=ATOL, rtol=0)


def test_no_layer_past_the_deepest_is_computed(tmp_path):
    model = _model()
    calls = []
    for i, layer in enumerate(model.encoder.layers, start=1):
        layer.register_forward_hook(lambda *a, i=i: calls.append(i))
    embed([np.zeros(4000, np.float32)], model, layers="0,1", sample_rate=16000)
    assert calls == [1]


def _bad_files(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty.wav").write_bytes(b"")
    (root / "junk.flac").write_bytes(
        np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    )
    sf.write(root / "zero.wav", np.zeros((0, 1), np.float32), 16000)
    sf.write(root / "short.wav", np.zeros(199, np.float32), 8000)  # 398 samples at 16 kHz
    nan = np.full(8000, 0.1, np.float32)
    nan[4000] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = np.full(8000, 0.1, np.float32)
    inf[10] = np.inf
    sf.write(root / "inf.wav", inf, 16000, subtype="FLOAT")
    corrupt = root / "corrupt.flac"  # header fine, body broken: found only when decoding
    sf.write(
        corrupt, np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1, 16000
    )
    data = bytearray(corrupt.read_bytes())
    for k in range(200, len(data)):
        data[k] = (data[k] * 7 + 3) % 256
    corrupt.write_bytes(bytes(data))
    odd = root.parent / "notes.xyz"
    odd.write_text("?")
    return [
        "empty.wav",
        "junk.flac",
        "zero.wav",
        "short.wav",
        "nan.wav",
        "inf.wav",
        "corrupt.flac",
    ], odd


def test_bad_inputs_are_reported_and_the_rest_written(tmp_path):
    root = _write_files(tmp_path / "data")
    bad, odd = _bad_files(root / "bad")
    events = []

    class Recorder(Progress):
        def item(self, entry):
            events.append(entry)

    out = tmp_path / "out"
    # one big batch: the late failures (NaN, corrupt body) share it with good files
    summary = embed_files([root, odd], _model(), out, batch_seconds=1000, progress=Recorder())
    assert (summary.ok, summary.failed) == (len(FILES), len(bad) + 1)
    assert summary.exit_code == 1
    manifest = read_manifest(out)
    assert len(manifest) == len(FILES) + len(bad) + 1 == len(events)
    reasons = {}
    for name in bad:
        e = manifest[str(root / "bad" / name)]
        assert e["status"] == "error" and e["output"] is None
        assert str(root / "bad" / name) in e["error"] and "\n" not in e["error"]
        reasons[name] = e["error"]
        assert not (out / "bad" / (name + ".npy")).exists()
    assert "empty" in reasons["empty.wav"]
    assert "zero-length" in reasons["zero.wav"]
    assert manifest[str(root / "bad" / "zero.wav")]["duration"] == 0.0
    assert "too short" in reasons["short.wav"]
    assert "NaN or Inf" in reasons["nan.wav"] and "NaN or Inf" in reasons["inf.wav"]
    assert "unknown audio extension" in manifest[str(odd)]["error"]
    for rel, *_ in FILES:
        assert manifest[str(root / rel)]["status"] == "ok"
        assert np.isfinite(np.load(out / (rel + ".npy"))).all()


def test_written_entries_have_exactly_the_schema_fields(tmp_path):
    """Every line embed_files writes, ok or error, holds the schema's fields in its order;
    the settings it resumes on are the schema's settings."""
    root = _write_files(tmp_path / "data")
    bad = root / "bad.wav"
    bad.write_bytes(b"")
    out = tmp_path / "out"
    summary = embed_files([root], _model(), out, layers="0,2", chunk_seconds=0)
    assert (summary.ok, summary.failed) == (len(FILES), 1)
    lines = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    assert {e["status"] for e in lines} == {"ok", "error"}
    for entry in lines:
        assert tuple(entry) == ENTRY_FIELDS
    ok = read_manifest(out)[str(root / "a.wav")]
    assert {k: ok[k] for k in SETTINGS} == {
        "layers": [0, 2],
        "pool": "mean",
        "format": "npy",
        "model": "Model",
        "dtype": "float32",
        "backend": "torch",
        "dtype_out": "float32",
        "channel": None,
        "head": None,
        "labels": None,
    }
    assert (ok["chunk_seconds"], ok["context_seconds"]) == (None, None)  # computed whole


def test_a_batch_failure_costs_only_the_failing_item(tmp_path):
    root = _write_files(tmp_path / "data")
    model = _model()
    real = model.hidden_states
    target = _decode(root / "a.wav").shape[0]

    def flaky(x, lengths=None, layers=None):
        if x.shape[0] > 1:
            raise RuntimeError("batch-level failure")
        if int(lengths[0]) == target:
            raise RuntimeError("this item breaks the model")
        return real(x, lengths, layers)

    model.hidden_states = flaky
    summary = embed_files([root], model, tmp_path / "out", batch_seconds=1000)
    assert (summary.ok, summary.failed) == (len(FILES) - 1, 1)
    entry = read_manifest(tmp_path / "out")[str(root / "a.wav")]
    assert entry["status"] == "error" and "this item breaks the model" in entry["error"]


def test_summary_splits_model_time_from_waiting_for_audio(tmp_path, monkeypatch):
    """Slow decoding and a slow model: the summary says how long each took."""
    import time

    import w2v.pipeline.audio

    root = _write_files(tmp_path / "data")
    model = _model()
    real_states, real_load = model.hidden_states, w2v.pipeline.audio.load
    model_delay, decode_delay = 0.1, 0.25

    def slow_states(*args, **kwargs):
        time.sleep(model_delay)
        return real_states(*args, **kwargs)

    def slow_load(*args, **kwargs):
        time.sleep(decode_delay)
        return real_load(*args, **kwargs)

    model.hidden_states = slow_states
    monkeypatch.setattr(w2v.pipeline.audio, "load", slow_load)
    # one file per batch, one decoding thread: the model waits at least for the first file
    summary = embed_files([root], model, tmp_path / "out", batch_seconds=1e-3, workers=1)
    assert summary.ok == len(FILES)
    assert summary.model_seconds >= model_delay * len(FILES)
    assert summary.waiting_seconds >= decode_delay * 0.9
    # decoding (0.25 s a file) is slower than the model (0.1 s a batch), so the model waits
    # about 0.15 s before each later batch too (half of that leaves room for a slow machine)
    later = summary.waiting_seconds - decode_delay
    assert later >= 0.5 * (decode_delay - model_delay) * (len(FILES) - 1)
    assert summary.model_seconds + summary.waiting_seconds <= summary.elapsed
    assert f"model {summary.model_seconds:.1f} s" in summary.line()
    assert f"waiting for audio {summary.waiting_seconds:.1f} s" in summary.line()


def test_resume_skips_done_and_recomputes_on_change(tmp_path):
    root = _write_files(tmp_path / "data")
    out = tmp_path / "out"
    model = _model()
    first = embed_files([root], model, out, layers="0")
    assert first.ok == len(FILES)
    victim = out / "a.wav.npy"
    victim.unlink()  # a lost output is recomputed even though the manifest says ok
    again = embed_files([root], model, out, layers="0")
    assert (again.ok, again.skipped) == (1, len(FILES) - 1)
    assert victim.is_file()
    mtime = (out / "e.flac.npy").stat().st_mtime_ns
    with pytest.raises(UsageError, match=r"layers: \[0\] there, \[1\] now"):
        embed_files([root], model, out, layers="1")  # other settings: refused
    forced = embed_files([root], model, out, layers="1", overwrite=True)
    assert (forced.ok, forced.skipped) == (len(FILES), 0)
    assert (out / "e.flac.npy").stat().st_mtime_ns >= mtime
    assert len((out / MANIFEST).read_text().splitlines()) == len(FILES)
    assert all(
        json.loads(line)["layers"] == [1] for line in (out / MANIFEST).read_text().splitlines()
    )


def test_usage_errors(tmp_path, ckpt_dir):
    root = _write_files(tmp_path / "data")
    with pytest.raises(UsageError, match="cannot load model"):
        embed_files([root], tmp_path / "no-model", tmp_path / "out")
    with pytest.raises(UsageError, match=r"0\.\.3"):
        embed_files([root], ckpt_dir, tmp_path / "out", layers="7")
    with pytest.raises(UsageError, match="no inputs"):
        embed_files([tmp_path / "out"], ckpt_dir, tmp_path / "out2")


def test_device_and_broken_model_are_usage_errors(tmp_path):
    root = _write_files(tmp_path / "data")
    with pytest.raises(UsageError, match="invalid device"):
        check_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA"):
            embed_files([root], _model(), tmp_path / "out", device="cuda")
    model = _model()

    def broken(*a, **kw):
        raise RuntimeError("kernel not implemented for this dtype")

    model.hidden_states = broken
    with pytest.raises(UsageError, match="cannot run on cpu in float32: kernel not implemented"):
        embed_files([root], model, tmp_path / "out")


# Python API ----------------------------------------------------------------------


def test_embed_api_arrays_tensors_and_paths(tmp_path):
    root = _write_files(tmp_path / "data")
    model = _model()
    rng = np.random.default_rng(3)
    a = (0.1 * rng.standard_normal(12000)).astype(np.float32)
    b = (0.1 * rng.standard_normal(30000)).astype(np.float32)
    (ra,) = embed(a, model, sample_rate=16000, layers=[-1])
    np.testing.assert_allclose(ra, _direct(model, a, [3], "mean"), atol=ATOL, rtol=0)
    (rt,) = embed(torch.from_numpy(a), model, sample_rate=16000, layers=[-1])
    np.testing.assert_allclose(rt, ra, atol=ATOL, rtol=0)

    b8 = soxr.resample(b, 16000, 8000, quality="HQ")
    res = embed([(a, 16000), (b8, 8000), root / "sub" / "b.flac"], model, pool="none", layers="0,2")
    assert [r.shape[0] for r in res] == [2, 2, 2]
    np.testing.assert_allclose(res[0], _direct(model, a, [0, 2], "none"), atol=ATOL, rtol=0)
    b16 = soxr.resample(b8.astype(np.float32), 8000, 16000, quality="HQ")
    np.testing.assert_allclose(res[1], _direct(model, b16, [0, 2], "none"), atol=ATOL, rtol=0)
    want = _direct(model, _decode(root / "sub" / "b.flac"), [0, 2], "none")
    np.testing.assert_allclose(res[2], want, atol=ATOL, rtol=0)

    stacked = embed(np.stack([a, a[::-1].copy()]), model, sample_rate=16000, pool="stats", layers=3)
    assert len(stacked) == 2 and stacked[0].shape == (1, 64)
    np.testing.assert_allclose(stacked[0], _direct(model, a, [3], "stats"), atol=ATOL, rtol=0)


def test_embed_api_errors(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="sample_rate"):
        embed(np.zeros(1000, np.float32), model)
    with pytest.raises(AudioError, match="input 1: .*too short"):
        embed([np.zeros(1000, np.float32), np.zeros(100, np.float32)], model, sample_rate=16000)
    with pytest.raises(UsageError, match="out of range"):
        embed(np.zeros(1000, np.float32), model, sample_rate=16000, layers=[9])
    assert embed([], model) == []


def test_default_batch_budget_depends_on_the_device():
    from w2v.pipeline.batching import CPU_BATCH_SECONDS, GPU_BATCH_SECONDS, default_batch_seconds

    assert default_batch_seconds("cpu") == CPU_BATCH_SECONDS < GPU_BATCH_SECONDS
    assert default_batch_seconds(torch.device("cuda", 0)) == GPU_BATCH_SECONDS
