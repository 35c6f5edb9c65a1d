"""Long files are streamed: decoded, resampled and normalised window by window, never held
whole, with the results of the whole-array path to the bit (statistics included)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from w2v.convert.checkpoint import Checkpoint, save

import w2v
from tests.helpers import TINY_W2V
from tests.pipeline.cli_runs import run_cli
from w2v.config import CheckpointInfo, Config
from w2v.errors import AudioError
from w2v.longform import ChunkPolicy, iter_chunks
from w2v.pipeline import Progress, audio, embed_files, long_audio
from w2v.pipeline.long_audio import LongAudio, StreamingSum
from w2v.pipeline.outputs import read_manifest
from w2v.pipeline.pooling import RunningPool

SR = 16000


@pytest.fixture
def one_thread():
    """Torch on one thread, as the CLI runs here (OMP_NUM_THREADS=1): same sums, and no
    contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write(path, seconds: float, rate: int = SR, channels: int = 1, seed: int = 0, **kw):
    """Noise with an offset (so normalising matters), written 10 s at a time."""
    rng = np.random.default_rng(seed)
    with sf.SoundFile(path, "w", rate, channels, **kw) as f:
        left = int(seconds * rate)
        while left:
            n = min(left, 10 * rate)
            f.write((0.1 * rng.standard_normal((n, channels)) + 0.02).astype(np.float32))
            left -= n
    return path


def _normalising_checkpoint(directory):
    """The tiny model, saved as a checkpoint that asks for per-utterance normalisation."""
    torch.manual_seed(0)
    model = w2v.from_config(Config(**TINY_W2V))
    save(Checkpoint(model.config, model.state_dict(), CheckpointInfo(normalize=True)), directory)
    return directory


def _whole_array_result(model, wave: np.ndarray, layers, chunk: float, context: float):
    """The reference: the whole decoded (and prepared) array in windows, mean-pooled as the
    pipeline pools them."""
    acc = RunningPool("mean")
    with torch.inference_mode():
        for _, states in iter_chunks(
            model, torch.from_numpy(wave), layers, chunk_seconds=chunk, context_seconds=context
        ):
            acc.update(states)
    return acc.result()


@pytest.mark.parametrize("n", [0, 1, 7, 129, 1000, 4097, 100_003])
def test_streaming_sum_is_numpys_sum_to_the_bit(n, monkeypatch):
    monkeypatch.setattr(long_audio, "SUM_SPAN", 256)  # many parts above the span, even for small n
    rng = np.random.default_rng(n)
    values = (rng.standard_normal(n) * 1e3 + 7).astype(np.float32).astype(np.float64)
    total, i = StreamingSum(n), 0
    while i < n:
        k = int(rng.integers(1, 5000))
        total.add(values[i : i + k])
        i += k
    assert total.result() == values.sum()  # exactly: numpy's pairwise order
    short = StreamingSum(n + 1)
    short.add(values)
    assert short.result() is None  # fed fewer values than announced


@pytest.mark.parametrize("rate,channels", [(16000, 1), (44100, 2), (22050, 1)])
def test_long_audio_blocks_equal_the_whole_normalised_array(tmp_path, rate, channels):
    path = _write(tmp_path / "a.flac", 7.3, rate, channels)
    whole, info = audio.load(path, normalize_input=True)
    long, long_info = long_audio.load(path, normalize_input=True, max_whole=SR * 2)
    assert isinstance(long, LongAudio) and long.samples == whole.shape[0]
    assert long_info == info
    np.testing.assert_array_equal(np.concatenate(list(long.blocks())), whole)
    plain, _ = long_audio.load(path, max_whole=SR * 2)
    assert plain.mean is None
    raw, _ = audio.load(path)
    np.testing.assert_array_equal(np.concatenate(list(plain.blocks())), raw)
    short, _ = long_audio.load(path, normalize_input=True, max_whole=SR * 8)  # under the limit
    np.testing.assert_array_equal(short, whole)


def test_a_header_that_misstates_the_length_costs_a_pass_not_exactness(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.wav", 5.0)
    whole, _ = audio.load(path, normalize_input=True)
    passes = []
    real = long_audio._read_again
    monkeypatch.setattr(long_audio, "_read_again", lambda *a: passes.append(a) or real(*a))
    long, _ = long_audio.load(path, normalize_input=True, max_whole=SR)
    assert len(passes) == 1  # the variance; the mean came with the first pass
    monkeypatch.setattr(audio, "_checked_info", lambda r, c, f: audio.AudioInfo(r, c, f - 1))
    long, _ = long_audio.load(path, normalize_input=True, max_whole=SR)
    assert len(passes) == 3  # the mean again, now that the length is known
    np.testing.assert_array_equal(np.concatenate(list(long.blocks())), whole)


def test_a_file_that_changed_since_it_was_measured_is_an_error(tmp_path):
    path = _write(tmp_path / "a.wav", 3.0)
    long, _ = long_audio.load(path, max_whole=SR)
    for samples in (long.samples - 1, long.samples + 1):
        with pytest.raises(AudioError, match="changed while it was read"):
            list(LongAudio(path, None, samples).blocks())


def test_bad_samples_mid_stream_and_changes_make_an_error_and_write_nothing(tmp_path):
    """A NaN two minutes in (found by the first pass), and a file cut between the first pass
    and the windows: one error each, no output; the good long file is embedded."""
    model = _normalising_checkpoint(tmp_path / "ckpt")
    root = tmp_path / "in"
    root.mkdir()
    wave = 0.1 * np.random.default_rng(0).standard_normal(SR * 150).astype(np.float32)
    wave[SR * 140] = np.nan
    sf.write(root / "nan.wav", wave, SR, subtype="FLOAT")
    _write(root / "cut.wav", 30.0, subtype="FLOAT")
    _write(root / "good.wav", 30.0, seed=1, subtype="FLOAT")

    class CutWhenWindowed(Progress):
        def notice(self, text: str) -> None:
            if "cut.wav" in text:  # measured: now cut it before its windows are read
                data, _ = sf.read(root / "cut.wav", dtype="float32")
                sf.write(root / "cut.wav", data[: SR * 20], SR, subtype="FLOAT")

    out = tmp_path / "out"
    summary = embed_files(
        [root], model, out, chunk_seconds=5, context_seconds=1, progress=CutWhenWindowed()
    )
    assert (summary.ok, summary.failed) == (1, 2)
    errors = dict(summary.errors)
    assert "NaN or Inf" in errors[str(root / "nan.wav")]
    assert "changed while it was read" in errors[str(root / "cut.wav")]
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # not the lock
    assert written == ["good.wav.npy", "manifest.jsonl"]
    good = read_manifest(out)[str(root / "good.wav")]
    assert good["chunk_seconds"] == 5 and good["context_seconds"] == 1


@pytest.mark.parametrize("chunk", [None, 0, 0.7, 1.0, 10.0, 1e-3, float("inf")])
def test_whole_limit_is_where_chunking_starts(chunk):
    policy = ChunkPolicy(chunk)
    limit = policy.whole_limit()
    if limit is None:
        assert policy.chunk_for(SR * 3600 * 12) is None
    else:
        assert policy.chunk_for(limit) is None and policy.chunk_for(limit + 1) is not None
    with pytest.raises(ValueError, match="negative"):
        ChunkPolicy(float("nan"))


def test_long_file_memory_follows_the_window_not_the_file(tmp_path, one_thread):
    """``w2v embed`` of 10 and of 40 minutes (many 10 s windows): the peak memory grows far
    less than the 40 minutes of 16 kHz float32 would (115 MB more; holding them, with the
    float64 normalisation, took 200 MB more), and the result is the whole-array one."""
    ckpt = _normalising_checkpoint(tmp_path / "ckpt")
    peaks = {}
    for minutes in (10, 40):
        path = _write(tmp_path / f"a{minutes}.flac", minutes * 60, seed=minutes)
        out = tmp_path / f"out{minutes}"
        args = ("--chunk-seconds", "10", "--context-seconds", "2", "--layers", "0,2")
        code, err, peaks[minutes] = run_cli(path, "--model", ckpt, "--out", out, *args)
        assert code == 0 and "1 ok" in err, err
    grown = peaks[40] - peaks[10]
    more_audio = 30 * 60 * SR * 4 / 2**20
    assert grown < 0.25 * more_audio, f"peak {peaks[10]:.0f} MB → {peaks[40]:.0f} MB"

    wave, _ = audio.load(tmp_path / "a10.flac", normalize_input=True)
    want = _whole_array_result(w2v.load(ckpt), wave, [0, 2], 10, 2)
    np.testing.assert_allclose(
        np.load(tmp_path / "out10" / "a10.flac.npy"), want, atol=1e-6, rtol=0
    )


def test_long_resampled_stereo_file_equals_the_whole_array_path_to_the_bit(tmp_path, one_thread):
    model = w2v.load(_normalising_checkpoint(tmp_path / "ckpt"))
    path = _write(tmp_path / "a.flac", 150, 44100, 2)
    summary = embed_files([path], model, tmp_path / "out")  # auto: 30 s windows past 120 s
    assert summary.ok == 1
    wave, _ = audio.load(path, normalize_input=True)
    want = _whole_array_result(model, wave, [0, 1, 2], 30, 5)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "a.flac.npy"), want)
