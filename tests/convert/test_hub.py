"""Hub ids: download (faked with a local HF directory), convert once, cache; clear errors offline."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from w2v.convert.checkpoint import FORMAT_VERSION, is_w2v_dir

import w2v
from tests.helpers import hf_config
from w2v.cli import main
from w2v.errors import CheckpointError
from w2v.hub import ALLOW_PATTERNS, HubError, cache_path, is_hub_id, resolve_hub

transformers = pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random-init tiny HF wav2vec2 directory as `save_pretrained` writes it."""
    torch.manual_seed(0)
    model = transformers.Wav2Vec2Model(hf_config("wav2vec2", conv_dim=(32,) * 7)).eval()
    d = tmp_path_factory.mktemp("hf")
    model.save_pretrained(d)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(d)
    return d, model


@pytest.fixture
def fake_hub(monkeypatch, hf_dir):
    calls = []

    def snapshot_download(repo_id, allow_patterns=None, **kw):
        calls.append((repo_id, allow_patterns))
        return str(hf_dir[0])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_resolve_downloads_converts_and_caches(tmp_path, fake_hub, hf_dir):
    path = resolve_hub("someorg/tiny-w2v", cache_dir=tmp_path)
    assert path == cache_path("someorg/tiny-w2v", tmp_path) and path.parent == tmp_path
    assert "/" not in path.name and is_w2v_dir(path)
    assert fake_hub == [("someorg/tiny-w2v", ALLOW_PATTERNS)]
    assert resolve_hub("someorg/tiny-w2v", cache_dir=tmp_path) == path
    assert len(fake_hub) == 1  # second call served from the cache
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left

    model = w2v.load(path)
    assert model.normalize is True  # from preprocessor_config.json
    x = torch.randn(1, 4000)
    with torch.inference_mode():
        (ours,), _ = model.hidden_states(x, layers=[-1])
        ref = hf_dir[1](x, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_load_and_cli_accept_a_hub_id(tmp_path, fake_hub, monkeypatch, capsys):
    import soundfile as sf

    monkeypatch.setenv("W2V_CACHE", str(tmp_path / "cache"))
    model = w2v.load("someorg/tiny-w2v")
    assert model.config.num_layers == 2 and (tmp_path / "cache" / "someorg--tiny-w2v").is_dir()
    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1, 16000)
    code = main(["embed", str(wav), "--model", "someorg/tiny-w2v", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert np.load(tmp_path / "out" / "a.wav.npy").shape == (3, 32)


def test_offline_download_failure_says_how_to_convert(tmp_path, monkeypatch, capsys):
    def offline(repo_id, **kw):
        raise huggingface_hub.errors.LocalEntryNotFoundError(
            "Cannot find the requested files in the disk cache and outgoing traffic has been disabled."
        )

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(HubError, match="w2v convert") as e:
        resolve_hub("someorg/missing", cache_dir=tmp_path)
    assert "someorg/missing" in str(e.value) and "\n" not in str(e.value)
    assert "'someorg/missing' is not a local path, and cannot be downloaded" in str(e.value)
    assert not any(tmp_path.iterdir())

    monkeypatch.setenv("W2V_CACHE", str(tmp_path))
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")
    code = main(["embed", str(wav), "--model", "someorg/missing", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "w2v convert" in err and "Traceback" not in err


def test_missing_huggingface_hub(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(HubError, match="pip install huggingface_hub"):
        resolve_hub("someorg/tiny-w2v", cache_dir=tmp_path)


def test_download_that_is_not_a_model(tmp_path, monkeypatch):
    empty = tmp_path / "snapshot"
    empty.mkdir()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(empty))
    with pytest.raises(HubError, match="cannot convert"):
        resolve_hub("someorg/not-a-model", cache_dir=tmp_path / "cache")
    with pytest.raises(HubError, match="org/name"):
        resolve_hub("not a hub id", cache_dir=tmp_path / "cache")


@pytest.fixture
def no_hub(monkeypatch):
    def snapshot_download(repo_id, **kw):
        raise AssertionError(f"{repo_id} must not be fetched from the hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)


def test_hub_id_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "x").mkdir()
    assert is_hub_id("facebook/wav2vec2-base")
    assert not is_hub_id("models/nope")  # models/ is a local directory: a mistyped path
    assert not is_hub_id("here/x")  # exists
    assert not is_hub_id("org/model.pt")  # a fairseq file
    assert not is_hub_id("./org/name") and not is_hub_id("/org/name") and not is_hub_id("a/b/c")


def test_a_missing_path_that_looks_like_a_hub_id_says_so(tmp_path, monkeypatch, no_hub, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(CheckpointError) as e:
        w2v.load("models/nope")
    assert str(e.value) == (
        "models/nope: no such file or directory (read as a local path, not as a hub id, since "
        "models/ is a local directory)"
    )
    with pytest.raises(
        CheckpointError, match=r"^org/x\.pt: no such file .*\.pt is read as a local"
    ):
        w2v.load("org/x.pt")
    with pytest.raises(CheckpointError, match=r"^nope: no such file or directory \(nor a hub id"):
        w2v.load("nope")
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")
    code = main(["embed", str(wav), "--model", "models/nope", "--out", str(tmp_path / "out")])
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 2 and "models/nope: no such file or directory (read as a local path" in line


def test_a_cache_entry_of_an_older_format_is_converted_again(tmp_path, fake_hub):
    path = resolve_hub("someorg/tiny-w2v", cache_dir=tmp_path)
    cfg = path / "config.json"
    meta = json.loads(cfg.read_text())
    meta["format_version"] = 1  # written by a w2v that kept no fine-tuned heads
    cfg.write_text(json.dumps(meta))
    assert resolve_hub("someorg/tiny-w2v", cache_dir=tmp_path) == path
    assert len(fake_hub) == 2  # fetched and converted again
    assert json.loads(cfg.read_text())["format_version"] == FORMAT_VERSION
