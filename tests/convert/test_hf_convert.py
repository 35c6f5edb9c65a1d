"""Loading transformers checkpoints: every head class, every weight layout, every way to fail,
the ``w2v convert`` command, and the conversion of the largest configs on the meta device."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from w2v.convert.checkpoint import CheckpointError
from w2v.convert.hf import config_from_hf, convert_hf_state_dict
from w2v.convert.load import read_checkpoint

import w2v
from tests.helpers import FAMILIES, HF_FIXTURES, REPO, hf_class, hf_config, perturb_
from w2v.cli import main as cli_main
from w2v.config import Config
from w2v.nn.heads import head_kind
from w2v.nn.model import Model

ATOL = {torch.float32: 1e-5}
DTYPE = torch.float32

HEADS = {
    "wav2vec2": [
        "ForCTC",
        "ForSequenceClassification",
        "ForAudioFrameClassification",
        "ForXVector",
        "ForPreTraining",
    ],
    "hubert": ["ForCTC", "ForSequenceClassification"],
    "data2vec-audio": [
        "ForCTC",
        "ForSequenceClassification",
        "ForAudioFrameClassification",
        "ForXVector",
    ],
    "wavlm": ["ForCTC", "ForSequenceClassification", "ForAudioFrameClassification", "ForXVector"],
}
# top-level names of each head's weights (the dropped-weights notice names pretraining ones)
HEAD_MODULES = {
    "ForSequenceClassification": {"projector", "classifier", "layer_weights"},
    "ForAudioFrameClassification": {"classifier", "layer_weights"},
    "ForXVector": {"projector", "tdnn", "feature_extractor", "classifier", "objective"},
    "ForPreTraining": {"quantizer", "project_hid", "project_q"},
}
HEAD_CASES = [(f, h) for f in FAMILIES for h in HEADS[f]]


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def save_hf(directory: Path, family: str, head: str = "Model", seed: int = 0, **overrides):
    """A tiny perturbed random-init transformers model saved with save_pretrained."""
    torch.manual_seed(seed)
    model = perturb_(hf_class(family, head)(hf_config(family, **overrides)), seed)
    model.save_pretrained(directory)
    return model


def waveform(samples: int = 6000, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, samples, generator=torch.Generator().manual_seed(seed))


def load(path) -> w2v.nn.Model:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return w2v.load(path)


@torch.inference_mode()
def outputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    states, _ = model.hidden_states(x)
    return [*states, model(x)[0]]


def edit_weights(directory: Path, edit) -> None:
    file = directory / "model.safetensors"
    state = load_file(str(file))
    edit(state)
    save_file(state, str(file), metadata={"format": "pt"})


# ---------------------------------------------------------------- head classes
@torch.inference_mode()
@pytest.mark.parametrize(("family", "head"), HEAD_CASES, ids=[f"{f}-{h}" for f, h in HEAD_CASES])
def test_head_class_loads(transformers, tmp_path, family, head):
    overrides = {"vocab_size": 11} if head == "ForCTC" else {}
    if head in ("ForSequenceClassification", "ForAudioFrameClassification"):
        overrides["use_weighted_layer_sum"] = True  # adds layer_weights
    if head == "ForXVector":
        overrides.update(
            tdnn_dim=(16, 16, 24),
            tdnn_kernel=(5, 3, 1),
            tdnn_dilation=(1, 2, 1),
            xvector_output_dim=8,
        )
    if head == "ForPreTraining":
        overrides.update(codevector_dim=16, proj_codevector_dim=16)
    hf = save_hf(tmp_path, family, head, **overrides).eval()
    x = waveform()

    if head == "ForCTC":
        model = load(tmp_path)
        assert model.lm_head is not None and model.config.vocab_size == 11
        torch.testing.assert_close(model(x)[0], hf(x).logits, atol=ATOL[DTYPE], rtol=0)
        return

    prefix = hf.base_model_prefix + "."
    head_state = {k: v for k, v in hf.state_dict().items() if not k.startswith(prefix)}
    assert {k.split(".")[0] for k in head_state} == HEAD_MODULES[head]
    with pytest.warns(UserWarning) as record:
        ckpt = read_checkpoint(tmp_path)
        model = w2v.load(tmp_path)
    notices = [str(w.message) for w in record if "kept the" in str(w.message)]
    if head == "ForPreTraining":  # pretraining parts are kept (w2v.train), nothing dropped
        assert notices == [], notices
        assert ckpt.head is None and not ckpt.extra and ckpt.pretraining is not None
        assert len(ckpt.pretraining_state) == len(head_state) + 1  # + masked_spec_embed
        assert model.pretraining is not None
    else:  # a head w2v runs: kept, with its weights under its own key names
        assert notices == [] and not ckpt.extra
        assert ckpt.head is not None and ckpt.head.kind == head_kind(hf.__class__.__name__)
        assert ckpt.head_state.keys() == head_state.keys()
        for k, v in head_state.items():
            assert torch.equal(ckpt.head_state[k], v), k
    assert model.lm_head is None
    assert model.family == family
    torch.testing.assert_close(
        model(x)[0], hf.base_model(x).last_hidden_state, atol=ATOL[DTYPE], rtol=0
    )


def test_every_head_class_is_covered(transformers):
    for family in FAMILIES:
        prefix = hf_class(family).__name__[: -len("Model")]
        available = {
            name[len(prefix) :] for name in dir(transformers)
            if name.startswith(prefix + "For") and isinstance(getattr(transformers, name), type)
        }  # fmt: skip
        assert available <= set(HEADS[family]), (
            f"untested {family} heads: {available - set(HEADS[family])}"
        )


# ---------------------------------------------------------------- weight layouts
@pytest.fixture
def tiny_dir(transformers, tmp_path):
    d = tmp_path / "hf"
    save_hf(d, "wav2vec2")
    return d


def test_both_weight_norm_key_styles(tiny_dir, tmp_path):
    new = tiny_dir
    old = tmp_path / "old"
    shutil.copytree(new, old)

    def rename(state):
        for suffix, legacy in (("original0", "weight_g"), ("original1", "weight_v")):
            state[f"encoder.pos_conv_embed.conv.{legacy}"] = state.pop(
                f"encoder.pos_conv_embed.conv.parametrizations.weight.{suffix}"
            )

    edit_weights(old, rename)
    x = waveform()
    for a, b in zip(outputs(load(new), x), outputs(load(old), x), strict=True):
        assert torch.equal(a, b)


def test_masked_spec_embed_is_ignored(tiny_dir, tmp_path):
    assert "masked_spec_embed" in load_file(str(tiny_dir / "model.safetensors"))
    without = tmp_path / "without"
    shutil.copytree(tiny_dir, without)
    edit_weights(without, lambda s: s.pop("masked_spec_embed"))
    with pytest.warns(UserWarning) as record:
        model = w2v.load(tiny_dir)
    assert not any("kept the" in str(w.message) for w in record)  # not a head: no notice
    x = waveform()
    for a, b in zip(outputs(model, x), outputs(load(without), x), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "key",
    [
        "encoder.layers.0.attention.rotary.weight",
        "decoder.weight",
        "encoder.layers.1.adapter_layer.linear_1.weight",
    ],
)
def test_unknown_key_is_an_error_naming_it(tiny_dir, key):
    edit_weights(tiny_dir, lambda s: s.__setitem__(key, torch.zeros(3)))
    with pytest.raises(CheckpointError, match="unknown") as e:
        w2v.load(tiny_dir)
    assert key in str(e.value)


def test_missing_key_is_an_error_naming_it(tiny_dir):
    key = "encoder.layers.1.feed_forward.output_dense.bias"
    edit_weights(tiny_dir, lambda s: s.pop(key))
    with pytest.raises(CheckpointError, match="missing") as e:
        w2v.load(tiny_dir)
    assert key in str(e.value)


def test_wrong_shape_is_an_error(tiny_dir):
    key = "encoder.layers.0.attention.q_proj.weight"
    edit_weights(tiny_dir, lambda s: s.__setitem__(key, torch.zeros(32, 31)))
    with pytest.raises(CheckpointError, match="shape") as e:
        w2v.load(tiny_dir)
    assert key in str(e.value) and "(32, 31)" in str(e.value)


def test_sharded_safetensors(transformers, tmp_path):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    hf = save_hf(whole, "wavlm")
    hf.save_pretrained(sharded, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert not (sharded / "model.safetensors").exists()
    assert len(list(sharded.glob("model-*.safetensors"))) > 1
    x = waveform()
    for a, b in zip(outputs(load(whole), x), outputs(load(sharded), x), strict=True):
        assert torch.equal(a, b)


def test_missing_shard_is_an_error(transformers, tmp_path):
    hf = save_hf(tmp_path / "a", "wav2vec2")
    hf.save_pretrained(tmp_path / "b", max_shard_size="40KB")
    victim = sorted((tmp_path / "b").glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        w2v.load(tmp_path / "b")


def test_pytorch_model_bin(tiny_dir, tmp_path):
    """transformers 5 always writes safetensors; older ones wrote a pickled state dict."""
    legacy = tmp_path / "bin"
    legacy.mkdir()
    shutil.copy(tiny_dir / "config.json", legacy)
    torch.save(load_file(str(tiny_dir / "model.safetensors")), legacy / "pytorch_model.bin")
    x = waveform()
    for a, b in zip(outputs(load(tiny_dir), x), outputs(load(legacy), x), strict=True):
        assert torch.equal(a, b)


def test_sharded_pytorch_model_bin(tiny_dir, tmp_path):
    legacy = tmp_path / "bin"
    legacy.mkdir()
    shutil.copy(tiny_dir / "config.json", legacy)
    state = load_file(str(tiny_dir / "model.safetensors"))
    keys = sorted(state)
    shards = {
        "pytorch_model-00001-of-00002.bin": keys[::2],
        "pytorch_model-00002-of-00002.bin": keys[1::2],
    }
    for name, part in shards.items():
        torch.save({k: state[k] for k in part}, legacy / name)
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (legacy / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    x = waveform()
    for a, b in zip(outputs(load(tiny_dir), x), outputs(load(legacy), x), strict=True):
        assert torch.equal(a, b)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pytorch_model_bin_is_not_unpickled_unsafely(tiny_dir, tmp_path, monkeypatch):
    legacy = tmp_path / "bin"
    legacy.mkdir()
    shutil.copy(tiny_dir / "config.json", legacy)
    (legacy / "pytorch_model.bin").write_bytes(pickle.dumps({"x": _Exploit()}, protocol=2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        w2v.load(legacy)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("keep", [0, 100, 5000])
def test_corrupt_safetensors_is_a_one_line_error(tiny_dir, keep):
    file = tiny_dir / "model.safetensors"
    file.write_bytes(file.read_bytes()[:keep])
    with pytest.raises(CheckpointError) as e:
        w2v.load(tiny_dir)
    msg = str(e.value)
    assert str(file) in msg
    assert "\n" not in msg


def test_no_weights_is_an_error(tiny_dir):
    (tiny_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        w2v.load(tiny_dir)


@pytest.mark.parametrize("model_type", ["wav2vec2-conformer", "bert", "wav2vec2-bert", None])
def test_unsupported_model_type_is_an_error_naming_it(tiny_dir, model_type):
    cfg = json.loads((tiny_dir / "config.json").read_text())
    cfg["model_type"] = model_type
    (tiny_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model_type") as e:
        w2v.load(tiny_dir)
    assert repr(model_type) in str(e.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_act", "relu"),
        ("feat_extract_activation", "swish"),
        ("add_adapter", True),
        ("feat_extract_norm", "batch"),
    ],
)
def test_unsupported_settings_are_errors(tiny_dir, field, value):
    cfg = json.loads((tiny_dir / "config.json").read_text())
    cfg[field] = value
    (tiny_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=field):
        w2v.load(tiny_dir)


# ---------------------------------------------------------------- w2v convert
@pytest.mark.parametrize("name", ["wav2vec2-group", "hubert", "wav2vec2-ctc", "wavlm-large"])
def test_cli_convert(tmp_path, capsys, name):
    """Committed fixtures: runs without transformers."""
    src, dst = HF_FIXTURES / name, tmp_path / "out"
    assert cli_main(["convert", str(src), str(dst)]) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "Traceback" not in err
    check_converted(src, dst)


def test_cli_convert_subprocess(tmp_path):
    src, dst = HF_FIXTURES / "wav2vec2-group", tmp_path / "out"
    result = run_cli("convert", str(src), str(dst))
    assert result.returncode == 0, result.stderr
    check_converted(src, dst)


def check_converted(src: Path, dst: Path) -> None:
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((dst / "config.json").read_text())
    a, b = load(src), load(dst)
    assert meta["format"] == "w2v"
    assert Config.from_dict(meta["config"]) == a.config
    assert str(src) in meta["source"]
    pre = src / "preprocessor_config.json"
    normalize = json.loads(pre.read_text())["do_normalize"] if pre.is_file() else False
    assert meta["normalize"] is normalize
    assert (b.normalize, b.family, b.vocab) == (a.normalize, a.family, a.vocab)
    x = waveform(7000)
    for p, q in zip(outputs(a, x), outputs(b, x), strict=True):
        assert torch.equal(p, q)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "w2v.cli", *args], capture_output=True, text=True, cwd=REPO, env=env
    )


def broken_inputs(tmp_path: Path) -> dict[str, Path]:
    cases = {"missing": tmp_path / "does-not-exist"}
    corrupt = tmp_path / "corrupt"
    shutil.copytree(HF_FIXTURES / "wavlm-base", corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    cases["corrupt"] = corrupt
    unsupported = tmp_path / "unsupported"
    shutil.copytree(HF_FIXTURES / "wavlm-base", unsupported)
    cfg = json.loads((unsupported / "config.json").read_text())
    (unsupported / "config.json").write_text(json.dumps(dict(cfg, model_type="wav2vec2-conformer")))
    cases["unsupported"] = unsupported
    no_config = tmp_path / "empty"
    no_config.mkdir()
    cases["no config"] = no_config
    return cases


def assert_one_line_error(code: int, err: str, path: Path) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0] and str(path) in lines[0]


def test_cli_bad_input(tmp_path, capsys):
    for case, src in broken_inputs(tmp_path).items():
        code = cli_main(["convert", str(src), str(tmp_path / f"out-{case}")])
        assert_one_line_error(code, capsys.readouterr().err, src)
        assert not (tmp_path / f"out-{case}").exists(), case


def test_cli_bad_input_subprocess(tmp_path):
    for case, src in broken_inputs(tmp_path).items():
        result = run_cli("convert", str(src), str(tmp_path / "out"))
        assert_one_line_error(result.returncode, result.stderr, src)
        assert result.stdout == "", case


# ---------------------------------------------------------------- configs
def hf_equivalents(transformers) -> dict[str, object]:
    """transformers configs describing the same architectures as configs/*.json."""
    large = dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    )
    xl1b = dict(
        hidden_size=1280, num_hidden_layers=48, num_attention_heads=16, intermediate_size=5120
    )
    xl2b = dict(
        hidden_size=1920, num_hidden_layers=48, num_attention_heads=16, intermediate_size=7680
    )
    stable = dict(feat_extract_norm="layer", do_stable_layer_norm=True)
    w, h = transformers.Wav2Vec2Config, transformers.HubertConfig
    d, lm = transformers.Data2VecAudioConfig, transformers.WavLMConfig
    return {
        "wav2vec2-base": w(),
        "wav2vec2-large": w(**large),
        "wav2vec2-large-lv60": w(**large, **stable, conv_bias=True),
        "wav2vec2-xls-r-300m": w(**large, **stable, conv_bias=True),
        "wav2vec2-xls-r-1b": w(**xl1b, **stable, conv_bias=True),
        "wav2vec2-xls-r-2b": w(**xl2b, **stable, conv_bias=True),
        "hubert-base": h(),
        "hubert-large": h(**large, **stable),
        "hubert-xlarge": h(**xl1b, **stable),
        "data2vec-audio-base": d(),
        "data2vec-audio-large": d(**large),
        "wavlm-base": lm(),
        "wavlm-base-plus": lm(),
        "wavlm-large": lm(**large, **stable),
    }


def test_config_from_hf_reproduces_named_configs(transformers):
    equivalents = hf_equivalents(transformers)
    assert set(equivalents) == set(w2v.config_names())
    for name, hf_cfg in equivalents.items():
        config, family = config_from_hf(hf_cfg.to_dict())
        assert config == Config.from_name(name), name
        assert family == w2v.config.named_config_info(name)["family"], name


def test_config_from_hf_defaults_for_omitted_fields():
    assert config_from_hf({"model_type": "wav2vec2"}) == (
        Config.from_name("wav2vec2-base"),
        "wav2vec2",
    )
    assert config_from_hf({"model_type": "wavlm"})[0] == Config.from_name("wavlm-base")
    assert config_from_hf({"model_type": "data2vec-audio"})[0] == Config.from_name(
        "data2vec-audio-base"
    )


def test_config_from_hf_ctc(transformers):
    config, _ = config_from_hf(transformers.HubertConfig(vocab_size=40).to_dict(), ctc=True)
    assert config.vocab_size == 40
    assert config_from_hf(transformers.HubertConfig(vocab_size=40).to_dict())[0].vocab_size is None


def test_xls_r_2b_converts_on_meta_device(transformers):
    """The largest config: HF keys and shapes on the meta device, nothing allocated."""
    hf_cfg = hf_equivalents(transformers)["wav2vec2-xls-r-2b"]
    with torch.device("meta"):
        hf = transformers.Wav2Vec2Model(hf_cfg)
    state = hf.state_dict()
    config, family = config_from_hf(hf_cfg.to_dict())
    assert config == Config.from_name("wav2vec2-xls-r-2b")

    converted, dropped = convert_hf_state_dict(state, config, family)
    assert dropped == [] and "masked_spec_embed" not in converted
    with torch.device("meta"):
        expected = Model(config).state_dict()
    assert set(converted) == set(expected)
    for k, v in expected.items():
        assert converted[k].shape == v.shape, k
        assert converted[k].is_meta, k
    assert len(converted) == len(state) - ("masked_spec_embed" in state)
    # every HF tensor is used exactly once
    assert sum(v.numel() for v in converted.values()) == sum(
        v.numel() for k, v in state.items() if k != "masked_spec_embed"
    )
    assert sum(v.numel() for v in converted.values()) > 2e9
    # and the meta weights load strictly into a meta model
    with torch.device("meta"):
        model = Model(config)
    model.load_state_dict(converted, strict=True, assign=True)
    assert all(p.is_meta for p in model.parameters())
