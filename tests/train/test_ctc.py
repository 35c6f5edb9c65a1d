"""CTC loss with transformers' ``Wav2Vec2ForCTC`` conventions."""

from __future__ import annotations

import warnings

import pytest
import torch

import w2v
from tests.helpers import hf_class, hf_config, perturb_
from w2v.train import ctc_loss

pytest.importorskip("transformers")

LENGTHS = [16000, 9000]
LABELS = [[3, 4, 4, 7, 1, 9, 2], [5, 6, 6, 11]]


@pytest.fixture(scope="module")
def pair(device, tmp_path_factory):
    torch.manual_seed(0)
    hf = perturb_(hf_class("wav2vec2", "ForCTC")(hf_config("wav2vec2", vocab_size=12)))
    path = tmp_path_factory.mktemp("ctc")
    hf.save_pretrained(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = w2v.load(path)
    return hf.to(device), ours.to(device)


def padded(rows: list[list[int]], fill: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [fill] * (width - len(r)) for r in rows])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ctc_loss_equals_transformers(pair, reduction):
    hf, ours = pair
    hf.config.ctc_loss_reduction = reduction
    device = ours.lm_head.weight.device
    x = torch.randn(2, max(LENGTHS), generator=torch.Generator().manual_seed(1)).to(device)
    lengths = torch.tensor(LENGTHS, device=device)
    attention = (torch.arange(x.shape[1], device=device)[None] < lengths[:, None]).long()
    with torch.no_grad():
        ref = hf(x, attention_mask=attention, labels=padded(LABELS, -100).to(device)).loss
        out = ctc_loss(
            ours, x, lengths, padded(LABELS, 0).to(device), [len(r) for r in LABELS],
            reduction=reduction, exact=False,
        )  # fmt: skip
    assert out.dim() == 0
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=0)


def test_impossible_item_with_zero_infinity_is_finite_with_zero_gradient(pair):
    _, ours = pair
    ours.train()
    device = ours.lm_head.weight.device
    x = torch.randn(1, 4000, device=device)  # 12 frames: 30 distinct labels cannot fit
    labels = torch.arange(30, device=device)[None] % 11 + 1
    ours.zero_grad()
    assert torch.isinf(ctc_loss(ours, x, None, labels, [30]))
    loss = ctc_loss(ours, x, None, labels, [30], zero_infinity=True)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in ours.parameters() if p.grad is not None]
    assert grads and all(not g.any() for g in grads)
    ours.eval()


def test_ctc_arguments_are_checked(pair):
    _, ours = pair
    device = ours.lm_head.weight.device
    x = torch.randn(1, 4000, device=device)
    ones = torch.ones(1, 2, dtype=torch.long, device=device)
    with pytest.raises(ValueError, match="reduction"):
        ctc_loss(ours, x, None, ones, [2], reduction="none")
    with pytest.raises(ValueError, match="ids in"):
        ctc_loss(ours, x, None, torch.tensor([[1, 12]], device=device), [2])
