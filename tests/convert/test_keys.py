"""The key-table engine: templates, literal digits, ignored keys, quirks, and every error."""

from __future__ import annotations

import pytest
import torch
from w2v.convert.checkpoint import CheckpointError
from w2v.convert.keys import Fill, Table, Transform, convert, expected_state

from w2v.config import Config

CONFIG = Config(
    conv_dim=(8, 8),
    conv_kernel=(10, 3),
    conv_stride=(5, 2),
    hidden_size=8,
    num_layers=2,
    num_heads=2,
    intermediate_size=16,
    pos_conv_kernel=4,
    pos_conv_groups=2,
)
EXPECTED = expected_state(CONFIG)
SAME = Table({k: k for k in EXPECTED})  # every w2v key as an exact key, renamed to itself
G = "encoder.pos_conv_embed.conv.weight_g"


def zeros() -> dict[str, torch.Tensor]:
    return {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in EXPECTED.items()}


# ---------------------------------------------------------------- matching
def test_slots_carry_the_index_and_literal_digits_match_only_themselves():
    table = Table(
        {
            "conv_layers.{}.0.weight": "conv.{}.conv.weight",
            "conv_layers.{}.2.1.weight": "conv.{}.norm.weight",
            "layers.0.emb.weight": "emb.weight",
        }
    )
    assert table.target("conv_layers.3.0.weight") == "conv.3.conv.weight"
    assert table.target("conv_layers.12.2.1.weight") == "conv.12.norm.weight"
    assert table.target("layers.0.emb.weight") == "emb.weight"
    for key in ("conv_layers.3.1.weight", "conv_layers.x.0.weight", "layers.1.emb.weight"):
        assert table.target(key) is None, key
    assert table.source_of("conv.5.norm.weight") == "conv_layers.5.2.1.weight"
    assert table.source_of("conv.5.bias") is None


def test_ignored_rest_matches_one_or_more_segments():
    table = Table(ignored={"quantizer.*": "pretraining", "final_proj.{}.*": "pretraining"})
    assert table.ignores("quantizer.vars") and table.ignores("quantizer.weight_proj.weight")
    assert table.ignores("final_proj.2.weight")
    assert not table.ignores("quantizer") and not table.ignores("final_proj.x.weight")


def test_prefixed_moves_sources_only():
    table = Table({"a.{}.w": "b.{}.w"}, {"q.*": "why"}).prefixed("model.")
    assert table.target("model.a.1.w") == "b.1.w"
    assert table.target("a.1.w") is None
    assert table.ignores("model.q.x") and not table.ignores("q.x")


@pytest.mark.parametrize(
    "build",
    [
        lambda: Table({"a.{}.w": "b.w"}),  # slots differ
        lambda: Table({"a.{}x.w": "b.{}x.w"}),  # {} inside a segment
        lambda: Table({"a.*": "b"}),  # a rest only where keys are dropped
        lambda: Table({"a.{}.w": "b.{}.w", "a.0.w": "c.w"}),  # a.0.w would match both
        lambda: Table({"a.w": "b.w"}) | Table({"a.w": "c.w"}),
        lambda: Table(fills=(Fill("x", None, ""), Fill("x", None, ""))),
    ],
)
def test_malformed_tables_are_refused(build):
    with pytest.raises(ValueError):
        build()


# ---------------------------------------------------------------- convert
def test_convert_renames_and_drops_without_copying():
    state = {"m." + k: v for k, v in zeros().items()}
    state["m.quantizer.vars"] = torch.zeros(3)
    table = SAME.prefixed("m.") | Table(ignored={"m.quantizer.*": "pretraining"})
    out, dropped = convert(state, table, CONFIG, "ckpt.pt")
    assert dropped == ["m.quantizer.vars"]
    assert out.keys() == EXPECTED.keys()
    assert all(out[k] is state["m." + k] for k in out)


def test_unknown_keys_are_an_error_naming_the_source_key_and_the_hint():
    state = {**zeros(), "encoder.layers.0.self_attn.grep_linear.weight": torch.zeros(1)}
    table = SAME | Table(hints={"encoder.layers.{}.self_attn.grep_linear.*": "a WavLM?"})
    with pytest.raises(CheckpointError) as e:
        convert(state, table, CONFIG, "ckpt.pt")
    assert str(e.value) == (
        "ckpt.pt: unknown weight keys: encoder.layers.0.self_attn.grep_linear.weight (a WavLM?)"
    )
    state = {**zeros(), **{f"extra.{i}": torch.zeros(1) for i in range(7)}}
    with pytest.raises(CheckpointError, match=r"extra\.0, .*extra\.4 \(\+2 more\)$"):
        convert(state, SAME, CONFIG, "ckpt.pt")


def test_two_keys_giving_one_weight_are_an_error():
    table = SAME | Table({"old.g": G})
    with pytest.raises(CheckpointError, match=f"ckpt.pt: {G} and old.g both give {G}"):
        convert({**zeros(), "old.g": torch.zeros(1)}, table, CONFIG, "ckpt.pt")


def test_a_weight_that_is_not_a_tensor_is_an_error():
    with pytest.raises(CheckpointError, match=f"{G} is a list, not a tensor"):
        convert({**zeros(), G: [1.0]}, SAME, CONFIG, "ckpt.pt")


def test_missing_weight_names_the_key_the_user_would_look_for():
    table = Table({"layers.{}.fc2.weight": "encoder.layers.{}.feed_forward.output_dense.weight"})
    state = zeros()
    del state["encoder.layers.1.feed_forward.output_dense.weight"]
    with pytest.raises(CheckpointError) as e:
        convert(state, table | SAME, CONFIG, "ckpt.pt")  # the first key giving it is named
    assert str(e.value) == (
        "ckpt.pt: missing weight keys: layers.1.fc2.weight "
        "(w2v encoder.layers.1.feed_forward.output_dense.weight)"
    )


def test_weights_beyond_the_config_say_config_and_weights_disagree():
    table = SAME | Table({"layers.{}.fc1.weight": "encoder.layers.{}.feed_forward.intermediate_dense.weight"})  # fmt: skip
    state = {**zeros(), "layers.2.fc1.weight": torch.zeros(16, 8)}
    with pytest.raises(CheckpointError, match="layers.2.fc1.weight .*2 layers.*disagree"):
        convert(state, table, CONFIG, "ckpt.pt")


def test_wrong_shape_names_both_keys():
    table = Table({"proj.weight": "feature_projection.projection.weight"})
    state = zeros()
    state["proj.weight"] = torch.zeros(8, 7)
    del state["feature_projection.projection.weight"]
    with pytest.raises(CheckpointError) as e:
        convert(state, SAME | table, CONFIG, "ckpt.pt")
    assert str(e.value) == (
        "ckpt.pt: proj.weight (w2v feature_projection.projection.weight) has shape (8, 7), "
        "the config implies (8, 8)"
    )


# ---------------------------------------------------------------- quirks
def test_transform_applies_to_the_target_whichever_key_gave_it():
    flat = Transform(G, lambda g, want: g.reshape(want.shape), "some exports flatten g")
    table = SAME | Table({"g.flat": G}, transforms=(flat,))
    state = zeros()
    g = state.pop(G)
    out, _ = convert({**state, "g.flat": g.flatten() + 1}, table, CONFIG, "ckpt.pt")
    assert out[G].shape == EXPECTED[G].shape and bool((out[G] == 1).all())


def test_fill_makes_a_missing_weight_and_leaves_a_present_one():
    bias = "feature_projection.projection.bias"
    fill = Fill(bias, lambda want, done: torch.full(want.shape, 7.0), "an identity")
    table = SAME | Table(fills=(fill,))
    state = zeros()
    out, _ = convert(state, table, CONFIG, "ckpt.pt")
    assert out[bias] is state[bias]
    del state[bias]
    out, _ = convert(state, table, CONFIG, "ckpt.pt")
    torch.testing.assert_close(out[bias], torch.full((8,), 7.0))
    with pytest.raises(CheckpointError, match="missing"):
        convert(state, SAME, CONFIG, "ckpt.pt")
