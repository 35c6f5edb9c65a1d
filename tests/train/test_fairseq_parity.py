"""The fairseq-style losses against fairseq's own criteria, from fixtures made by
``tests/train/make_fairseq_fixtures.py`` in an environment with fairseq: its
``Wav2vecCriterion`` (feature penalty, loss weights, perplexities) and ``HubertCriterion``
(masked and unmasked prediction) on the committed tiny fairseq checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import w2v
from tests.helpers import FAIRSEQ_FIXTURES
from w2v.train import hubert_loss, wav2vec2_loss

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RTOL = 1e-5


def quiet_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return w2v.load(path)


def close(ours: torch.Tensor, theirs: torch.Tensor, what: str, atol: float = 1e-6) -> None:
    torch.testing.assert_close(
        ours.detach().float(), theirs.float(), rtol=RTOL, atol=atol, msg=lambda m: f"{what}: {m}"
    )


@pytest.mark.parametrize("name", ["wav2vec2_default", "wav2vec2_layernorm"])
def test_wav2vec2_fairseq_style_equals_wav2vec_criterion(name):
    ref = load_file(str(FIXTURES / f"{name}.loss.safetensors"))
    inputs = load_file(str(FAIRSEQ_FIXTURES / "inputs.safetensors"))
    model = quiet_load(FAIRSEQ_FIXTURES / f"{name}.pt")
    with torch.no_grad():
        out = wav2vec2_loss(
            model, inputs["waveform"], inputs["lengths"], mask_time_indices=ref["mask"],
            sampled_negative_indices=ref["negatives"], style="fairseq", exact=False,
        )  # fmt: skip
    assert float(out["num_masked"]) == float(ref["sample_size"])
    close(out["loss"], ref["loss"], "loss")
    close(0.1 * out["diversity_loss"], ref["diversity_term"], "diversity term")
    close(10.0 * out["feature_penalty"], ref["penalty_term"], "feature penalty term")
    close(out["contrastive_loss"], ref["contrastive"], "contrastive")
    close(out["codevector_perplexity"], ref["prob_perplexity"], "prob perplexity")
    close(out["code_perplexity"], ref["code_perplexity"], "code perplexity")


def test_hubert_masked_prediction_equals_hubert_criterion():
    ref = load_file(str(FIXTURES / "hubert.loss.safetensors"))
    wave = load_file(str(FAIRSEQ_FIXTURES / "inputs.safetensors"))["waveform"][:1].expand(2, -1)
    model = quiet_load(FAIRSEQ_FIXTURES / "hubert.pt")
    with torch.no_grad():
        out = hubert_loss(
            model, wave, None, ref["labels"], mask_time_indices=ref["mask"],
            masked_weight=1.0, unmasked_weight=0.5, exact=False,
        )  # fmt: skip
    for kind in ("masked", "unmasked"):
        # cosine / 0.1: logits up to 10, so 1e-5 absolute is 1e-6 of their scale
        close(out[f"logits_{kind}"], ref[f"logits_{kind}"], f"{kind} logits", atol=1e-5)
        close(out[f"{kind}_loss"], ref[f"{kind}_loss"], f"{kind} loss")
    close(10.0 * out["feature_penalty"], ref["penalty_term"], "feature penalty term")
    close(out["loss"], ref["loss"], "loss")
