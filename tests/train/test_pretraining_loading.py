"""Pretraining checkpoints load with nothing dropped, and ``w2v convert`` keeps the parts."""

from __future__ import annotations

import warnings

import pytest
import torch
from w2v.convert.checkpoint import PRETRAINING_FILE, read
from w2v.convert.fairseq_file import read_fairseq
from w2v.convert.safe_pickle import load_torch_file

import w2v
from tests.helpers import FAIRSEQ_FIXTURES, TINY_W2V
from w2v.nn.pretraining import PretrainingConfig


def quiet_load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return w2v.load(path, **kwargs)


@pytest.mark.parametrize(
    ("name", "objective"), [("wav2vec2_default", "wav2vec2"), ("hubert", "hubert")]
)
def test_fairseq_pretraining_checkpoint_keeps_its_parts(name, objective, tmp_path):
    src = FAIRSEQ_FIXTURES / f"{name}.pt"
    raw = load_torch_file(src)["model"]
    model = quiet_load(src)
    assert model.pretraining is not None
    assert model.pretraining.pretraining_config.objective == objective
    state = model.state_dict()
    assert torch.equal(state["pretraining.masked_spec_embed"], raw["mask_emb"])
    if objective == "wav2vec2":
        assert torch.equal(state["pretraining.quantizer.codevectors"], raw["quantizer.vars"])
        assert torch.equal(state["pretraining.project_hid.weight"], raw["final_proj.weight"])
    else:
        assert torch.equal(state["pretraining.label_embeddings"], raw["label_embs_concat"])
        assert torch.equal(state["pretraining.final_proj.bias"], raw["final_proj.bias"])
    # converting keeps them, bit for bit, and the directory loads them back
    dst = tmp_path / "out"
    w2v.loading.convert(src, dst)
    assert (dst / PRETRAINING_FILE).is_file()
    again = quiet_load(dst)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    assert read(dst).pretraining == model.pretraining.pretraining_config


def test_strict_read_drops_pretraining_parts_as_before():
    ckpt = read_fairseq(FAIRSEQ_FIXTURES / "wav2vec2_default.pt", strict=True)
    assert ckpt.pretraining is None and not ckpt.extra


def test_pretraining_config_is_checked_and_round_trips():
    cfg = PretrainingConfig(num_codevector_groups=2, num_codevectors_per_group=4, codevector_dim=8)
    assert PretrainingConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="divisible"):
        PretrainingConfig(codevector_dim=9, num_codevector_groups=2)
    with pytest.raises(ValueError, match="num_classes"):
        PretrainingConfig(objective="hubert")
    with pytest.raises(ValueError, match="objective"):
        PretrainingConfig(objective="bert")


def test_add_pretraining_and_time_mask_need_each_other():
    model = w2v.from_config(w2v.Config(**TINY_W2V))
    x = torch.randn(1, 4000)
    mask = torch.zeros(1, w2v.num_frames(4000, model.config), dtype=torch.bool)
    mask[0, 2:5] = True
    with pytest.raises(ValueError, match="mask embedding"):
        model.encode(x, time_mask=mask)
    model.add_pretraining(PretrainingConfig(objective="mask"))
    plain = model.encode(x).output
    masked = model.encode(x, time_mask=mask).output
    assert not torch.equal(plain, masked)
    torch.testing.assert_close(model(x)[0], plain, atol=0, rtol=0)
    none = torch.zeros(1, 32, dtype=torch.bool)
    assert torch.equal(model.encode(x, feature_mask=none).output, plain)
    some = none.clone()
    some[0, :8] = True
    assert not torch.equal(model.encode(x, feature_mask=some).output, plain)
