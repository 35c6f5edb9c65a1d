"""w2v.compat.torchaudio.pipelines: torchaudio's bundles, their files and normalisation,
and the steps of torchaudio's "Speech Recognition with Wav2Vec2" tutorial."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tests.compat.torchaudio_fixtures import FP32, NO_DROPOUT, api, variant
from w2v.compat.torchaudio import models, pipelines
from w2v.errors import CheckpointError

TINY_ARCH = dict(variant("wav2vec2-postln")[1])
EN = pipelines.WAV2VEC2_ASR_BASE_960H._labels


def _params(labels: int | None) -> dict:
    return {**TINY_ARCH, **NO_DROPOUT, "aux_num_out": labels}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty W2V_CACHE and torch hub cache; returns the folder get_model reads."""
    monkeypatch.setenv("W2V_CACHE", str(tmp_path / "w2v"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "w2v" / "torchaudio"
    folder.mkdir(parents=True)
    return folder


def _tiny_file(folder, name: str, aux_rows: int | None, seed: int = 0) -> dict:
    """A random-init tiny model's torchaudio state dict saved as ``folder/name``."""
    torch.manual_seed(seed)
    model = models.wav2vec2_model(**{**TINY_ARCH, **NO_DROPOUT, "aux_num_out": aux_rows})
    state = model.state_dict()
    torch.save(state, folder / name)
    return state


def test_every_bundle_has_torchaudio_s_fields_and_labels():
    want = api()["bundles"]
    have = {
        n for n in dir(pipelines) if isinstance(getattr(pipelines, n), pipelines.Wav2Vec2Bundle)
    }
    assert have == set(want)
    for name, w in want.items():
        b = getattr(pipelines, name)
        assert type(b).__name__ == w["class"], name
        assert b._path == w["_path"] and b._model_type == w["_model_type"], name
        assert (
            b.sample_rate == w["_sample_rate"] and b._normalize_waveform == w["_normalize_waveform"]
        )
        params = {k: [list(x) for x in v] if k == "extractor_conv_layer_config" else v
                  for k, v in b._params.items()}  # fmt: skip
        assert params == w["_params"], name
        if "get_labels" in w:
            assert list(b._remove_aux_axis) == w["_remove_aux_axis"], name
            assert list(b.get_labels()) == w["get_labels"], name
        if "get_labels_blank" in w and w["class"] != "Wav2Vec2FABundle":
            assert list(b.get_labels(blank="<b>")) == w["get_labels_blank"]
        if "get_dict" in w:
            assert b.get_dict() == w["get_dict"]
            assert list(b.get_labels(star=None)) == w["get_labels_no_star"]
            assert isinstance(b.get_labels(), tuple)


def test_without_the_file_the_error_says_which_file_goes_where(cache):
    with pytest.raises(CheckpointError) as e:
        pipelines.WAV2VEC2_ASR_BASE_960H.get_model()
    msg = str(e.value)
    assert "\n" not in msg
    assert "wav2vec2_fairseq_base_ls960_asr_ls960.pth" in msg
    assert "https://download.pytorch.org/torchaudio/models/" in msg
    assert str(cache / "wav2vec2_fairseq_base_ls960_asr_ls960.pth") in msg


def test_asr_bundle_reads_its_file_and_drops_torchaudio_s_aux_rows(cache, tmp_path):
    bundle = dataclasses.replace(pipelines.WAV2VEC2_ASR_BASE_960H, _path="tiny_asr.pth",
                                 _params=_params(len(EN) + 1))  # fmt: skip
    state = _tiny_file(cache, "tiny_asr.pth", len(EN) + 4)
    model = bundle.get_model()
    assert isinstance(model, models.Wav2Vec2Model) and not model.training
    keep = [i for i in range(len(EN) + 4) if i not in (1, 2, 3)]
    assert torch.equal(model.aux.weight, state["aux.weight"][keep])
    # the same file by path, by directory and through dl_kwargs
    for kwargs in (
        {"path": cache / "tiny_asr.pth"},
        {"path": cache},
        {"dl_kwargs": {"model_dir": str(cache), "file_name": "tiny_asr.pth"}},
    ):
        other = bundle.get_model(**kwargs)
        assert torch.equal(other.aux.weight, model.aux.weight)
    # torch hub's cache, where torchaudio downloaded it
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (cache / "tiny_asr.pth").rename(hub / "tiny_asr.pth")
    assert torch.equal(bundle.get_model().aux.weight, model.aux.weight)


def test_normalising_bundles_normalise_the_batch_as_torchaudio_or_each_item(cache):
    bundle = dataclasses.replace(pipelines.WAV2VEC2_LARGE_LV60K, _path="tiny.pth",
                                 _params=_params(None))  # fmt: skip
    _tiny_file(cache, "tiny.pth", None)
    model = bundle.get_model()
    assert isinstance(model, pipelines.BundleModel) and model.normalization == "batch"
    inner = model.model
    t = variant("wav2vec2-postln")[2]
    x = 3.0 * t["input"] + 0.5
    x[1, 5200:] = 0.0
    lengths = t["lengths"]
    with torch.no_grad():
        # torchaudio's: one layer norm over the whole (batch, samples) tensor
        torch.testing.assert_close(model(x)[0], inner(F.layer_norm(x, x.shape))[0], **FP32)
        per_item = bundle.get_model(normalization="utterance")
        inner.exact = per_item.model.exact = True
        y, _ = per_item(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = per_item(x[b : b + 1, :n])[0][0]
            torch.testing.assert_close(y[b, : alone.shape[0]], alone, **FP32)
        feats, _ = per_item.extract_features(x, lengths)
        torch.testing.assert_close(feats[-1], inner.extract_features(
            pipelines.normalize_waveforms(x, lengths, "utterance"), lengths)[0][-1], **FP32)  # fmt: skip


def test_mms_fa_model_gives_log_probabilities_and_a_star_column(cache):
    labels = pipelines.MMS_FA._labels
    bundle = dataclasses.replace(pipelines.MMS_FA, _path="https://example.org/x/tiny_fa.pt",
                                 _params=_params(len(labels) + 1))  # fmt: skip
    _tiny_file(cache, "tiny_fa.pt", len(labels) + 4)
    x = variant("wav2vec2-postln")[2]["input"]
    with torch.no_grad():
        star, _ = bundle.get_model()(x)
        plain, _ = bundle.get_model(with_star=False)(x)
    assert star.shape[-1] == len(bundle.get_labels()) == plain.shape[-1] + 1
    assert torch.equal(star[..., -1], torch.zeros_like(star[..., -1]))
    torch.testing.assert_close(plain.exp().sum(-1), torch.ones(plain.shape[:-1]), **FP32)


# torchaudio's tutorial "Speech Recognition with Wav2Vec2" (feature extraction and CTC
# greedy decoding), as written against torchaudio; only the import line differs
TUTORIAL = """
from w2v.compat import torchaudio

bundle = torchaudio.pipelines.WAV2VEC2_ASR_BASE_960H
print("Sample Rate:", bundle.sample_rate)
print("Labels:", bundle.get_labels())
model = bundle.get_model().to(device)
print(model.__class__)

waveform = waveform.to(device)
if sample_rate != bundle.sample_rate:
    waveform = torchaudio.functional.resample(waveform, sample_rate, bundle.sample_rate)

with torch.inference_mode():
    features, _ = model.extract_features(waveform)

with torch.inference_mode():
    emission, _ = model(waveform)


class GreedyCTCDecoder(torch.nn.Module):
    def __init__(self, labels, blank=0):
        super().__init__()
        self.labels = labels
        self.blank = blank

    def forward(self, emission: torch.Tensor) -> str:
        indices = torch.argmax(emission, dim=-1)  # [num_seq,]
        indices = torch.unique_consecutive(indices, dim=-1)
        indices = [i for i in indices if i != self.blank]
        return "".join([self.labels[i] for i in indices])


decoder = GreedyCTCDecoder(labels=bundle.get_labels())
transcript = decoder(emission[0])
"""


def test_tutorial_runs_with_only_the_import_changed(cache, monkeypatch, capsys):
    tiny = dataclasses.replace(pipelines.WAV2VEC2_ASR_BASE_960H, _path="tiny_asr.pth",
                               _params=_params(len(EN) + 1))  # fmt: skip
    _tiny_file(cache, "tiny_asr.pth", len(EN) + 4, seed=3)
    monkeypatch.setattr(pipelines, "WAV2VEC2_ASR_BASE_960H", tiny)
    waveform = variant("wav2vec2-postln")[2]["input"][:1]
    scope = {"torch": torch, "device": torch.device("cpu"), "waveform": waveform,
             "sample_rate": 16000}  # fmt: skip
    exec(compile(TUTORIAL, "tutorial", "exec"), scope)
    assert "Sample Rate: 16000" in capsys.readouterr().out
    features, emission, transcript = scope["features"], scope["emission"], scope["transcript"]
    assert len(features) == 2 and features[0].shape == (1, 24, 32)
    assert emission.shape == (1, 24, len(EN) + 1)
    # the transcript is the greedy CTC decoding of the emission
    ids = torch.unique_consecutive(emission[0].argmax(-1)).tolist()
    assert transcript == "".join(EN[i - 1] for i in ids if i != 0)
    assert transcript  # a random model still emits some non-blank labels
