"""Fine-tuned checkpoints: the heads w2v runs are kept with their config and weights, other
weights outside the backbone are kept unused (bit-identical through ``w2v convert``) with a
notice or refused when strict, and unsupported backbone features are refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from w2v.convert import checkpoint
from w2v.convert.checkpoint import HEAD_FILE, WEIGHTS_FILE, CheckpointError
from w2v.convert.fairseq_file import read_fairseq
from w2v.convert.load import read_checkpoint
from w2v.convert.outside import EXTRA_FILE, groups
from w2v.convert.safe_pickle import read_torch_file, to_plain

from tests.helpers import FAIRSEQ_FIXTURES, REPO, hf_class, hf_config, perturb_
from w2v.nn.heads import build_head

LABELS = {0: "angry", 1: "happy", 2: "neutral"}
XVECTOR = dict(tdnn_dim=(16, 16, 24), tdnn_kernel=(5, 3, 1), tdnn_dilation=(1, 2, 1))


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def read(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return read_checkpoint(path, **kwargs)


def save(model, directory: Path) -> Path:
    model.save_pretrained(directory)
    return directory


def assert_same_tensors(a: dict, b: dict) -> None:
    """Same keys, dtypes, shapes and bytes."""
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].contiguous().view(-1).view(torch.uint8),
                           b[k].contiguous().view(-1).view(torch.uint8)), k  # fmt: skip


def speech_classification_class(transformers):
    """The community ``Wav2Vec2ForSpeechClassification`` (a notebook class, not part of
    transformers): the backbone as ``wav2vec2`` and a ``classifier`` of ``dense``,
    ``dropout``, ``out_proj``; config ``pooling_mode``."""

    class Classifier(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.dropout = nn.Dropout(config.final_dropout)
            self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    class Wav2Vec2ForSpeechClassification(transformers.Wav2Vec2PreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.pooling_mode = config.pooling_mode
            self.wav2vec2 = transformers.Wav2Vec2Model(config)
            self.classifier = Classifier(config)
            self.post_init()

    return Wav2Vec2ForSpeechClassification


def unknown_head_class(transformers):
    """A classifier w2v has never heard of: the backbone and ``my_head``."""

    class MyHead(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.norm = nn.LayerNorm(config.hidden_size)
            self.proj = nn.Linear(config.hidden_size, 5)

    class MyWav2Vec2Classifier(transformers.Wav2Vec2PreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.wav2vec2 = transformers.Wav2Vec2Model(config)
            self.my_head = MyHead(config)
            self.post_init()

    return MyWav2Vec2Classifier


def head_model(transformers, family: str, head: str, seed: int = 0):
    """A tiny perturbed random-init model with ``head`` and labels."""
    torch.manual_seed(seed)
    if head == "ForSpeechClassification":
        cls = speech_classification_class(transformers)
        config = hf_config(family, id2label=LABELS, pooling_mode="max")
    else:
        cls = hf_class(family, head)
        extra = XVECTOR | dict(xvector_output_dim=8) if head == "ForXVector" else {}
        config = hf_config(family, id2label=LABELS, use_weighted_layer_sum=True, **extra)
    return perturb_(cls(config), seed)


def backbone_of(model, directory: Path) -> dict:
    """The plain model's conversion: the same backbone saved alone."""
    return read(save(model.base_model, directory)).state_dict


# ---------------------------------------------------------------- heads w2v runs
HEAD_CASES = [
    ("wav2vec2", "ForSequenceClassification"),
    ("wav2vec2", "ForAudioFrameClassification"),
    ("wav2vec2", "ForXVector"),
    ("wav2vec2", "ForSpeechClassification"),
    ("hubert", "ForSequenceClassification"),
    ("wavlm", "ForXVector"),
]


@pytest.mark.parametrize(("family", "head"), HEAD_CASES, ids=[f"{f}-{h}" for f, h in HEAD_CASES])
def test_known_head_is_kept_with_its_config_and_weights(transformers, tmp_path, family, head):
    hf = head_model(transformers, family, head)
    src = save(hf, tmp_path / "src")
    ckpt = read_checkpoint(src)
    assert not any("dropped" in n for n in ckpt.notices)
    assert ckpt.head is not None and ckpt.head.labels == tuple(LABELS.values())
    assert ckpt.head.num_labels == 3 and not ckpt.extra
    prefix = hf.base_model_prefix + "."
    head_state = {k: v for k, v in hf.state_dict().items() if not k.startswith(prefix)}
    assert_same_tensors(dict(sorted(ckpt.head_state.items())), dict(sorted(head_state.items())))
    assert_same_tensors(ckpt.state_dict, backbone_of(hf, tmp_path / "plain"))
    if head == "ForSpeechClassification":
        assert ckpt.head.kind == "speech_classification" and ckpt.head.pooling_mode == "max"
    # the head module takes the weights under their own names
    build_head(ckpt.head, ckpt.config).load_state_dict(ckpt.head_state, strict=True)

    # the w2v directory keeps head and labels; reading it (and converting again) loses nothing
    out = checkpoint.save(ckpt, tmp_path / "w2v")
    meta = json.loads((out / "config.json").read_text())
    assert meta["format_version"] == 2 and meta["extra"] == []
    assert meta["head"]["kind"] == ckpt.head.kind and meta["head"]["labels"] == list(
        LABELS.values()
    )
    assert sorted(p.name for p in out.iterdir()) == ["config.json", HEAD_FILE, WEIGHTS_FILE]
    again = read_checkpoint(out, strict=True)
    assert again.head == ckpt.head and again.notices == ()
    assert_same_tensors(dict(sorted(again.head_state.items())), dict(sorted(head_state.items())))
    assert_same_tensors(again.state_dict, dict(sorted(ckpt.state_dict.items())))


def test_known_heads_are_accepted_when_strict(transformers, tmp_path):
    src = save(head_model(transformers, "wav2vec2", "ForSpeechClassification"), tmp_path / "s")
    assert read(src, strict=True).head.kind == "speech_classification"


def test_head_whose_weights_do_not_fit_its_class_is_kept_unused(transformers, tmp_path):
    """A class named like a known head but built otherwise (a plain Linear ``classifier``)."""
    hf = head_model(transformers, "wav2vec2", "ForSpeechClassification")
    src = save(hf, tmp_path / "src")

    def plain_classifier(state):
        for k in [k for k in state if k.startswith("classifier.")]:
            del state[k]
        state["classifier.weight"] = torch.ones(3, 32)

    edit_weights(src, plain_classifier)
    ckpt = read_checkpoint(src)
    assert any("speech_classification head" in n and "lacks weights" in n for n in ckpt.notices)
    assert ckpt.head is None and list(ckpt.extra) == ["classifier.weight"]
    with pytest.raises(CheckpointError, match="speech_classification head lacks weights"):
        read(src, strict=True)


def test_config_naming_a_head_beside_weights_without_one_loads(transformers, tmp_path):
    src = save(hf_class("wav2vec2")(hf_config("wav2vec2")), tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["Wav2Vec2ForSequenceClassification"]
    (src / "config.json").write_text(json.dumps(cfg))
    for strict in (False, True):
        ckpt = read(src, strict=strict)
        assert ckpt.head is None and not ckpt.extra
        assert any("sequence_classification head" in n and "lacks" in n for n in ckpt.notices)


# ---------------------------------------------------------------- heads w2v does not run
@pytest.fixture
def unknown_head(transformers, tmp_path) -> tuple[Path, dict, object]:
    """An HF directory with an unknown head, plus head keys of odd dtypes."""
    torch.manual_seed(0)
    hf = perturb_(unknown_head_class(transformers)(hf_config("wav2vec2")))
    src = save(hf, tmp_path / "src")
    odd = {
        "my_head.scale": torch.randn(4).to(torch.bfloat16),
        "my_head.steps": torch.tensor([3, -1, 2**40]),
        "my_head.table": torch.randn(2, 3).half(),
    }
    edit_weights(src, lambda state: state.update(odd))
    extra = {k: v for k, v in hf.state_dict().items() if k.startswith("my_head.")} | odd
    return src, extra, hf


def test_unknown_head_loads_with_a_notice_and_is_kept(unknown_head, tmp_path):
    src, extra, hf = unknown_head
    ckpt = read_checkpoint(src)
    (notice,) = [n for n in ckpt.notices if "my_head" in n]
    assert f"dropped {len(extra)} weights" in notice and EXTRA_FILE in notice
    listed = notice.split("run: ")[1].split(" (")[0]
    assert sorted(listed.split(", ")) == ["my_head.*", "my_head.norm.*", "my_head.proj.*"]
    assert ckpt.head is None
    assert_same_tensors(dict(sorted(ckpt.extra.items())), dict(sorted(extra.items())))
    assert_same_tensors(ckpt.state_dict, backbone_of(hf, tmp_path / "plain"))


def test_strict_refuses_an_unknown_head(unknown_head):
    src, _, _ = unknown_head
    with pytest.raises(CheckpointError, match=r"unknown weight keys: .*my_head\.") as e:
        read(src, strict=True)
    assert str(src) in str(e.value)


def test_convert_keeps_unknown_head_keys_bit_identical(unknown_head, tmp_path):
    src, extra, _ = unknown_head
    dst = tmp_path / "dst"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "w2v.cli", "convert", str(src), str(dst)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert any("my_head" in line and EXTRA_FILE in line for line in result.stderr.splitlines())
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", EXTRA_FILE, WEIGHTS_FILE]
    kept = load_file(str(dst / EXTRA_FILE))
    assert_same_tensors(dict(sorted(kept.items())), dict(sorted(extra.items())))
    meta = json.loads((dst / "config.json").read_text())
    assert sorted(meta["extra"]) == sorted(extra) and meta["head"] is None

    # reading the directory keeps them (with the notice), so converting again loses nothing
    ckpt = read_checkpoint(dst)
    assert any("my_head" in n and str(dst) in n for n in ckpt.notices)
    again = checkpoint.save(ckpt, tmp_path / "again")
    assert_same_tensors(load_file(str(again / EXTRA_FILE)), kept)
    with pytest.raises(CheckpointError, match="unknown weight keys"):
        read(dst, strict=True)


def test_stale_side_files_are_removed_when_replaced(unknown_head, transformers, tmp_path):
    src, _, _ = unknown_head
    out = checkpoint.save(read(src), tmp_path / "out")
    assert (out / EXTRA_FILE).is_file()
    plain = save(head_model(transformers, "wav2vec2", "ForXVector").base_model, tmp_path / "p")
    checkpoint.save(read(plain), out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", WEIGHTS_FILE]
    # a directory that is not w2v's own keeps files that happen to have those names
    other = tmp_path / "other"
    other.mkdir()
    (other / EXTRA_FILE).write_bytes(b"the user's")
    checkpoint.save(read(plain), other)
    assert (other / EXTRA_FILE).read_bytes() == b"the user's"


def test_w2v_directory_whose_side_files_disagree_is_refused(unknown_head, tmp_path):
    src, _, _ = unknown_head
    out = checkpoint.save(read(src), tmp_path / "out")
    kept = load_file(str(out / EXTRA_FILE))
    kept.pop("my_head.scale")
    save_file(kept, str(out / EXTRA_FILE))
    with pytest.raises(CheckpointError, match=r"extra\.safetensors: holds"):
        read(out)
    (out / EXTRA_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        read(out)


def test_unknown_key_inside_the_backbone_is_still_an_error(unknown_head):
    src, _, _ = unknown_head
    key = "wav2vec2.encoder.layers.0.attention.rotary.weight"
    edit_weights(src, lambda state: state.__setitem__(key, torch.zeros(3)))
    with pytest.raises(CheckpointError, match="unknown weight keys") as e:
        read(src)
    assert key in str(e.value)


def test_missing_backbone_key_is_still_an_error(unknown_head):
    src, _, _ = unknown_head
    key = "wav2vec2.encoder.layers.1.feed_forward.output_dense.bias"
    edit_weights(src, lambda state: state.pop(key))
    with pytest.raises(CheckpointError, match="missing") as e:
        read(src)
    assert key in str(e.value)


def test_keys_that_are_no_module_path_are_not_kept(unknown_head):
    src, _, _ = unknown_head
    key = "my head\x1b[2J.weight"
    edit_weights(src, lambda state: state.__setitem__(key, torch.zeros(3)))
    with pytest.raises(CheckpointError, match="unknown weight keys"):
        read(src)


def test_groups_name_modules():
    keys = ["classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight"]
    assert groups([*keys, "scale"]) == "classifier.dense.*, classifier.out_proj.*, scale"
    assert groups([f"m{i}.w" for i in range(10)], limit=2) == "m0.*, m1.* (+8 more)"


# ---------------------------------------------------------------- unsupported backbones
def test_add_adapter_is_refused_by_name(transformers, tmp_path):
    config = hf_config("wav2vec2", add_adapter=True, output_hidden_size=32, num_adapter_layers=1)
    src = save(hf_class("wav2vec2")(config), tmp_path / "src")
    with pytest.raises(CheckpointError, match=r"add_adapter.*adapter stack"):
        read(src)


def test_adapter_weights_are_named_as_such(transformers, tmp_path):
    """Weights of an adapter stack whose config does not say so."""
    src = save(hf_class("wav2vec2", "ForCTC")(hf_config("wav2vec2", vocab_size=5)), tmp_path / "s")
    key = "wav2vec2.adapter.layers.0.conv.weight"
    edit_weights(src, lambda state: state.__setitem__(key, torch.zeros(64, 32, 3)))
    with pytest.raises(CheckpointError, match=r"unknown weight keys.*add_adapter") as e:
        read(src)
    assert key in str(e.value)


def test_mms_adapters_are_refused_by_name(transformers, tmp_path):
    # MMS: stable-layer-norm layers with a small adapter each
    config = hf_config(
        "wav2vec2",
        vocab_size=5,
        adapter_attn_dim=8,
        do_stable_layer_norm=True,
        feat_extract_norm="layer",
    )
    model = hf_class("wav2vec2", "ForCTC")(config)
    assert any("adapter_layer" in k for k in model.state_dict())
    src = save(model, tmp_path / "src")
    with pytest.raises(CheckpointError, match=r"adapter_attn_dim.*MMS"):
        read(src)
    # and the weights alone, under a config that does not say so
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(dict(cfg, adapter_attn_dim=None)))
    with pytest.raises(CheckpointError, match=r"adapter_layer.*MMS language adapters"):
        read(src)


def test_conformer_is_refused_by_name(transformers, tmp_path):
    config = transformers.Wav2Vec2ConformerConfig(
        **{k: v for k, v in hf_config("wav2vec2").to_dict().items() if k in _TINY_KEYS}
    )
    src = save(transformers.Wav2Vec2ConformerModel(config), tmp_path / "src")
    with pytest.raises(CheckpointError, match=r"wav2vec2-conformer.*conformer encoder"):
        read(src)


_TINY_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "conv_dim",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
)


# ---------------------------------------------------------------- fairseq
def plain_fairseq(name: str) -> dict:
    obj = read_torch_file(FAIRSEQ_FIXTURES / f"{name}.pt")
    return {"cfg": to_plain(obj["cfg"]), "model": dict(obj["model"])}


@pytest.mark.parametrize(
    ("name", "key"),
    [("wav2vec2_default", "decoder.proj.weight"), ("wav2vec2_ctc", "w2v_encoder.lm.weight")],
)
def test_fairseq_key_outside_the_encoder_is_kept(tmp_path, name, key):
    ckpt = plain_fairseq(name)
    value = torch.randn(3, 4).to(torch.bfloat16)
    ckpt["model"][key] = value
    path = tmp_path / "extra.pt"
    torch.save(ckpt, path)
    plain = read_fairseq(FAIRSEQ_FIXTURES / f"{name}.pt")
    got = read_fairseq(path)
    assert list(got.extra) == [key] and torch.equal(got.extra[key], value)
    assert got.extra[key].dtype == torch.bfloat16
    (notice,) = [n for n in got.notices if key.rsplit(".", 1)[0] in n]
    assert str(path) in notice and "dropped 1 weights" in notice
    assert_same_tensors(got.state_dict, plain.state_dict)
    out = checkpoint.save(got, tmp_path / "out")
    assert_same_tensors(load_file(str(out / EXTRA_FILE)), {key: value})
    with pytest.raises(CheckpointError, match="unknown weight keys") as e:
        read_fairseq(path, strict=True)
    assert key in str(e.value)


@pytest.mark.parametrize(
    "key",
    [
        "encoder.layers.0.self_attn.rotary.weight",
        "feature_extractor.conv_layers.0.3.weight",
        "post_extract_proj.scale",
    ],
)
def test_fairseq_unknown_key_inside_the_encoder_is_an_error(tmp_path, key):
    ckpt = plain_fairseq("wav2vec2_default")
    ckpt["model"][key] = torch.zeros(2)
    path = tmp_path / "bad.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="unknown weight keys") as e:
        read_fairseq(path)
    assert key in str(e.value)


def test_fairseq_ctc_unknown_key_in_its_encoder_is_an_error(tmp_path):
    ckpt = plain_fairseq("wav2vec2_ctc")
    key = "w2v_encoder.w2v_model.encoder.layers.0.self_attn.rotary.weight"
    ckpt["model"][key] = torch.zeros(2)
    path = tmp_path / "bad.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="unknown weight keys"):
        read_fairseq(path)


def test_fairseq_expanded_tensor_outside_the_encoder_is_refused(tmp_path):
    ckpt = plain_fairseq("wav2vec2_default")
    ckpt["model"]["decoder.weight"] = torch.zeros(1).expand(10**9)
    path = tmp_path / "expanded.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError):
        read_fairseq(path)


def test_fairseq_conformer_is_refused_by_name(tmp_path):
    ckpt = plain_fairseq("wav2vec2_default")
    ckpt["cfg"]["model"]["layer_type"] = "conformer"
    path = tmp_path / "conformer.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="conformer"):
        read_fairseq(path)


def edit_weights(directory: Path, edit) -> None:
    file = directory / "model.safetensors"
    state = load_file(str(file))
    edit(state)
    save_file(state, str(file), metadata={"format": "pt"})
