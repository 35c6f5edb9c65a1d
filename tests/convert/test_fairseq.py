"""fairseq ``.pt`` checkpoints: parity with fairseq, config reading, errors, and safety.

Runs without fairseq: the fixtures in ``tests/fixtures/fairseq/`` were made by
``tests/fixtures/make_fairseq_fixtures.py`` (which does need it).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from w2v.convert import safe_pickle as unpickle
from w2v.convert.checkpoint import CheckpointError
from w2v.convert.fairseq import (
    config_from_fairseq,
    convert_fairseq_state_dict,
    key_table,
    parse_conv_layers,
)
from w2v.convert.fairseq_file import read_fairseq
from w2v.convert.keys import expected_state

import w2v
from tests.helpers import FAIRSEQ_FIXTURES as FIXTURES
from tests.helpers import REPO as ROOT
from w2v.cli import main as cli_main
from w2v.config import Config

FP32 = dict(atol=1e-4, rtol=0)

TINY = dict(
    conv_dim=(8,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    hidden_size=16,
    num_layers=2,
    num_heads=4,
    intermediate_size=32,
    pos_conv_kernel=8,
    pos_conv_groups=4,
)
# fixture → the Config fields that distinguish it
EXPECTED = {
    "wav2vec2_default": dict(conv_norm="group", conv_bias=False, layer_norm_first=False),
    "wav2vec2_layernorm": dict(conv_norm="layer", conv_bias=True, layer_norm_first=True),
    "wav2vec2_legacy": dict(conv_norm="group", conv_bias=False, layer_norm_first=False),
    "hubert": dict(conv_norm="group", conv_bias=False, layer_norm_first=False),
    "hubert_batchnorm": dict(conv_norm="layer", layer_norm_first=True, pos_conv="batch_norm"),
    "wav2vec2_ctc": dict(conv_norm="group", layer_norm_first=False, vocab_size=9),
    "wav2vec2_ctc_legacy": dict(
        conv_norm="layer", conv_bias=True, layer_norm_first=True, vocab_size=9
    ),
    # data2vec: conv_pos 15 over a stack of 3 → kernel max(3, 15 // 3) = 5
    "data2vec_audio": dict(
        conv_norm="layer", pos_conv="stack", pos_conv_kernel=5, pos_conv_depth=3
    ),
}
NAMES = sorted(EXPECTED)


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    t = load_file(str(FIXTURES / "inputs.safetensors"))
    return t["waveform"], t["lengths"]


def _refs(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    path = FIXTURES / f"{name}.ref.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items() if k != "format"}
    return load_file(str(path)), meta


def _load(path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # notices about dropped pretraining heads
        return w2v.load(path)


def _check_parity(model, name: str) -> None:
    refs, _ = _refs(name)
    wave, lengths = _inputs()
    n_layers = model.config.num_layers
    with torch.no_grad():
        # each item alone, unpadded: fairseq's outputs exactly
        for i, n in enumerate(lengths.tolist()):
            layers, _ = model.extract_features(wave[i : i + 1, :n])
            assert len(layers) == n_layers
            for k, x in enumerate(layers, start=1):
                torch.testing.assert_close(x[0], refs[f"layer{k}.item{i}"], **FP32)
            out, _ = model(wave[i : i + 1, :n])
            torch.testing.assert_close(out[0], refs[f"output.item{i}"], **FP32)
        # batched with padding: valid frames match the items run alone
        layers, frames = model.extract_features(wave, lengths)
        out, frames = model(wave, lengths)
        for i in range(len(lengths)):
            t = int(frames[i])
            assert t == refs[f"output.item{i}"].shape[0]
            for k, x in enumerate(layers, start=1):
                torch.testing.assert_close(x[i, :t], refs[f"layer{k}.item{i}"], **FP32)
            torch.testing.assert_close(out[i, :t], refs[f"output.item{i}"], **FP32)


# --------------------------------------------------------------------------
# Parity and metadata


def test_fixtures_are_small():
    total = sum(p.stat().st_size for p in FIXTURES.iterdir())
    assert total < 800_000, total


@pytest.mark.parametrize("name", NAMES)
def test_load_matches_fairseq(name):
    model = _load(FIXTURES / f"{name}.pt")
    _check_parity(model, name)


@pytest.mark.parametrize("name", NAMES)
def test_convert_cli_matches_fairseq(name, tmp_path, capsys):
    dst = tmp_path / "converted"
    assert cli_main(["convert", str(FIXTURES / f"{name}.pt"), str(dst)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    model = _load(dst)
    _check_parity(model, name)
    _, meta = _refs(name)
    saved = json.loads((dst / "config.json").read_text())
    assert saved["family"] == meta["family"]
    assert saved["normalize"] == meta["normalize"]
    assert saved["vocab"] == meta.get("vocab")


@pytest.mark.parametrize("name", NAMES)
def test_config_and_metadata(name):
    ckpt = read_fairseq(FIXTURES / f"{name}.pt")
    _, meta = _refs(name)
    expected = Config(**{**TINY, **EXPECTED[name]})
    assert ckpt.config == expected
    assert ckpt.info.family == meta["family"]
    assert ckpt.info.normalize is meta["normalize"]
    assert ckpt.metadata()["vocab"] == meta.get("vocab")


def test_ctc_vocab_is_the_target_dictionary():
    ckpt = read_fairseq(FIXTURES / "wav2vec2_ctc.pt")
    # fairseq Dictionary: <s> (the CTC blank), <pad>, </s>, <unk>, then the letters
    assert list(ckpt.info.vocab) == ["<s>", "<pad>", "</s>", "<unk>", "|", "E", "T", "A", "O"]
    assert ckpt.config.vocab_size == len(ckpt.info.vocab)
    assert "lm_head.weight" in ckpt.state_dict
    # the legacy checkpoint carries no task_state, so no vocabulary
    assert read_fairseq(FIXTURES / "wav2vec2_ctc_legacy.pt").info.vocab is None


def test_pretraining_parts_are_kept_beside_the_encoder():
    ckpt = read_fairseq(FIXTURES / "wav2vec2_default.pt")
    assert ckpt.notices == () and not ckpt.extra  # nothing dropped (w2v.train uses them)
    assert ckpt.pretraining is not None and ckpt.pretraining.objective == "wav2vec2"
    assert {"masked_spec_embed", "quantizer.codevectors", "project_q.weight"} <= set(
        ckpt.pretraining_state
    )
    assert not any(k.startswith(("quantizer", "project_q", "mask_emb")) for k in ckpt.state_dict)
    d2v = read_fairseq(FIXTURES / "data2vec_audio.pt")
    assert "_ema" in d2v.notices[0]


# --------------------------------------------------------------------------
# Config reading


def test_config_defaults_are_wav2vec2_base():
    config, family = config_from_fairseq({"_name": "wav2vec2"})
    assert family == "wav2vec2"
    assert config == Config.from_name("wav2vec2-base")


def test_config_large_lv60_from_legacy_args():
    args = {
        "arch": "wav2vec2",
        "extractor_mode": "layer_norm",
        "layer_norm_first": True,
        "conv_bias": True,
        "encoder_layers": 24,
        "encoder_embed_dim": 1024,
        "encoder_ffn_embed_dim": 4096,
        "encoder_attention_heads": 16,
    }
    config, family = config_from_fairseq(args)
    assert config == Config.from_name("wav2vec2-large-lv60")


def test_config_data2vec_pos_conv_stack():
    config, family = config_from_fairseq(
        {
            "_name": "data2vec_audio",
            "extractor_mode": "layer_norm",
            "conv_pos": 95,
            "pos_conv_depth": 5,
        }
    )
    assert family == "data2vec-audio"
    assert config == Config.from_name("data2vec-audio-base")


@pytest.mark.parametrize(
    "cfg, words",
    [
        ({"_name": "wav2vec"}, "wav2vec 1.0"),
        ({"_name": "data2vec_multi"}, "data2vec 2.0"),
        ({"_name": "wav2vec2", "activation_fn": "relu"}, "activation_fn"),
        ({"_name": "wav2vec2", "layer_type": "conformer"}, "conformer"),
        ({"_name": "wav2vec2", "extractor_mode": "bogus"}, "extractor_mode"),
        ({"_name": "wav2vec2", "encoder_embed_dim": 100}, "not divisible"),
    ],
)
def test_config_errors(cfg, words):
    with pytest.raises(CheckpointError, match=words):
        config_from_fairseq(cfg)


def test_conv_feature_layers_parsed_without_eval(tmp_path):
    default = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
    assert parse_conv_layers(default) == [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    marker = tmp_path / "ran"
    for bad in (f"__import__('os').system('touch {marker}')", "[(512, 10, 5)] * 10**9", "[1, 2]"):
        with pytest.raises(CheckpointError, match="conv_feature_layers"):
            parse_conv_layers(bad)
    assert not marker.exists()


# --------------------------------------------------------------------------
# Key table errors


def _plain_checkpoint(name: str) -> dict:
    """A fixture as plain data (cfg as dicts), ready to be edited and re-saved."""
    obj = unpickle.read_torch_file(FIXTURES / f"{name}.pt")
    return {"cfg": unpickle.to_plain(obj["cfg"]), "model": dict(obj["model"])}


def test_unknown_key_is_an_error_naming_it(tmp_path):
    ckpt = _plain_checkpoint("wav2vec2_default")
    ckpt["model"]["encoder.layers.0.self_attn.rotary.weight"] = torch.zeros(2)
    path = tmp_path / "unknown.pt"
    torch.save(ckpt, path)
    with pytest.raises(
        CheckpointError, match=r"encoder\.layers\.0\.self_attn\.rotary\.weight"
    ) as e:
        read_fairseq(path)
    assert str(path) in str(e.value)


def test_missing_key_is_an_error_naming_it(tmp_path):
    ckpt = _plain_checkpoint("wav2vec2_default")
    del ckpt["model"]["encoder.layers.1.fc2.weight"]
    path = tmp_path / "missing.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"missing.*encoder\.layers\.1\.fc2\.weight"):
        read_fairseq(path)


def test_weights_beyond_the_config_are_an_error():
    ckpt = _plain_checkpoint("wav2vec2_default")
    config, _ = config_from_fairseq(ckpt["cfg"]["model"])
    state = dict(ckpt["model"])
    state["encoder.layers.2.fc1.weight"] = torch.zeros(32, 16)
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.2\.fc1\.weight"):
        convert_fairseq_state_dict(state, config)


def test_wrong_shape_is_an_error():
    ckpt = _plain_checkpoint("wav2vec2_default")
    config, _ = config_from_fairseq(ckpt["cfg"]["model"])
    state = dict(ckpt["model"])
    state["encoder.layers.0.fc1.weight"] = torch.zeros(31, 16)
    with pytest.raises(CheckpointError, match="shape"):
        convert_fairseq_state_dict(state, config)


def test_conversion_is_pure():
    ckpt = _plain_checkpoint("hubert")
    config, _ = config_from_fairseq(ckpt["cfg"]["model"])
    before = dict(ckpt["model"])
    out, _ = convert_fairseq_state_dict(ckpt["model"], config)
    assert ckpt["model"].keys() == before.keys()
    assert (
        out["encoder.layers.0.feed_forward.intermediate_dense.weight"]
        is before["encoder.layers.0.fc1.weight"]
    )


def test_identity_projection_when_fairseq_has_none():
    # fairseq builds no post_extract_proj when conv width == model width
    config = Config(**{**TINY, "hidden_size": 8, "num_heads": 2, "intermediate_size": 16})
    state = {
        k.replace("post_extract_proj", "dropped"): v
        for k, v in _fake_fairseq_state(config).items()
        if not k.startswith("post_extract_proj")
    }
    out, _ = convert_fairseq_state_dict(state, config)
    torch.testing.assert_close(out["feature_projection.projection.weight"], torch.eye(8))


def test_flattened_weight_g_is_reshaped():
    ckpt = _plain_checkpoint("wav2vec2_default")
    config, _ = config_from_fairseq(ckpt["cfg"]["model"])
    g = ckpt["model"]["encoder.pos_conv.0.weight_g"]
    flat = {**ckpt["model"], "encoder.pos_conv.0.weight_g": g.flatten()}
    out, _ = convert_fairseq_state_dict(flat, config)
    assert torch.equal(out["encoder.pos_conv_embed.conv.weight_g"], g)


def test_both_weight_norm_spellings_are_an_error():
    ckpt = _plain_checkpoint("wav2vec2_default")
    config, _ = config_from_fairseq(ckpt["cfg"]["model"])
    g = ckpt["model"]["encoder.pos_conv.0.weight_g"]
    state = {**ckpt["model"], "encoder.pos_conv.0.parametrizations.weight.original0": g}
    with pytest.raises(CheckpointError, match="weight_g and .*original0 both give"):
        convert_fairseq_state_dict(state, config)


def test_wavlm_keys_suggest_the_hugging_face_version():
    ckpt = _plain_checkpoint("wav2vec2_default")
    config, _ = config_from_fairseq(ckpt["cfg"]["model"])
    state = {**ckpt["model"], "encoder.layers.0.self_attn.grep_linear.weight": torch.zeros(8, 4)}
    with pytest.raises(CheckpointError, match=r"grep_linear\.weight \(a WavLM checkpoint\?"):
        convert_fairseq_state_dict(state, config)


def _fake_fairseq_state(config: Config) -> dict[str, torch.Tensor]:
    table = key_table(config)
    state = {}
    for key, value in expected_state(config).items():
        src = table.source_of(key)  # the first spelling: weight_g, not parametrizations
        if src is not None:
            assert "parametrizations" not in src
            state[src] = torch.zeros(value.shape, dtype=value.dtype)
    return state


# --------------------------------------------------------------------------
# Damaged files


@pytest.mark.parametrize("cut", [0.5, 0.95])
@pytest.mark.parametrize("name", ["wav2vec2_default", "wav2vec2_legacy"])
def test_truncated_file_is_a_one_line_error(name, cut, tmp_path):
    data = (FIXTURES / f"{name}.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError) as e:
        read_fairseq(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_garbage_file_is_a_one_line_error(content, tmp_path, capsys):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        w2v.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert cli_main(["convert", str(path), str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err


def test_not_a_fairseq_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="not a fairseq checkpoint"):
        read_fairseq(path)


# --------------------------------------------------------------------------
# Safety: a checkpoint never runs code


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux


def _malicious_files(tmp_path: Path, marker: Path) -> list[Path]:
    zipped, legacy, plain = tmp_path / "zip.pt", tmp_path / "legacy.pt", tmp_path / "plain.pt"
    obj = {"model": {"w": torch.zeros(1)}, "args": _Payload(marker)}
    torch.save(obj, zipped)
    torch.save(obj, legacy, _use_new_zipfile_serialization=False)
    with open(plain, "wb") as f:  # no tensors: a plain pickle spells them with torch.load
        pickle.dump({"model": {}, "args": _Payload(marker)}, f, protocol=2)
    return [zipped, legacy, plain]


def test_malicious_checkpoint_is_refused_by_load(tmp_path):
    marker = tmp_path / "pwned"
    for path in _malicious_files(tmp_path, marker):
        with pytest.raises(CheckpointError) as e:
            w2v.load(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: refusing to load") and SYSTEM in msg
        assert "\n" not in msg
    assert not marker.exists()


def test_malicious_checkpoint_is_refused_by_the_cli(tmp_path):
    marker = tmp_path / "pwned"
    for path in _malicious_files(tmp_path, marker):
        dst = tmp_path / f"out-{path.stem}"
        proc = subprocess.run(
            [sys.executable, "-m", "w2v.cli", "convert", str(path), str(dst)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.returncode != 0
        assert SYSTEM in proc.stderr and str(path) in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not dst.exists()
    assert not marker.exists()


def test_torch_load_with_this_pickle_module(tmp_path):
    # the module also works as torch.load(pickle_module=...) for non-TorchScript files
    obj = torch.load(FIXTURES / "wav2vec2_default.pt", pickle_module=unpickle, weights_only=False)
    assert isinstance(obj["model"]["encoder.layer_norm.weight"], torch.Tensor)
    marker = tmp_path / "pwned"
    for path in _malicious_files(tmp_path, marker)[:2]:
        with pytest.raises(unpickle.RefusedGlobal):
            torch.load(path, pickle_module=unpickle, weights_only=False)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("__builtin__", "eval"),
        ("os", "system"),
        ("subprocess", "Popen"),
        ("torch", "load"),
        ("torch.storage", "_load_from_bytes"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("numpy", "load"),
        ("collections", "namedtuple"),
        ("copyreg", "_reconstructor"),
    ],
)
def test_unpickler_refuses_globals(module, name):
    data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x01\x00\x00\x001\x85R."
    with pytest.raises(unpickle.RefusedGlobal) as e:
        unpickle.loads(data)
    shown = f"{e.value.module}.{e.value.name}"
    assert shown in (f"{module}.{name}", f"builtins.{name}")


def test_unpickler_refuses_state_on_a_class_and_extension_codes():
    import argparse

    # BUILD with slot state onto argparse.Namespace itself would patch the class
    data = b"\x80\x02cargparse\nNamespace\nN}X\x08\x00\x00\x00__repr__cbuiltins\nstr\ns\x86b."
    with pytest.raises(unpickle.Refused, match="restores the state"):
        unpickle.loads(data)
    assert argparse.Namespace.__repr__ is not str
    with pytest.raises(unpickle.Refused, match="extension"):
        unpickle.loads(b"\x80\x02\x82\x01.")


# --------------------------------------------------------------------------
# Stand-ins for omegaconf and fairseq classes


class _FakeGlobalPickler(pickle._Pickler):
    """Writes classes carrying ``_global`` under that name (omegaconf/fairseq are not installed)."""

    def save_global(self, obj, name=None):
        qualname = obj.__dict__.get("_global") if isinstance(obj, type) else None
        if qualname is None:
            return super().save_global(obj, name)
        module, name = qualname.rsplit(".", 1)
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)


def _fake(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[1], (), {"_global": qualname})


DictConfig = _fake("omegaconf.dictconfig.DictConfig")
ListConfig = _fake("omegaconf.listconfig.ListConfig")
AnyNode = _fake("omegaconf.nodes.AnyNode")
ContainerMetadata = _fake("omegaconf.base.ContainerMetadata")
Metadata = _fake("omegaconf.base.Metadata")
TypingAny = _fake("typing.Any")
Dictionary = _fake("fairseq.data.dictionary.Dictionary")


def _node(value):
    n = AnyNode()
    n._metadata = Metadata()
    n._metadata.__dict__.update(ref_type=TypingAny, object_type=None, optional=True, key=None)
    n._val = value
    n._parent = None
    return n


def _dictconfig(content):
    d = DictConfig()
    d._metadata = ContainerMetadata()
    d._metadata.__dict__.update(ref_type=TypingAny, object_type=dict, key_type=TypingAny)
    d._parent = None
    if isinstance(content, dict):
        content = {k: _wrap(v) for k, v in content.items()}
    d._content = content
    return d


def _wrap(v):
    if isinstance(v, dict):
        return _dictconfig(v)
    if isinstance(v, list):
        lc = ListConfig()
        lc._metadata = ContainerMetadata()
        lc._content = [_wrap(x) for x in v]
        return lc
    return _node(v)


def _fake_dumps(obj) -> bytes:
    import io

    buf = io.BytesIO()
    _FakeGlobalPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def test_omegaconf_stand_ins_become_plain_data():
    cfg = _dictconfig(
        {
            "model": {
                "_name": "wav2vec2",
                "conv_feature_layers": "[(512, 10, 5)]",
                "normalize": "${task.normalize}",  # fairseq's II("task.normalize")
                "w2v_path": "???",
                "latent_temp": [2.0, 0.5],
            },
            "task": {"_name": "audio_pretraining", "normalize": True},
            "missing": "???",
        }
    )
    obj = unpickle.loads(_fake_dumps({"cfg": cfg}))
    assert isinstance(obj["cfg"], unpickle.Record)
    assert obj["cfg"].qualname == "omegaconf.dictconfig.DictConfig"
    plain = unpickle.to_plain(obj["cfg"])
    assert plain == {
        "model": {
            "_name": "wav2vec2",
            "conv_feature_layers": "[(512, 10, 5)]",
            "normalize": True,
            "w2v_path": None,
            "latent_temp": [2.0, 0.5],
        },
        "task": {"_name": "audio_pretraining", "normalize": True},
        "missing": None,
    }


def test_dictionary_stand_in_keeps_its_state():
    d = Dictionary()
    d.__dict__.update(
        bos_word="<s>",
        symbols=["<s>", "<pad>", "</s>", "<unk>", "|", "A"],
        count=[1, 1, 1, 1, 5, 3],
        indices={"<s>": 0, "<pad>": 1},
        nspecial=4,
    )
    obj = unpickle.loads(_fake_dumps({"task_state": {"target_dictionary": d}}))
    record = obj["task_state"]["target_dictionary"]
    assert isinstance(record, unpickle.Record)
    assert record.qualname == "fairseq.data.dictionary.Dictionary"
    assert record.state_dict()["symbols"] == ["<s>", "<pad>", "</s>", "<unk>", "|", "A"]


def test_namespace_numpy_and_tensors_round_trip(tmp_path):
    import argparse

    import numpy as np

    obj = {
        "args": argparse.Namespace(arch="wav2vec2", lr=[0.1], normalize=True),
        "np": {"scalar": np.float64(2.5), "array": np.arange(6, dtype=np.int16).reshape(2, 3)},
        "model": {"half": torch.arange(4, dtype=torch.float16), "view": torch.arange(10.0)[2:5]},
        "size": torch.Size([2, 3]),
        "set": {1, 2},
    }
    for legacy in (False, True):
        path = tmp_path / f"ok{legacy}.pt"
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        back = unpickle.read_torch_file(path)
        assert unpickle.to_plain(back["args"]) == {
            "arch": "wav2vec2",
            "lr": [0.1],
            "normalize": True,
        }
        assert back["np"]["scalar"] == 2.5
        np.testing.assert_array_equal(back["np"]["array"], obj["np"]["array"])
        torch.testing.assert_close(back["model"]["half"], obj["model"]["half"])
        torch.testing.assert_close(back["model"]["view"], torch.tensor([2.0, 3.0, 4.0]))
        assert back["size"] == torch.Size([2, 3]) and back["set"] == {1, 2}
