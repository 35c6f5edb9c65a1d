"""``w2v embed --head``: the head's outputs beside the layers (safetensors), labels and the
head kind in the manifest settings, CTC transcripts, and the usage errors (no head, npy,
``--strict``)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from w2v.convert.checkpoint import Checkpoint, save

from tests.helpers import TINY_W2V
from w2v.cli import main
from w2v.config import CheckpointInfo, Config
from w2v.nn.heads import HeadConfig
from w2v.nn.heads.ctc import greedy_decode
from w2v.nn.model import Model
from w2v.pipeline import audio
from w2v.pipeline.outputs import read_head_outputs, read_manifest, read_output

LABELS = ["angry", "happy", "neutral"]
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAOINSHRD"]
HEADS = {
    "sequence_classification": HeadConfig(
        "sequence_classification", num_labels=3, labels=tuple(LABELS), classifier_proj_size=8
    ),
    "frame_classification": HeadConfig("frame_classification", num_labels=3, labels=tuple(LABELS)),
    "xvector": HeadConfig(
        "xvector",
        num_labels=3,
        labels=tuple(LABELS),
        tdnn_dim=(16, 16, 24),
        tdnn_kernel=(5, 3, 1),
        tdnn_dilation=(1, 2, 1),
        xvector_output_dim=8,
        use_weighted_layer_sum=True,
    ),
    "speech_classification": HeadConfig(
        "speech_classification", num_labels=3, labels=tuple(LABELS), pooling_mode="max"
    ),
}
SECONDS = (0.5, 0.8)


def save_model(model: Model, directory: Path, **extra) -> Path:
    """A w2v checkpoint directory of ``model``, its task head and ``extra`` weights."""
    state = model.state_dict()
    head_state = {k.removeprefix("task_head."): v for k, v in state.items() if "task_head." in k}
    backbone = {k: v for k, v in state.items() if not k.startswith("task_head.")}
    head = None if model.task_head is None else model.task_head.head_config
    ckpt = Checkpoint(model.config, backbone, model.info, head=head, head_state=head_state,
                      extra=extra)  # fmt: skip
    return save(ckpt, directory)


def tiny(head: HeadConfig | None = None, vocab: list[str] | None = None) -> Model:
    torch.manual_seed(0)
    config = Config(**TINY_W2V, vocab_size=None if vocab is None else len(vocab))
    model = Model(config, CheckpointInfo(vocab=vocab), head).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # head matrices at 1/sqrt(fan_in): outputs that depend on the input
        for name, p in model.named_parameters():
            if name.startswith(("task_head.", "lm_head.")) and p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    return model


def write_inputs(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, seconds in enumerate(SECONDS):
        data = 0.1 * np.random.default_rng(i).standard_normal(int(16000 * seconds))
        paths.append(directory / f"a{i}.wav")
        sf.write(paths[-1], data.astype(np.float32), 16000, subtype="FLOAT")
    return paths


def run(argv: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def expected_head(model: Model, path: Path) -> dict[str, torch.Tensor]:
    wave, _ = sf.read(path, dtype="float32")
    with torch.inference_mode():
        return {k: v[0] for k, v in model.head(torch.from_numpy(wave)[None]).items()}


@pytest.mark.parametrize("kind", list(HEADS))
def test_head_outputs_beside_the_layers(kind, tmp_path, capsys):
    model = tiny(HEADS[kind])
    ckpt = save_model(model, tmp_path / "ckpt")
    inputs = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["embed", *inputs, "--model", ckpt, "--out", out, "--layers", "0,2"]
    code, err = run([*argv, "--head", "--format", "safetensors"], capsys)
    assert code == 0, err
    manifest = read_manifest(out)
    for path in inputs:
        entry = manifest[str(path)]
        assert (entry["head"], entry["labels"], entry["text"]) == (kind, LABELS, None)
        file = out / entry["output"]
        with safe_open(str(file), framework="numpy") as f:
            assert f.metadata()["head"] == kind
            names = set(f.keys())
        want = {"logits", "embeddings"} if kind == "xvector" else {"logits"}
        assert names == {"0", "2"} | want
        assert read_output(file).shape == (2, 32)  # the layers read back as before
        got, ref = read_head_outputs(file), expected_head(model, path)
        assert set(got) == set(ref) == want
        for name in want:
            torch.testing.assert_close(torch.from_numpy(got[name]), ref[name], atol=1e-5, rtol=0)
        if kind == "frame_classification":
            assert got["logits"].shape == (entry["frames"], len(LABELS))
        elif kind != "xvector":
            assert got["logits"].shape == (len(LABELS),)

    # --head is a setting: the same run again resumes, a run without it is refused
    code, err = run([*argv, "--head", "--format", "safetensors"], capsys)
    assert code == 0 and f"0 ok, 0 failed, {len(inputs)} skipped" in err, err
    code, err = run([*argv, "--format", "safetensors"], capsys)
    assert code == 2 and "other settings" in err and "head:" in err, err


def test_ctc_head_writes_logits_and_the_transcript(tmp_path, capsys):
    model = tiny(vocab=VOCAB)
    ckpt = save_model(model, tmp_path / "ckpt")
    inputs = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    code, err = run(
        ["embed", *inputs, "--model", ckpt, "--out", out, "--head", "--format", "safetensors"],
        capsys,
    )
    assert code == 0, err
    texts = []
    for path in inputs:
        entry = read_manifest(out)[str(path)]
        assert (entry["head"], entry["labels"]) == ("ctc", VOCAB)
        logits = read_head_outputs(out / entry["output"])["logits"]
        assert logits.shape == (entry["frames"], len(VOCAB))
        torch.testing.assert_close(
            torch.from_numpy(logits), expected_head(model, path)["logits"], atol=1e-5, rtol=0
        )
        assert entry["text"] == greedy_decode(torch.from_numpy(logits)[None], None, VOCAB)[0]
        texts.append(entry["text"])
    assert all(texts) and len(set("".join(texts))) > 2, texts


def test_head_on_a_model_without_one_is_a_usage_error(tmp_path, capsys):
    ckpt = save_model(tiny(), tmp_path / "ckpt")
    inputs = write_inputs(tmp_path / "in")
    argv = ["embed", *inputs, "--model", ckpt, "--out", tmp_path / "out", "--head"]
    code, err = run([*argv, "--format", "safetensors"], capsys)
    assert code == 2 and "error: --head: the model has no head (an encoder only)" in err, err
    assert not (tmp_path / "out" / "a0.wav.safetensors").exists()


def test_head_with_npy_is_a_usage_error(tmp_path, capsys):
    ckpt = save_model(tiny(HEADS["sequence_classification"]), tmp_path / "ckpt")
    inputs = write_inputs(tmp_path / "in")
    code, err = run(["embed", *inputs, "--model", ckpt, "--out", tmp_path / "o", "--head"], capsys)
    assert code == 2 and "--head needs --format safetensors" in err, err


def test_unknown_head_keys_run_without_head_and_strict_refuses(tmp_path, capsys):
    extra = {"my_head.proj.weight": torch.randn(5, 32), "my_head.proj.bias": torch.randn(5)}
    ckpt = save_model(tiny(), tmp_path / "ckpt", **extra)
    inputs = write_inputs(tmp_path / "in")
    argv = ["embed", *inputs, "--model", ckpt, "--format", "safetensors"]

    code, err = run([*argv, "--out", tmp_path / "o1"], capsys)
    assert code == 0 and "my_head.proj.*" in err, err  # the notice names them
    code, err = run([*argv, "--out", tmp_path / "o2", "--head"], capsys)
    assert code == 2 and "no head w2v runs: my_head.proj.*" in err, err
    code, err = run([*argv, "--out", tmp_path / "o3", "--strict"], capsys)
    assert code == 2 and "unknown weight keys" in err and "my_head.proj" in err, err
    assert not (tmp_path / "o3" / "manifest.jsonl").exists()


def test_convert_strict_refuses_and_plain_convert_keeps_the_keys(tmp_path, capsys):
    extra = {"my_head.proj.weight": torch.randn(5, 32)}
    src = save_model(tiny(), tmp_path / "src", **extra)
    code, err = run(["convert", src, tmp_path / "strict", "--strict"], capsys)
    assert code == 2 and "unknown weight keys" in err, err
    assert not (tmp_path / "strict" / "config.json").exists()
    code, err = run(["convert", src, tmp_path / "plain"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["extra"] == list(extra)


def test_head_on_an_input_computed_in_windows_is_a_per_file_error(tmp_path, capsys):
    """A head runs on each input whole: an input the run computes in windows would need
    attention over all of it at once, so it is that input's error, and the rest go on."""
    ckpt = save_model(tiny(HEADS["sequence_classification"]), tmp_path / "ckpt")
    short, long = write_inputs(tmp_path / "in")  # 0.5 s and 0.8 s
    out = tmp_path / "out"
    argv = ["embed", short, long, "--model", ckpt, "--out", out, "--head"]
    code, err = run([*argv, "--format", "safetensors", "--chunk-seconds", "0.6"], capsys)
    assert code == 1, err
    entries = read_manifest(out)
    assert entries[str(short)]["status"] == "ok"
    assert entries[str(long)]["status"] == "error"
    assert "--head runs each input whole" in entries[str(long)]["error"]


@pytest.mark.parametrize("kind", ["xvector", "frame_classification", "ctc"])
def test_each_input_is_decoded_once_and_the_backbone_runs_once(kind, tmp_path, capsys, monkeypatch):
    """The head comes from the batched pass: no second decode, no second backbone run."""
    model = tiny(vocab=VOCAB) if kind == "ctc" else tiny(HEADS[kind])
    ckpt = save_model(model, tmp_path / "ckpt")
    inputs = write_inputs(tmp_path / "in")
    decoded, backbone = Counter(), Counter()
    load, run_backbone = audio.load, Model._run

    def counting_load(path, **kw):
        decoded[str(path)] += 1
        return load(path, **kw)

    def counting_run(self, waveforms, lengths, *args):
        samples = [waveforms.shape[-1]] * waveforms.shape[0] if lengths is None else lengths
        backbone.update(int(n) for n in samples)
        return run_backbone(self, waveforms, lengths, *args)

    monkeypatch.setattr(audio, "load", counting_load)
    monkeypatch.setattr(Model, "_run", counting_run)
    out = tmp_path / "out"
    argv = ["embed", *inputs, "--model", ckpt, "--out", out, "--head", "--format", "safetensors"]
    code, err = run(argv, capsys)
    assert code == 0, err
    assert decoded == {str(p): 1 for p in inputs}
    for seconds in SECONDS:  # every input's samples went through the backbone once
        assert backbone[int(16000 * seconds)] == 1, backbone


def test_a_head_failing_on_one_input_of_a_batch_costs_only_that_input(tmp_path, capsys):
    """The x-vector head refuses an input too short for its TDNN: the batch is retried item
    by item, so the short input is an error saying so and the others are as alone."""
    model = tiny(HEADS["xvector"])
    ckpt = save_model(model, tmp_path / "ckpt")
    inputs = write_inputs(tmp_path / "in")
    short = tmp_path / "in" / "short.wav"
    sf.write(short, np.full(1600, 0.1, np.float32), 16000, subtype="FLOAT")  # 4 frames
    out = tmp_path / "out"
    argv = ["embed", short, *inputs, "--model", ckpt, "--out", out, "--head"]
    code, err = run([*argv, "--format", "safetensors"], capsys)
    assert code == 1, err
    entries = read_manifest(out)
    assert entries[str(short)]["status"] == "error"
    assert "head: the x-vector head needs at least 10 frames" in entries[str(short)]["error"]
    for path in inputs:
        got = read_head_outputs(out / entries[str(path)]["output"])
        for name, ref in expected_head(model, path).items():
            torch.testing.assert_close(torch.from_numpy(got[name]), ref, atol=1e-5, rtol=0)
