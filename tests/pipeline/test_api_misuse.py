"""Calls that are wrong get a clear TypeError/ValueError, never a silent guess; ``w2v.embed``
takes what ``w2v embed`` takes and, with ``errors="skip"``, keeps the good items."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import w2v
from tests.helpers import TINY_W2V
from w2v.config import Config
from w2v.errors import AudioError, UsageError
from w2v.pipeline import embed
from w2v.pipeline.in_memory import Embeddings


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return w2v.from_config(Config(**TINY_W2V))  # 2 layers


X = torch.randn(1, 4000) * 0.1
WAVE = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)


# The model's own input checks -----------------------------------------------------------


@pytest.mark.parametrize("call", ["hidden_states", "extract_features", "forward"])
def test_an_empty_batch_is_a_value_error(model, call):
    with pytest.raises(ValueError, match="batch size 0"):
        getattr(model, call)(torch.zeros(0, 4000))
    with pytest.raises(ValueError, match="batch size 0"):
        getattr(model, call)(torch.zeros(0, 4000), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize(
    "layers, match",
    [
        ("12", "sequence of integer indices"),  # not layers 1 and 2
        (b"12", "sequence of integer indices"),
        (2, "sequence of integer indices"),
        ([1.7], "must be an integer, got float"),
        ([True], "got a bool"),
        ([np.float32(1.0)], "must be an integer"),
        ([torch.tensor(1.0)], "must be an integer"),
        ([torch.tensor(True)], "got a bool"),
    ],
)
def test_layer_indices_must_be_integers(model, layers, match):
    with pytest.raises(TypeError, match=match):
        model.hidden_states(X, layers=layers)


def test_integer_like_layer_indices_are_fine(model):
    want, _ = model.hidden_states(X, layers=[1, 2])
    for layers in ([np.int64(1), 2], torch.tensor([1, 2]), range(1, 3), (1, -1)):
        got, _ = model.hidden_states(X, layers=layers)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("n", [1.7, 1.0, True, "1"])
def test_num_layers_must_be_an_integer(model, n):
    with pytest.raises(TypeError, match="num_layers must be an integer"):
        model.extract_features(X, num_layers=n)
    assert len(model.extract_features(X, num_layers=np.int64(1))[0]) == 1


def test_waveforms_must_be_a_real_float_tensor(model):
    with pytest.raises(TypeError, match="must be real, got torch.complex64"):
        model.hidden_states(torch.zeros(1, 4000, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"torch.Tensor \(batch, samples\), got ndarray"):
        model.hidden_states(np.zeros((1, 4000), np.float32))
    with pytest.raises(TypeError, match="lengths must be integers"):
        model.hidden_states(X, [3999.5])  # never truncated to 3999
    with pytest.raises(TypeError, match="lengths must be integers"):
        model.hidden_states(X, torch.tensor([True]))
    model.hidden_states(X, [4000])
    model.hidden_states(X, torch.tensor([4000], dtype=torch.int32))


# w2v.embed: arguments ----------------------------------------------------------------


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, float("nan"), float("inf")])
def test_embed_sample_rate_must_be_a_positive_whole_number(model, rate):
    with pytest.raises(ValueError, match="sample_rate must be a positive whole number of Hz"):
        embed(WAVE, model, sample_rate=rate)
    with pytest.raises(ValueError, match="input 0: rate must be a positive whole number of Hz"):
        embed([(WAVE, rate)], model)


@pytest.mark.parametrize("rate", ["16000", True, None])
def test_embed_sample_rate_must_be_a_number(model, rate):
    with pytest.raises(TypeError, match="must be a number of Hz"):
        embed([(WAVE, rate)], model)


def test_embed_whole_float_and_numpy_rates_are_fine(model):
    (a,) = embed(WAVE, model, sample_rate=16000)
    (b,) = embed(WAVE, model, sample_rate=16000.0)
    (c,) = embed((WAVE, np.int32(16000)), model)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    "wave",
    [
        WAVE.astype(np.complex64),
        torch.from_numpy(WAVE).to(torch.complex64),
        WAVE > 0,
        torch.from_numpy(WAVE) > 0,
        np.array(["a", "b"]),
    ],
)
def test_embed_refuses_waveforms_that_are_not_real_numbers(model, wave):
    with pytest.raises(TypeError, match="expected real audio samples"):
        embed(wave, model, sample_rate=16000)


@pytest.mark.parametrize("layers", [[1.7], 1.7, True, [True], b"1"])
def test_embed_layers_are_never_truncated(model, layers):
    with pytest.raises(TypeError, match="integer|spec string"):
        embed(WAVE, model, sample_rate=16000, layers=layers)


def test_embed_errors_argument(model):
    with pytest.raises(ValueError, match="errors must be one of 'raise', 'skip'"):
        embed(WAVE, model, sample_rate=16000, errors="ignore")


# w2v.embed: what the CLI accepts, and per-input errors -----------------------------------


def _write(path, seconds=0.5, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = 0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))
    sf.write(path, data.astype(np.float32), 16000)
    return path


def test_embed_accepts_directories_and_list_files(tmp_path, model):
    a = _write(tmp_path / "data" / "a.wav", seed=1)
    b = _write(tmp_path / "data" / "sub" / "b.flac", 0.7, seed=2)
    (tmp_path / "data" / "notes.txt").write_text("not audio: left out of the directory")
    singly = embed([a, b], model, layers=[-1])
    from_dir = embed(tmp_path / "data", model, layers=[-1])
    assert isinstance(from_dir, Embeddings) and from_dir.paths == [a, b] and not from_dir.errors
    lst = tmp_path / "data" / "files.lst"
    lst.write_text("# two\nsub/b.flac\na.wav\n")
    from_list = embed([str(lst), WAVE], model, layers=[-1], sample_rate=16000)
    assert from_list.paths == [b, a, None]
    for got, want in zip(from_dir, singly, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(from_list[0], singly[1], atol=1e-5, rtol=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no inputs"):
        embed(tmp_path / "empty", model)


def test_embed_skip_keeps_the_good_items_and_lists_the_bad(tmp_path, model):
    good = _write(tmp_path / "good.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 4)
    missing = tmp_path / "missing.wav"
    inputs = [good, corrupt, WAVE[:100], missing, WAVE]
    res = embed(inputs, model, sample_rate=16000, errors="skip")
    assert [r is None for r in res] == [False, True, True, True, False]
    assert res.paths == [good, corrupt, None, missing, None]
    labels = [label for label, _ in res.errors]
    assert labels == [str(corrupt), "input 2", str(missing)]
    reasons = dict(res.errors)
    assert (
        "too short" in reasons["input 2"] and reasons[str(missing)] == "no such file or directory"
    )
    assert all("\n" not in r for r in reasons.values())
    (want,) = embed(good, model)
    np.testing.assert_allclose(res[0], want, atol=1e-5, rtol=0)

    with pytest.raises(AudioError, match=f"^{missing}: no such file or directory$"):
        embed(inputs, model, sample_rate=16000)  # errors="raise": the first bad item
    with pytest.raises(AudioError, match=f"^{corrupt}: "):
        embed([good, corrupt], model)


def test_a_tuple_of_two_paths_is_two_inputs(tmp_path, model):
    a = _write(tmp_path / "a.wav", seed=1)
    b = _write(tmp_path / "b.wav", seed=2)
    res = embed((str(a), str(b)), model)
    assert len(res) == 2 and res.paths == [a, b]
