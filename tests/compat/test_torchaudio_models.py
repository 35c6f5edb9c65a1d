"""w2v.compat.torchaudio.models against torchaudio's own outputs, keys and signatures
(fixtures written by torchaudio 2.11.1, tests/fixtures/make_torchaudio_fixtures.py)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch
from torch.export import Dim, export

from tests.compat.torchaudio_fixtures import (
    FP32,
    TRAIN,
    TRAIN_NO_LAYER_DROP,
    TRAIN_SEEDS,
    VARIANTS,
    api,
    compat_model,
    expand_keys,
    keys,
    torchaudio_state,
    variant,
)
from w2v.compat.torchaudio import models

WAVLM = ("wavlm-postln", "wavlm-preln")


def _shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


# ----------------------------------------------------------------------------- API
def test_names_signatures_and_defaults_are_torchaudio_s():
    want = api()
    for name, params in want["factories"].items():
        got = inspect.signature(getattr(models, name)).parameters
        assert list(got) == [p for p, _ in params], name
        for p, default in params:
            have = got[p].default
            assert (
                (have is inspect.Parameter.empty) if default == "<required>" else have == default
            ), (name, p)
    for method, params in want["methods"].items():
        got = inspect.signature(getattr(models.Wav2Vec2Model, method)).parameters
        got_params = [(p.name, p.default) for p in got.values() if p.name != "self"]
        assert [p for p, _ in got_params] == [p for p, _ in params], method
        for (_, have), (_, default) in zip(got_params, params, strict=True):
            assert (have is inspect.Parameter.empty) if default == "<required>" else have == default


@pytest.mark.parametrize("name", sorted(keys()))
def test_state_dict_keys_and_shapes_are_torchaudio_s(name):
    preset, _, aux = name.partition("+")
    with torch.device("meta"):
        if preset == "wavlm_model":
            _, arch, _ = variant("wavlm-preln")
            model = models.wavlm_model(**{**arch, "aux_num_out": 9}, **dict.fromkeys(
                ("encoder_projection_dropout", "encoder_attention_dropout",
                 "encoder_ff_interm_dropout", "encoder_dropout", "encoder_layer_drop"), 0.0))  # fmt: skip
        else:
            model = getattr(models, preset)(**({"aux_num_out": 32} if aux else {}))
    assert _shapes(model.state_dict()) == expand_keys(keys()[name])


def test_attribute_paths_are_torchaudio_s_and_the_modules_are_w2v_s():
    model = compat_model("wavlm-preln")
    w = model.w2v_model
    assert model.feature_extractor.conv_layers is w.feature_extractor.conv_layers
    assert model.encoder.feature_projection is w.feature_projection
    assert model.encoder.transformer is w.encoder
    assert model.encoder.transformer.layers[1] is w.encoder.layers[1]
    assert model.aux is w.lm_head and model.aux.out_features == 6
    # one set of weights: every parameter is the w2v model's own object
    assert {id(p) for p in model.parameters()} == {id(p) for p in w.parameters()}


# ----------------------------------------------------------------------------- eval parity
@pytest.mark.parametrize("name", VARIANTS)
def test_forward_and_every_layer_match_torchaudio(name):
    model = compat_model(name)
    t = variant(name)[2]
    x, lengths = t["input"], t["lengths"]
    with torch.no_grad():
        y, frames = model(x)
        assert frames is None
        torch.testing.assert_close(y, t["forward"], **FP32)
        layers, _ = model.extract_features(x)
        assert len(layers) == 2
        for i, got in enumerate(layers):
            torch.testing.assert_close(got, t[f"layer.{i}"], **FP32)
        (first,), _ = model.extract_features(x, num_layers=1)
        torch.testing.assert_close(first, t["layer2of1.0"], **FP32)
        if name in WAVLM:
            return  # torchaudio's WavLM refuses lengths; see the tests below
        y, frames = model(x, lengths)
        torch.testing.assert_close(y, t["forward_lengths"], **FP32)
        assert torch.equal(frames, t["frames"])
        layers, frames = model.extract_features(x, lengths)
        assert torch.equal(frames, t["frames"])
        for i, got in enumerate(layers):
            torch.testing.assert_close(got, t[f"layer_lengths.{i}"], **FP32)


def _alone(model, t):
    """Check each padded item's valid frames against torchaudio's output for it alone."""
    with torch.no_grad():
        y, frames = model(t["input"], t["lengths"])
        layers, _ = model.extract_features(t["input"], t["lengths"])
    for b in range(2):
        want = t[f"alone.{b}.forward"]
        assert int(frames[b]) == want.shape[0]
        torch.testing.assert_close(y[b, : want.shape[0]], want, **FP32)
        for i, layer in enumerate(layers):
            torch.testing.assert_close(layer[b, : want.shape[0]], t[f"alone.{b}.layer.{i}"], **FP32)


@pytest.mark.parametrize("name", VARIANTS)
def test_exact_mode_gives_each_item_its_numbers_alone(name):
    model = compat_model(name)
    model.exact = True
    _alone(model, variant(name)[2])


def test_default_follows_torchaudio_s_batched_group_norm_not_exact_mode():
    # group-norm conv: torchaudio's GroupNorm statistics include the padding
    t = variant("wav2vec2-postln")[2]
    model = compat_model("wav2vec2-postln")
    assert model.exact is False
    with pytest.raises(AssertionError):
        _alone(model, t)
    model.exact = True
    with torch.no_grad():
        exact, _ = model(t["input"], t["lengths"])
    assert not torch.allclose(exact, t["forward_lengths"], atol=1e-3)


def test_wavlm_with_lengths_masks_the_padding():
    # torchaudio's WavLM raises on lengths (an assertion in its attention). A layer-norm
    # WavLM batched with lengths gives each item its numbers alone in either mode.
    _alone(compat_model("wavlm-preln"), variant("wavlm-preln")[2])


# ----------------------------------------------------------------------------- train mode
@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("tag", ["", "no_layer_drop."])
def test_train_mode_draws_the_same_random_numbers_as_torchaudio(name, tag):
    # the same dropout masks and dropped layers from one seed: with layer drop (seed 1234
    # drops layer 0, after which torchaudio's WavLM runs without position bias) and
    # without it (torchaudio still draws one number per layer)
    model = compat_model(name, TRAIN if not tag else TRAIN_NO_LAYER_DROP).train()
    t = variant(name)[2]
    with torch.no_grad():
        for seed in TRAIN_SEEDS:
            torch.manual_seed(seed)
            torch.testing.assert_close(
                model(t["input"])[0], t[f"train.{tag}forward.{seed}"], **FP32
            )
        torch.manual_seed(TRAIN_SEEDS[0])
        layers, _ = model.extract_features(t["input"])  # torchaudio drops no layer here
        for i, got in enumerate(layers):
            torch.testing.assert_close(got, t[f"train.{tag}layer.{i}"], **FP32)
    assert model.w2v_model.regularization.layerdrop == (0.3 if not tag else 0.0)


def test_dropout_arguments_set_w2v_regularization():
    with torch.device("meta"):
        model = models.wav2vec2_base()  # torchaudio's defaults: 0.1 everywhere
        other = models.hubert_base(encoder_ff_interm_dropout=0.25)
    r = model.w2v_model.regularization
    assert (r.feat_proj_dropout, r.attention_dropout, r.activation_dropout) == (0.1, 0.1, 0.1)
    assert (r.hidden_dropout, r.layerdrop) == (0.1, 0.1)
    r = other.w2v_model.regularization
    assert (r.activation_dropout, r.layerdrop) == (0.25, 0.05)
    assert model.training  # as torchaudio builds them


# ----------------------------------------------------------------------------- state dicts
@pytest.mark.parametrize("name", VARIANTS)
def test_state_dict_is_torchaudio_s_exactly(name):
    want = torchaudio_state(name)
    got = compat_model(name).state_dict()
    assert set(got) == set(want)  # (the fixture file keeps no order)
    for k, v in want.items():
        assert torch.equal(got[k], v), k


def test_older_weight_norm_key_spelling_loads_strictly():
    old = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in torchaudio_state("wav2vec2-preln").items()
    }
    assert any(k.endswith("weight_g") for k in old)
    model = compat_model("wav2vec2-preln")
    fresh = models.wav2vec2_model(**variant("wav2vec2-preln")[1], **dict.fromkeys(
        ("encoder_projection_dropout", "encoder_attention_dropout", "encoder_ff_interm_dropout",
         "encoder_dropout", "encoder_layer_drop"), 0.0)).eval()  # fmt: skip
    fresh.load_state_dict(old, strict=True)
    x = variant("wav2vec2-preln")[2]["input"]
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)[0], model(x)[0], **FP32)


def test_strict_loading_reports_unknown_and_missing_keys():
    model = compat_model("wavlm-postln")
    state = torchaudio_state("wavlm-postln")
    with pytest.raises(
        RuntimeError, match="encoder.transformer.layers.0.attention.attention.in_proj_weight"
    ):
        model.load_state_dict({k: v for k, v in state.items() if "in_proj_weight" not in k})
    with pytest.raises(RuntimeError, match="encoder.bogus"):
        model.load_state_dict({**state, "encoder.bogus": torch.zeros(1)})
    result = model.load_state_dict({**state, "encoder.bogus": torch.zeros(1)}, strict=False)
    assert result.unexpected_keys == ["encoder.bogus"] and not result.missing_keys


def test_nested_in_another_module_keeps_torchaudio_keys_under_the_prefix():
    outer = torch.nn.ModuleDict({"backbone": compat_model("wavlm-preln")})
    state = outer.state_dict()
    want = {f"backbone.{k}" for k in torchaudio_state("wavlm-preln")}
    assert set(state) == want
    outer.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- submodules
@pytest.mark.parametrize("name", ["wav2vec2-preln", "wavlm-postln"])
def test_feature_extractor_then_encoder_is_the_whole_model(name):
    model = compat_model(name)
    t = variant(name)[2]
    x, lengths = t["input"], t["lengths"]
    with torch.no_grad():
        feats, frames = model.feature_extractor(x, lengths)
        assert feats.shape[-1] == 32 and torch.equal(frames, model(x, lengths)[1])
        y = model.encoder(feats, frames)
        if model.aux is not None:
            y = model.aux(y)
        torch.testing.assert_close(y, model(x, lengths)[0], **FP32)
        layers = model.encoder.extract_features(feats, frames, num_layers=2)
        for got, want in zip(layers, model.extract_features(x, lengths)[0], strict=True):
            torch.testing.assert_close(got, want, **FP32)


def test_a_new_aux_head_is_the_one_that_runs():
    # torchaudio's fine-tuning recipes replace aux on a pretrained model
    model = compat_model("wav2vec2-postln")
    x = variant("wav2vec2-postln")[2]["input"]
    model.aux = torch.nn.Linear(32, 11)
    with torch.no_grad():
        y, _ = model(x)
        assert y.shape[-1] == 11
        torch.testing.assert_close(y, model.aux(model.encoder(model.feature_extractor(x)[0])))
    assert model.w2v_model.config.vocab_size == 11 and "aux.weight" in model.state_dict()


def test_num_layers_out_of_range_is_torchaudio_s_error():
    model = compat_model("wav2vec2-postln")
    x = variant("wav2vec2-postln")[2]["input"]
    for n in (0, 3):
        with pytest.raises(ValueError, match=r"between \[1, 2\]"):
            model.extract_features(x, num_layers=n)


def test_export_works_like_the_native_model():
    model = compat_model("wavlm-preln")
    x, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    samples = Dim("samples", min=720, max=16000 * 600)
    batch = Dim("batch", min=1, max=64)
    program = export(model, (x, lengths), dynamic_shapes=({0: batch, 1: samples}, {0: batch}))
    exported = program.module()
    for n in (720, 12345):
        xx = torch.randn(3, n)
        ll = torch.tensor([n, max(720, n // 2), n])
        got, got_frames = exported(xx, ll)
        want, want_frames = model(xx, ll)
        torch.testing.assert_close(got, want, **FP32)
        assert torch.equal(got_frames, want_frames)


def test_torchaudio_is_never_imported():
    code = (
        "import sys; from w2v.compat import torchaudio; torchaudio.models.wav2vec2_base(); "
        "torchaudio.pipelines.HUBERT_BASE.sample_rate; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchaudio'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
