"""The architecture config: frozen, named, serialisable, with derived properties."""

from __future__ import annotations

import dataclasses
import json

import pytest

from w2v.config import Config, config_names, named_config_info, num_frames

EXPECTED_NAMES = {
    "wav2vec2-base", "wav2vec2-large", "wav2vec2-large-lv60", "wav2vec2-xls-r-300m",
    "wav2vec2-xls-r-1b", "wav2vec2-xls-r-2b", "hubert-base", "hubert-large", "hubert-xlarge",
    "data2vec-audio-base", "data2vec-audio-large", "wavlm-base", "wavlm-base-plus", "wavlm-large",
}  # fmt: skip


def test_config_is_frozen():
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_size = 1024
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.new_field = 1


def test_sequences_become_tuples():
    config = Config(conv_dim=[256] * 7)
    assert config.conv_dim == (256,) * 7
    assert isinstance(config.conv_kernel, tuple)
    hash(config)  # frozen and hashable: usable as a cache key


def test_named_configs_load():
    assert set(config_names()) == EXPECTED_NAMES
    for name in config_names():
        config = Config.from_name(name)
        info = named_config_info(name)
        assert info["name"] == name
        assert info["checkpoints"], f"{name} names no public checkpoint"
        assert Config.from_dict(info["config"]) == config


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        (
            "wav2vec2-base",
            dict(hidden_size=768, num_layers=12, conv_norm="group", layer_norm_first=False),
        ),
        (
            "wav2vec2-large-lv60",
            dict(hidden_size=1024, num_layers=24, conv_bias=True, layer_norm_first=True),
        ),
        ("wav2vec2-xls-r-2b", dict(hidden_size=1920, num_layers=48, intermediate_size=7680)),
        ("hubert-large", dict(conv_norm="layer", conv_bias=False, layer_norm_first=True)),
        ("data2vec-audio-base", dict(pos_conv="stack", pos_conv_depth=5, pos_conv_kernel=19)),
        ("wavlm-large", dict(rel_pos_buckets=320, rel_pos_max_distance=800, layer_norm_first=True)),
    ],
)
def test_named_config_values(name, fields):
    config = Config.from_name(name)
    assert {k: getattr(config, k) for k in fields} == fields


@pytest.mark.parametrize(
    "bad", ["wav2vec2", "WAV2VEC2-BASE", "wav2vec2-base.json", "facebook/wav2vec2-base", ""]
)
def test_exact_name_lookup_miss_lists_valid_names(bad):
    with pytest.raises(ValueError) as e:
        Config.from_name(bad)
    msg = str(e.value)
    assert repr(bad) in msg
    for name in EXPECTED_NAMES:
        assert name in msg


def test_to_dict_from_dict_round_trip():
    for name in config_names():
        config = Config.from_name(name)
        d = config.to_dict()
        assert json.loads(json.dumps(d)) == d  # plain JSON types
        assert Config.from_dict(d) == config
    custom = Config(
        hidden_size=64, num_heads=4, pos_conv_groups=4, vocab_size=32, layer_norm_eps=1e-6
    )
    assert Config.from_dict(json.loads(json.dumps(custom.to_dict()))) == custom


def test_unknown_field_is_an_error():
    d = Config().to_dict()
    d["hidden_dim"] = 768
    with pytest.raises(ValueError, match="hidden_dim"):
        Config.from_dict(d)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(conv_norm="batch"), "conv_norm"),
        (dict(pos_conv="rope"), "pos_conv"),
        (dict(hidden_size=100, num_heads=12), "num_heads"),
        (dict(conv_kernel=(10, 3)), "same length"),
        (dict(pos_conv_depth=0), "pos_conv_depth"),
    ],
)
def test_invalid_values_are_errors(fields, match):
    with pytest.raises(ValueError, match=match):
        Config(**fields)


def test_derived_properties():
    base = Config.from_name("wav2vec2-base")
    assert base.hop_length == 320
    assert base.receptive_field == 400
    assert base.head_dim == 64
    assert Config.from_name("wav2vec2-xls-r-2b").head_dim == 120
    assert Config.from_name("wavlm-large").head_dim == 64
    # derived from the conv stack, not constants
    custom = Config(conv_dim=(8, 8), conv_kernel=(4, 3), conv_stride=(2, 3))
    assert custom.hop_length == 6
    assert custom.receptive_field == 8  # (3 - 1) * 2 + 4
    assert num_frames(custom.receptive_field, custom) == 1
    assert num_frames(custom.receptive_field - 1, custom) == 0


def test_every_named_config_has_the_standard_frontend():
    for name in config_names():
        config = Config.from_name(name)
        assert (config.hop_length, config.receptive_field) == (320, 400), name


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(num_heads=0), "num_heads"),
        (dict(pos_conv_groups=0), "pos_conv_groups"),
        (dict(hidden_size=-768, num_heads=-12), "hidden_size"),
        (dict(num_layers=10**5), "num_layers"),
        (dict(hidden_size=10**9, num_heads=1), "hidden_size"),
        (dict(conv_dim=(512,) * 10**5), "conv_dim"),
        (dict(conv_dim="512"), "conv_dim"),
        (dict(conv_stride=(5, 2, 2, 2, 2, 2, 0)), "conv_stride"),
        (dict(num_heads=True), "num_heads"),
        (dict(conv_bias=1), "conv_bias"),
        (dict(layer_norm_eps=float("nan")), "layer_norm_eps"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(intermediate_size=10**400), "intermediate_size"),
    ],
)
def test_absurd_values_are_one_line_value_errors(fields, match):
    with pytest.raises(ValueError, match=match) as e:
        Config(**fields)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200


def test_from_dict_needs_an_object():
    with pytest.raises(ValueError, match="JSON object"):
        Config.from_dict([1, 2])
