"""Task heads against transformers on tiny random-init models.

Each case builds a transformers head model (or the community ``*ForSpeechClassification``
class, defined below from its well-known notebook definition), saves it with
``save_pretrained``, and rebuilds it from the saved ``config.json`` and
``model.safetensors``: the backbone through w2v's converter, the head with
:func:`head_config_from_hf` and its keys loaded unchanged (``strict=True``). Then:

* each item alone matches transformers' logits (and x-vector embeddings);
* in a padded batch with ``lengths`` (padding filled with noise) each item matches
  itself alone;
* where transformers is batch-correct (layer-norm feature extractor, and for x-vector no
  dilation) the batch also matches transformers' batch with an ``attention_mask``.
"""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from w2v.convert.hf import MODEL_TYPES, config_from_hf, convert_hf_state_dict

from tests.helpers import HF_PREFIX, TINY_W2V, hf_class, hf_config, perturb_
from w2v.config import Config
from w2v.nn.heads import HeadConfig, build_head, head_config_from_hf, head_kind, run_head
from w2v.nn.model import Model

pytest.importorskip("transformers")

ATOL_HF = {torch.float32: 1e-4}  # against transformers
ATOL_BATCH = {torch.float32: 2e-5}  # a batch item against itself alone
DTYPE = torch.float32

LABELS = ("angry", "happy", "neutral", "sad", "calm")
HEAD_SIZES = dict(
    id2label=dict(enumerate(LABELS)),
    classifier_proj_size=12,
    tdnn_dim=(24, 24, 24, 24, 40),
    xvector_output_dim=16,
)
PRE_LN = dict(feat_extract_norm="layer", do_stable_layer_norm=True)
# backbone variants: family, config overrides, whether transformers' batch is exact
BACKBONES = {
    "wav2vec2": ("wav2vec2", {}, False),
    "wav2vec2-pre": ("wav2vec2", PRE_LN, True),
    "hubert": ("hubert", {}, False),
    "data2vec-audio": ("data2vec-audio", {}, False),
    "wavlm": ("wavlm", {}, False),
    "wavlm-pre": ("wavlm", PRE_LN, True),
}
# heads: transformers class suffix, config overrides
HEADS = {
    "sequence": ("ForSequenceClassification", {}),
    "sequence-weighted": ("ForSequenceClassification", dict(use_weighted_layer_sum=True)),
    "frame": ("ForAudioFrameClassification", {}),
    "frame-weighted": ("ForAudioFrameClassification", dict(use_weighted_layer_sum=True)),
    "xvector": ("ForXVector", {}),
    "xvector-weighted": ("ForXVector", dict(use_weighted_layer_sum=True)),
    "xvector-undilated": ("ForXVector", dict(tdnn_dilation=(1,) * 5)),
    "speech-mean": ("ForSpeechClassification", dict(pooling_mode="mean")),
    "speech-sum": ("ForSpeechClassification", dict(pooling_mode="sum")),
    "speech-max": ("ForSpeechClassification", dict(pooling_mode="max")),
}
# transformers has no HuBERT frame classification or x-vector
CASES = [
    (b, h)
    for b in BACKBONES
    for h in HEADS
    if not (b == "hubert" and h.startswith(("frame", "xvector")))
]
# the x-vector head needs 16 frames (5200 samples) with the default TDNN; others get a
# one-frame item (401 samples)
LENGTHS = {"xvector": [16000, 5600, 11111], "other": [16000, 401, 11111]}


def speech_classification_class(family: str) -> type:
    """The community ``<Family>ForSpeechClassification`` (the wav2vec2 emotion-recognition
    notebook): the backbone, then ``pooling_mode`` over every frame of the last hidden
    state, then ``classifier`` = dropout → dense → tanh → dropout → out_proj."""
    base = hf_class(family, "PreTrainedModel")
    backbone = hf_class(family, "Model")

    class ClassificationHead(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.dropout = nn.Dropout(config.final_dropout)
            self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

        def forward(self, x):
            x = self.dropout(torch.tanh(self.dense(self.dropout(x))))
            return self.out_proj(x)

    class ForSpeechClassification(base):
        def __init__(self, config):
            super().__init__(config)
            self.pooling_mode = config.pooling_mode
            setattr(self, self.base_model_prefix, backbone(config))
            self.classifier = ClassificationHead(config)
            self.post_init()

        def forward(self, input_values, attention_mask=None):
            encoder = getattr(self, self.base_model_prefix)
            h = encoder(input_values, attention_mask=attention_mask).last_hidden_state
            if self.pooling_mode == "mean":
                pooled = h.mean(dim=1)
            elif self.pooling_mode == "sum":
                pooled = h.sum(dim=1)
            else:
                pooled = h.max(dim=1).values
            return SimpleNamespace(logits=self.classifier(pooled))

    # save_pretrained writes the class name into config.json "architectures"
    name = HF_PREFIX[family] + "ForSpeechClassification"
    ForSpeechClassification.__name__ = ForSpeechClassification.__qualname__ = name
    return ForSpeechClassification


def hf_head_model(family: str, backbone: dict, suffix: str, head: dict) -> nn.Module:
    torch.manual_seed(0)
    config = hf_config(family, **backbone, **HEAD_SIZES, **head)
    if suffix == "ForSpeechClassification":
        cls = speech_classification_class(family)
    else:
        cls = hf_class(family, suffix)
    model = perturb_(cls(config))
    scale_head_(model, model.base_model_prefix + ".")
    return model


def scale_head_(model: nn.Module, prefix: str) -> None:
    """Give the head's matrices a 1/sqrt(fan_in) scale, in place. transformers draws them
    with std 0.02, so the head's outputs would hardly depend on its inputs and a wrong
    pooling (a biased std, a sum for a mean) could hide under the tolerance."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith(prefix) and p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def from_saved(directory) -> tuple[Model, nn.Module, HeadConfig]:
    """w2v backbone and head rebuilt from a ``save_pretrained`` directory."""
    cfg = json.loads((directory / "config.json").read_text())
    state = load_file(directory / "model.safetensors")
    config, family = config_from_hf(cfg)
    prefix = MODEL_TYPES[cfg["model_type"]][1]
    backbone = {k: v for k, v in state.items() if k.startswith(prefix)}
    converted, _ = convert_hf_state_dict(backbone, config, family)
    model = Model(config).eval()
    model.load_state_dict(converted, strict=True)
    head_config = head_config_from_hf(cfg)
    head = build_head(head_config, config).eval()
    # the head's keys are the checkpoint's keys outside the backbone, unchanged
    head.load_state_dict({k: v for k, v in state.items() if not k.startswith(prefix)}, strict=True)
    return model, head, head_config


def padded_batch(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Items of 0.3 * N(0, 1) audio, right-padded with different noise (never read)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(lengths), max(lengths), generator=g)
    for j, n in enumerate(lengths):
        x[j, :n] *= 0.3
    return x, torch.tensor(lengths)


def outputs(out) -> dict[str, torch.Tensor]:
    """transformers output → the head outputs w2v returns."""
    d = {"logits": out.logits}
    if getattr(out, "embeddings", None) is not None:
        d["embeddings"] = out.embeddings
    return d


@pytest.fixture(scope="module", params=[f"{b}/{h}" for b, h in CASES])
def case(request, tmp_path_factory):
    b, h = request.param.split("/")
    family, backbone, hf_batch_exact = BACKBONES[b]
    suffix, head_overrides = HEADS[h]
    hf = hf_head_model(family, backbone, suffix, head_overrides)
    directory = tmp_path_factory.mktemp(request.param.replace("/", "-"))
    hf.save_pretrained(directory)
    model, head, head_config = from_saved(directory)

    lengths = LENGTHS["xvector" if h.startswith("xvector") else "other"]
    x, lens = padded_batch(lengths)
    mask = (torch.arange(x.shape[1])[None] < lens[:, None]).long()
    r = SimpleNamespace(name=request.param, head_config=head_config, lengths=lengths)
    with torch.inference_mode():
        r.hf_alone = [outputs(hf(x[j : j + 1, :n])) for j, n in enumerate(lengths)]
        r.alone = [run_head(model, head, x[j : j + 1, :n]) for j, n in enumerate(lengths)]
        r.batched = run_head(model, head, x, lens)
        r.frames = model.hidden_states(x, lens, [0])[1].tolist()
        # custom head: pools padding whatever the mask; x-vector: ignores the TDNN dilation
        r.hf_batch_exact = hf_batch_exact and suffix != "ForSpeechClassification"
        r.hf_batch_exact &= not (suffix == "ForXVector" and max(head_config.tdnn_dilation) > 1)
        if r.hf_batch_exact:
            r.hf_batched = outputs(hf(x, attention_mask=mask))
    return r


def per_item(out: dict[str, torch.Tensor], frames: list[int]) -> list[dict[str, torch.Tensor]]:
    """A batched output → one output per item (batch of 1), per-frame outputs (B, T, labels)
    cut to the item's valid frames."""
    return [
        {k: v[j : j + 1, :n] if v.dim() == 3 else v[j : j + 1] for k, v in out.items()}
        for j, n in enumerate(frames)
    ]


def assert_items_close(ours: list[dict], refs: list[dict], atol: float, what: str) -> None:
    assert len(ours) == len(refs)
    for j, (a, b) in enumerate(zip(ours, refs, strict=True)):
        assert set(a) == set(b), f"{what} item {j}: outputs {sorted(a)}, expected {sorted(b)}"
        for key in b:
            torch.testing.assert_close(
                a[key],
                b[key],
                atol=atol,
                rtol=0,
                msg=lambda m, j=j, k=key: f"{what} item {j} {k}: {m}",
            )


def test_item_alone_matches_transformers(case):
    assert_items_close(case.alone, case.hf_alone, ATOL_HF[DTYPE], case.name)


def test_batch_item_matches_item_alone(case):
    batched = per_item(case.batched, case.frames)
    assert_items_close(batched, case.alone, ATOL_BATCH[DTYPE], case.name)


def test_batch_matches_transformers_batch(case):
    if not case.hf_batch_exact:
        pytest.skip("transformers' batched numbers read padding here (see w2v.nn.heads)")
    batched, refs = per_item(case.batched, case.frames), per_item(case.hf_batched, case.frames)
    assert_items_close(batched, refs, ATOL_HF[DTYPE], case.name)


def test_outputs_and_labels(case):
    hc = case.head_config
    assert hc.labels == LABELS and hc.id2label == dict(enumerate(LABELS))
    assert set(case.batched) == ({"logits", "embeddings"} if hc.kind == "xvector" else {"logits"})
    if hc.kind == "frame_classification":
        logits = case.batched["logits"]
        assert logits.shape[:2] == (len(case.frames), max(case.frames))
        for j, n in enumerate(case.frames):
            assert not logits[j, n:].any(), "padded frames' logits are not zero"


# ---------------------------------------------------------------- config reading


def test_head_kind_from_architecture():
    assert head_kind("WavLMForXVector") == "xvector"
    assert head_kind("HubertForSequenceClassification") == "sequence_classification"
    assert head_kind("Data2VecAudioForAudioFrameClassification") == "frame_classification"
    assert head_kind("Wav2Vec2ForSpeechClassification") == "speech_classification"
    for name in ("Wav2Vec2ForCTC", "Wav2Vec2Model", "Wav2Vec2ForPreTraining", "Foo"):
        assert head_kind(name) is None
    assert head_config_from_hf({"model_type": "wav2vec2"}) is None
    assert head_config_from_hf({"architectures": ["Wav2Vec2ForCTC"]}) is None


def test_head_config_from_hf_fields_and_defaults():
    hc = head_config_from_hf(
        {"architectures": ["Wav2Vec2ForSpeechClassification"], "id2label": {"1": "b", "0": "a"}}
    )
    assert (hc.kind, hc.num_labels, hc.labels, hc.pooling_mode) == (
        "speech_classification", 2, ("a", "b"), "mean",
    )  # fmt: skip
    hc = head_config_from_hf({"num_labels": 7}, "WavLMForXVector")
    assert (hc.num_labels, hc.labels, hc.tdnn_dilation) == (7, None, (1, 2, 3, 1, 1))
    assert HeadConfig.from_dict(json.loads(json.dumps(hc.to_dict()))) == hc


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"pooling_mode": "median"}, "pooling_mode"),
        ({"tdnn_kernel": [3]}, "same length"),
        ({"id2label": {"0": "a", "2": "c"}}, "id2label keys"),
        ({"id2label": {"x": "a"}}, "id2label keys"),
        ({"xvector_output_dim": 0}, "xvector_output_dim"),
        ({"use_weighted_layer_sum": "yes"}, "use_weighted_layer_sum"),
    ],
)
def test_head_config_from_hf_refuses_malformed(cfg, match):
    tdnn = {"tdnn_dim": [8, 8], "tdnn_kernel": [3, 3], "tdnn_dilation": [1, 1]}
    with pytest.raises(ValueError, match=match):
        head_config_from_hf({**tdnn, **cfg}, "Wav2Vec2ForXVector")


# ---------------------------------------------------------------- run_head


def tiny_model(**overrides) -> Model:
    torch.manual_seed(0)
    return Model(Config(**{**TINY_W2V, **overrides})).eval()


def test_run_head_without_head_runs_ctc_or_refuses():
    x = torch.randn(2, 4000)
    ctc = tiny_model(vocab_size=9)
    with torch.inference_mode():
        out = run_head(ctc, None, x)
        torch.testing.assert_close(out["logits"], ctc(x)[0], atol=0, rtol=0)
    with pytest.raises(ValueError, match="no head"):
        run_head(tiny_model(), None, x)


def test_xvector_refuses_too_short_items():
    model = tiny_model()
    head = build_head(HeadConfig("xvector"), model.config).eval()
    assert head.min_frames == 16
    x, lengths = padded_batch([6000, 5100])
    with torch.inference_mode():
        run_head(model, head, x[:1, :5200])  # exactly 16 frames
        with pytest.raises(ValueError, match=r"at least 16 frames \(5200 samples.*items \[1\]"):
            run_head(model, head, x, lengths)


def test_head_state_dict_keys():
    config = Config(**TINY_W2V)
    hc = HeadConfig("xvector", use_weighted_layer_sum=True, tdnn_dim=(8, 8), tdnn_kernel=(3, 1),
                    tdnn_dilation=(2, 1))  # fmt: skip
    assert sorted(build_head(hc, config).state_dict()) == sorted(
        ["layer_weights", "projector.weight", "projector.bias", "tdnn.0.kernel.weight",
         "tdnn.0.kernel.bias", "tdnn.1.kernel.weight", "tdnn.1.kernel.bias",
         "feature_extractor.weight", "feature_extractor.bias", "classifier.weight",
         "classifier.bias", "objective.weight"]
    )  # fmt: skip
    hc = dataclasses.replace(hc, kind="speech_classification", use_weighted_layer_sum=False)
    assert sorted(build_head(hc, config).state_dict()) == [
        "classifier.dense.bias", "classifier.dense.weight",
        "classifier.out_proj.bias", "classifier.out_proj.weight",
    ]  # fmt: skip
