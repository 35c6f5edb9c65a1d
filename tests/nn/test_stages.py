"""Stage-by-stage parity with transformers submodules sharing the same weights.

Each test runs one stage of a tiny random-init transformers model and the
corresponding w2v module, so a failure names the stage that diverged.
"""

from __future__ import annotations

import pytest
import torch
from w2v.convert.hf import config_from_hf, convert_hf_state_dict

from tests.helpers import TINY_W2V, hf_class, hf_config, perturb_
from w2v import num_frames
from w2v.config import Config
from w2v.nn.attention import relative_position_buckets
from w2v.nn.fast import layer0, layers
from w2v.nn.model import Model

transformers = pytest.importorskip("transformers")

ATOL = {torch.float32: 1e-5}
DTYPE = torch.float32

# variant → (family, transformers config overrides); all tiny, eager attention
LAYER_PRE_LN = dict(feat_extract_norm="layer", do_stable_layer_norm=True)
VARIANTS = {
    "wav2vec2-group": ("wav2vec2", {}),
    "wav2vec2-layer": ("wav2vec2", dict(LAYER_PRE_LN, conv_bias=True)),
    "hubert-bn": ("hubert", dict(conv_pos_batch_norm=True, feat_proj_layer_norm=False)),
    "data2vec-audio": ("data2vec-audio", {}),
    "wavlm-base": ("wavlm", {}),
    "wavlm-large": ("wavlm", LAYER_PRE_LN),
}


@pytest.fixture(scope="module")
def pair():
    """variant → (transformers model, w2v model with the converted weights), built once."""
    cache: dict[str, tuple[torch.nn.Module, Model]] = {}

    def get(variant: str) -> tuple[torch.nn.Module, Model]:
        if variant not in cache:
            family, overrides = VARIANTS[variant]
            torch.manual_seed(len(cache))
            config = hf_config(family, attn_implementation="eager", **overrides)
            hf = perturb_(hf_class(family)(config), seed=len(cache))
            ours_config, ours_family = config_from_hf(config.to_dict())
            assert ours_family == family
            state, _ = convert_hf_state_dict(hf.state_dict(), ours_config, family)
            ours = Model(ours_config).eval()
            ours.load_state_dict(state, strict=True)
            cache[variant] = hf, ours
        return cache[variant]

    return get


def waveform(samples: int = 9000, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def close(ours: torch.Tensor, ref: torch.Tensor, stage: str) -> None:
    torch.testing.assert_close(ours, ref, atol=ATOL[DTYPE], rtol=0, msg=lambda m: f"{stage}: {m}")


# ---------------------------------------------------------------- conv feature encoder
@torch.inference_mode()
@pytest.mark.parametrize("variant", ["wav2vec2-group", "wav2vec2-layer", "data2vec-audio"])
def test_conv_feature_encoder(pair, variant):
    hf, ours = pair(variant)
    x = waveform()
    feats, frame_lengths = ours.feature_extractor(x)
    assert frame_lengths is None
    # ours is time-major (B, T, C), the reference channel-major (B, C, T)
    close(feats.transpose(1, 2), hf.feature_extractor(x), "conv feature encoder")
    # and layer by layer, so a failure names the conv layer: the fast form (time-major)
    # and the plain form (channel-major, as the reference)
    mine, theirs = ours.feature_extractor.conv_layers, hf.feature_extractor.conv_layers
    first = mine[0]
    a = layer0.forward(first.conv, first.layer_norm, x, None, torch.float32)
    p, b = first(x[:, None]), theirs[0](x[:, None])
    close(a.transpose(1, 2), b, "conv layer 0, fast form")
    close(p, b, "conv layer 0, plain form")
    for i in range(1, len(mine)):
        a = layers.forward(a, mine[i].conv, mine[i].layer_norm)
        p, b = mine[i](p), theirs[i](b)
        close(a.transpose(1, 2), b, f"conv layer {i}, fast form")
        close(p, b, f"conv layer {i}, plain form")


@torch.inference_mode()
@pytest.mark.parametrize("variant", ["wav2vec2-group", "wav2vec2-layer"])
def test_conv_feature_encoder_lengths(pair, variant):
    """exact: each padded item as if alone; exact=False: the reference's padded batch."""
    hf, ours = pair(variant)
    x = waveform(9000)
    lengths = torch.tensor([9000, 4321])
    x[1, 4321:] = 0
    frames = [num_frames(n, ours.config) for n in lengths.tolist()]

    batched, frame_lengths = ours.feature_extractor(x, lengths, exact=False)
    assert frame_lengths.tolist() == frames
    close(batched.transpose(1, 2), hf.feature_extractor(x), "conv feature encoder, exact=False")

    exact, _ = ours.feature_extractor(x, lengths)
    for j, n in enumerate(lengths.tolist()):
        alone = hf.feature_extractor(x[j : j + 1, :n])
        item = exact[j : j + 1, : frames[j]].transpose(1, 2)
        close(item, alone, f"conv feature encoder, item {j} exact")


@pytest.mark.parametrize("conv_norm", ["group", "layer"])
def test_forward_backward_with_autograd(conv_norm):
    """In-place activations are only used when autograd does not need their input."""
    torch.manual_seed(0)
    ours = Model(Config(**TINY_W2V, conv_norm=conv_norm, conv_bias=conv_norm == "layer"))
    x = waveform(4000)
    out, _ = ours(x)
    out.square().mean().backward()
    grads = [p.grad for p in ours.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    first = ours.feature_extractor.conv_layers[0].conv.weight.grad
    assert first is not None and first.abs().sum() > 0


# ---------------------------------------------------------------- feature projection
@torch.inference_mode()
@pytest.mark.parametrize("variant", ["wav2vec2-group", "hubert-bn"])
def test_feature_projection(pair, variant):
    hf, ours = pair(variant)
    assert (ours.feature_projection.layer_norm is None) == (variant == "hubert-bn")
    feats = torch.randn(2, 30, ours.config.conv_dim[-1]) * 3 + 1
    ref = hf.feature_projection(feats)
    ref = ref[0] if isinstance(ref, tuple) else ref  # wav2vec2 also returns the normed features
    close(ours.feature_projection(feats), ref, "feature projection")


# ---------------------------------------------------------------- positional conv
@torch.inference_mode()
@pytest.mark.parametrize(
    ("variant", "kind"),
    [("wav2vec2-group", "weight_norm"), ("hubert-bn", "batch_norm"), ("data2vec-audio", "stack")],
)
def test_positional_conv(pair, variant, kind):
    hf, ours = pair(variant)
    assert ours.config.pos_conv == kind
    h = torch.randn(2, 37, ours.config.hidden_size)  # (B, T, D)
    pos = ours.encoder.pos_conv_embed(h.transpose(1, 2)).transpose(1, 2)
    close(pos, hf.encoder.pos_conv_embed(h), f"positional conv ({kind})")


@torch.inference_mode()
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformer_input(pair, variant):
    """Projection → zero padding → x + pos_conv(x) → [post-LN: encoder LayerNorm] = HF hidden_states[0]."""
    hf, ours = pair(variant)
    x = waveform()
    ref = hf(x, output_hidden_states=True).hidden_states[0]
    feats, _ = ours.feature_extractor(x)
    h = ours.feature_projection(feats)
    close(ours.encoder.embed(h, None), ref, "transformer input")


@torch.inference_mode()
@pytest.mark.parametrize("variant", ["wav2vec2-group", "wav2vec2-layer", "wavlm-large"])
def test_encoder_output_norm(pair, variant):
    """Pre-LN models apply the encoder LayerNorm once after the last layer; post-LN ones nothing."""
    hf, ours = pair(variant)
    out = hf(waveform(), output_hidden_states=True)
    close(ours.encoder.finish(out.hidden_states[-1]), out.last_hidden_state, "encoder output")


# ---------------------------------------------------------------- transformer layers
@torch.inference_mode()
@pytest.mark.parametrize(
    "variant", ["wav2vec2-group", "wav2vec2-layer", "data2vec-audio", "wavlm-base", "wavlm-large"]
)
def test_encoder_layers(pair, variant):
    """Each layer alone on the same input; WavLM layers get the shared position bias."""
    hf, ours = pair(variant)
    t = 90  # beyond WavLM's 80 exactly-mapped distances
    h = torch.randn(2, t, ours.config.hidden_size)
    bias = ours.encoder.position_bias(t)
    hf_bias = None
    for i, (mine, theirs) in enumerate(zip(ours.encoder.layers, hf.encoder.layers, strict=True)):
        assert mine.layer_norm_first == (variant in ("wav2vec2-layer", "wavlm-large"))
        if bias is None:
            ref = theirs(h)
        else:
            # layer 0 computes the bias and hands it (B*H, T, T) to the next layers
            ref, hf_bias = theirs(h, position_bias=hf_bias)
            close(bias.repeat(2, 1, 1), hf_bias, f"relative position bias (layer {i})")
        ref = ref[0] if isinstance(ref, tuple) else ref
        close(mine(h, None, bias), ref, f"encoder layer {i}")


@torch.inference_mode()
def test_wavlm_gate(pair):
    hf, ours = pair("wavlm-base")
    h = torch.randn(2, 20, ours.config.hidden_size)
    theirs = hf.encoder.layers[1].attention
    mine = ours.encoder.layers[1].attention
    # the HF gate, as in WavLMAttention.forward
    g = h.view(2, 20, theirs.num_heads, -1).permute(0, 2, 1, 3)
    p = theirs.gru_rel_pos_linear(g).view(g.shape[:-1] + (2, 4)).sum(-1)
    a, b = torch.sigmoid(p).chunk(2, dim=-1)
    close(mine.gate(h), a * (b * theirs.gru_rel_pos_const - 1.0) + 2.0, "WavLM gate")


# ---------------------------------------------------------------- WavLM buckets
@pytest.mark.parametrize("length", [1, 2, 79, 80, 81, 161, 799, 800, 801, 1000, 1500])
def test_wavlm_buckets_match_reference(length):
    attn = transformers.models.wavlm.modeling_wavlm.WavLMAttention(
        32, 2, num_buckets=320, max_distance=800
    )
    pos = torch.arange(length)
    ref = attn._relative_positions_bucket(pos[None, :] - pos[:, None])
    ours = relative_position_buckets(length, 320, 800)
    assert ours.dtype == torch.long
    assert torch.equal(ours, ref)


@pytest.mark.parametrize(("num_buckets", "max_distance"), [(64, 100), (320, 400), (128, 2000)])
def test_wavlm_buckets_other_settings(num_buckets, max_distance):
    attn = transformers.models.wavlm.modeling_wavlm.WavLMAttention(
        32, 2, num_buckets=num_buckets, max_distance=max_distance
    )
    pos = torch.arange(600)
    ref = attn._relative_positions_bucket(pos[None, :] - pos[:, None])
    assert torch.equal(relative_position_buckets(600, num_buckets, max_distance), ref)


def test_wavlm_buckets_use_log_range():
    """Guard the test itself: 1500 frames reach clipped buckets on both sides."""
    b = relative_position_buckets(1500, 320, 800)
    # every bucket but 160 (a positive offset of 0 does not exist)
    assert set(b.unique().tolist()) == set(range(320)) - {160}


@torch.inference_mode()
def test_wavlm_position_bias_values(pair):
    hf, ours = pair("wavlm-base")
    for t in (5, 90, 300):
        ref = hf.encoder.layers[0].attention.compute_bias(t, t)
        close(ours.encoder.position_bias(t), ref, f"WavLM position bias, {t} frames")


# ---------------------------------------------------------------- frame counts, short inputs
LENGTHS = [400, 401, 719, 720, 721, 1039, 1040, 16000, 16001, 48000, 160000, 160319, 480000]
LENGTHS += list(range(400, 12000, 37))


def test_num_frames_matches_conv_formula_and_reference(pair):
    hf, _ = pair("wav2vec2-group")
    ref = hf._get_feat_extract_output_lengths(torch.tensor(LENGTHS)).tolist()
    for config in (None, Config.from_name("wav2vec2-base"), Config.from_name("wavlm-large")):
        for n, r in zip(LENGTHS, ref, strict=True):
            assert num_frames(n, config) == (n - 400) // 320 + 1 == r, n
        for n in (0, 1, 10, 399):
            assert num_frames(n, config) == 0


@torch.inference_mode()
@pytest.mark.parametrize("samples", [400, 401, 719, 720, 1000, 3333])
def test_output_frames_match_num_frames(pair, samples):
    _, ours = pair("wav2vec2-group")
    out, _ = ours(torch.randn(1, samples))
    assert out.shape[1] == num_frames(samples)


@torch.inference_mode()
@pytest.mark.parametrize("variant", ["wav2vec2-group", "wav2vec2-layer"])
@pytest.mark.parametrize("samples", [0, 1, 10, 399])
def test_short_waveform_is_a_clear_error(pair, variant, samples):
    _, model = pair(variant)
    x = torch.randn(1, samples)
    for call in (model, model.hidden_states, model.extract_features):
        with pytest.raises(ValueError, match="400"):
            call(x)


@torch.inference_mode()
@pytest.mark.parametrize("variant", ["wav2vec2-group", "wav2vec2-layer"])
@pytest.mark.parametrize("short", [0, 399])
def test_short_item_in_batch_is_a_clear_error(pair, variant, short):
    _, model = pair(variant)
    x = torch.randn(3, 4000)
    lengths = torch.tensor([4000, short, 2000])
    for call in (model, model.hidden_states, model.extract_features):
        with pytest.raises(ValueError, match="400") as e:
            call(x, lengths)
        assert "[1]" in str(e.value)  # names the offending item


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_half_input_computes_in_fp32(dtype, affine):
    """Half activations with fp32 parameters: the fp32 result, rounded once to the half dtype."""
    from w2v.nn.norm import LayerNorm

    torch.manual_seed(0)
    norm = LayerNorm(64, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5), norm.bias.normal_()
    x = (torch.randn(3, 50, 64) * 4 + 2).to(dtype)
    got = norm(x)
    assert got.dtype == dtype
    want = norm(x.float())
    torch.testing.assert_close(got.float(), want, rtol=2 * torch.finfo(dtype).eps, atol=1e-3)
