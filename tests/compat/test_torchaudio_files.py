"""torchaudio ``.pth`` files through ``w2v.load`` / ``w2v convert``, and the
``import_huggingface_model`` / ``import_fairseq_model`` equivalents."""

from __future__ import annotations

import pytest
import torch

import w2v
from tests.compat.torchaudio_fixtures import FP32, NO_DROPOUT, torchaudio_state, variant
from tests.helpers import FAIRSEQ_FIXTURES, HF_FIXTURES
from w2v.cli import main
from w2v.compat.torchaudio import models, pipelines
from w2v.compat.torchaudio.models.wav2vec2.utils import (
    import_fairseq_model,
    import_huggingface_model,
)
from w2v.errors import CheckpointError


def _pth(tmp_path, name: str, state: dict):
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_load_reads_a_torchaudio_pth_with_the_architecture_from_its_shapes(tmp_path):
    path = _pth(tmp_path, "my_wavlm.pth", torchaudio_state("wavlm-preln"))
    model = w2v.load(path)
    c = model.config
    assert (c.rel_pos_buckets, c.num_heads, c.vocab_size, c.num_layers) == (320, 2, 6, 2)
    assert c.conv_norm == "layer" and c.layer_norm_first and not c.conv_bias
    assert model.family == "wavlm"
    t = variant("wavlm-preln")[2]
    with torch.no_grad():
        torch.testing.assert_close(model(t["input"])[0], t["forward"], **FP32)


def test_older_weight_norm_spelling_in_a_file(tmp_path):
    state = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in torchaudio_state("wavlm-postln").items()
    }
    model = w2v.load(_pth(tmp_path, "old.pth", state))
    t = variant("wavlm-postln")[2]
    with torch.no_grad():
        torch.testing.assert_close(model(t["input"])[0], t["forward"], **FP32)


def test_convert_cli_writes_a_w2v_checkpoint(tmp_path, capsys):
    src = _pth(tmp_path, "w.pth", torchaudio_state("wavlm-postln"))
    assert main(["convert", str(src), str(tmp_path / "out")]) == 0
    model = w2v.load(tmp_path / "out")
    t = variant("wavlm-postln")[2]
    with torch.no_grad():
        torch.testing.assert_close(model(t["input"])[0], t["forward"], **FP32)


def test_heads_of_an_unknown_width_need_an_architecture(tmp_path, capsys):
    # wav2vec2/HuBERT weights do not store the number of attention heads
    src = _pth(tmp_path, "w.pth", torchaudio_state("wav2vec2-postln"))
    with pytest.raises(CheckpointError, match="attention heads.*architecture name"):
        w2v.load(src)
    # a preset name fixes the architecture; these tiny weights are not wav2vec2_base's
    with pytest.raises(CheckpointError, match="config and weights disagree"):
        w2v.load(src, arch="wav2vec2_base")
    assert main(["convert", str(src), str(tmp_path / "o"), "--arch", "nonsense"]) == 2
    assert "unknown architecture" in capsys.readouterr().err
    # an architecture name is for torchaudio files only
    with pytest.raises(CheckpointError, match="torchaudio state dicts only"):
        w2v.load(FAIRSEQ_FIXTURES / "hubert.pt", arch="hubert_base")


def test_fairseq_files_are_still_fairseq(tmp_path):
    model = w2v.load(FAIRSEQ_FIXTURES / "hubert.pt")
    assert model.family == "hubert"


def test_import_huggingface_model_takes_a_model_directory():
    src = HF_FIXTURES / "wav2vec2-ctc"
    model = import_huggingface_model(src)
    assert isinstance(model, models.Wav2Vec2Model) and model.training  # as torchaudio's
    assert isinstance(model.aux, torch.nn.Linear)
    r = model.w2v_model.regularization  # the config's dropouts, as torchaudio reads them
    assert (r.attention_dropout, r.hidden_dropout, r.layerdrop) == (0.1, 0.1, 0.1)
    x = torch.randn(1, 8000)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)[0], w2v.load(src)(x)[0], **FP32)


def test_import_fairseq_model_takes_a_pt_file():
    src = FAIRSEQ_FIXTURES / "wav2vec2_ctc.pt"
    model = import_fairseq_model(src)
    assert isinstance(model, models.Wav2Vec2Model) and model.aux is not None
    x = torch.randn(1, 8000)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)[0], w2v.load(src)(x)[0], **FP32)
    assert "aux.weight" in model.state_dict()


@pytest.mark.slow
def test_full_size_bundle_files_by_name_and_by_architecture(tmp_path):
    # a file named as a bundle's gets that bundle's labels, normalisation and aux rows
    torch.manual_seed(0)
    ta = models.wav2vec2_base(aux_num_out=32, **{k: 0.0 for k in NO_DROPOUT})
    path = _pth(tmp_path, "wav2vec2_fairseq_base_ls960_asr_ls960.pth", ta.state_dict())
    model = w2v.load(path)
    assert model.vocab == list(pipelines.WAV2VEC2_ASR_BASE_960H.get_labels())
    assert not model.normalize and model.config.vocab_size == 29
    bundle_model = pipelines.WAV2VEC2_ASR_BASE_960H.get_model(path=path)
    x = torch.randn(1, 16000)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], bundle_model(x)[0], **FP32)
    # the same weights under another name: read from the shapes, all 32 rows kept;
    # a HuBERT file is told from wav2vec 2.0 by its name or by --arch only
    other = _pth(tmp_path, "mine.pth", ta.state_dict())
    plain = w2v.load(other)
    assert plain.config.vocab_size == 32 and plain.family == "wav2vec2"
    assert w2v.load(other, arch="hubert_base").family == "hubert"
