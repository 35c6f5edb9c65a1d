"""``w2v train``: a tiny model trained a few dozen steps on generated audio, each loss
falling; a run killed after a checkpoint resumes with the numbers of an uninterrupted one."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from w2v.convert.checkpoint import from_model, save

import w2v
from tests.helpers import TINY_W2V
from w2v.cli import main
from w2v.config import Config
from w2v.nn.model import Model
from w2v.nn.pretraining import PretrainingConfig
from w2v.train.loop import METRICS_FILE, TrainSettings, train

TINY = dict(TINY_W2V, conv_dim=(16,) * 7)
PRETRAINING = PretrainingConfig(
    objective="wav2vec2",
    final_dim=16,
    codevector_dim=16,
    num_codevector_groups=2,
    num_codevectors_per_group=8,
)
WORDS = {"low": "ab a", "high": "ba b"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Eight 1 s tones, low or high, with their transcripts and labels, and a tiny model."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    transcripts, labels = [], []
    t = np.arange(4000) / 16000
    for i in range(8):
        kind = "low" if i % 2 else "high"
        base = 200 if kind == "low" else 2000
        # four 0.25 s segments, each a tone from four: context tells a masked frame's tone
        tones = [base * (1 + 0.5 * rng.integers(4)) for _ in range(4)]
        wave = np.concatenate([0.5 * np.sin(2 * np.pi * f * t) for f in tones])
        wave = wave + 0.05 * rng.standard_normal(len(wave))
        sf.write(root / f"a{i}.wav", wave.astype(np.float32), 16000)
        transcripts.append(f"a{i}.wav\t{WORDS[kind]}\n")
        labels.append(f"a{i}.wav\t{kind}\n")
    (root / "text.tsv").write_text("".join(transcripts))
    (root / "labels.tsv").write_text("".join(labels))
    torch.manual_seed(0)
    save(from_model(Model(Config(**TINY), pretraining=PRETRAINING)), root / "model")
    return root


def settings(task: str, **kw) -> TrainSettings:
    base = dict(
        task=task, steps=30, batch_size=4, crop_seconds=1.0, lr=3e-3, warmup_steps=3,
        mask_length=3, num_negatives=10, mask_prob=0.5 if task == "pretrain" else 0.0,
        checkpoint_every=100, gumbel_temperature=(0.5, 0.5, 1.0),
    )  # fmt: skip
    base.update(kw)
    return TrainSettings(**base)


def losses(out, key: str = "loss") -> list[float]:
    lines = (out / METRICS_FILE).read_text().splitlines()
    return [json.loads(line)[key] for line in lines]


# (task, targets file, metric, the most the last five steps' mean may be of the first
# five's). Contrastive pretraining starts at chance, log(1 + K), and moves slowly in 30
# steps; every number here is deterministic (all randomness is seeded per step).
CASES = [
    ("pretrain", None, "loss", 0.96, {}),
    ("ctc", "text.tsv", "ctc_loss", 0.8, dict(steps=20, crop_seconds=0.5)),
    ("classify", "labels.tsv", "loss", 0.9, dict(steps=20, crop_seconds=0.5)),
]


@pytest.mark.slow  # 20-30 steps per task: a few seconds each on an idle 2-core CPU
@pytest.mark.parametrize(("task", "targets", "key", "ratio", "options"), CASES)
def test_each_loss_falls(corpus, tmp_path, device, task, targets, key, ratio, options):
    """On a GPU the steps run under bf16 autocast (``amp``, the default) where supported."""
    out = tmp_path / task
    s = settings(task, **options)
    last = train(
        s,
        corpus / "model",
        [corpus],
        out,
        targets=None if targets is None else corpus / targets,
        device=device,
    )
    values = losses(out, key)
    assert len(values) == s.steps and all(math.isfinite(v) for v in values)
    first, final = np.mean(values[:5]), np.mean(values[-5:])
    assert final < ratio * first, (first, final)
    model = w2v.load(out / f"step-{s.steps:08d}")  # the checkpoint is a w2v directory
    assert model.config.hidden_size == 32
    if task == "pretrain":
        assert "codevector_perplexity" in last and model.pretraining is not None
    if task == "ctc":
        assert model.vocab[0] == "<pad>" and model.lm_head is not None
    if task == "classify":
        assert model.id2label == {0: "high", 1: "low"}


def test_kill_and_resume_gives_the_numbers_of_an_uninterrupted_run(corpus, tmp_path):
    s = settings("pretrain", steps=8, checkpoint_every=4, hidden_dropout=0.1, layerdrop=0.2)
    whole = tmp_path / "whole"
    train(s, corpus / "model", [corpus], whole)

    def crash(metrics):
        if metrics["step"] == 6:
            raise KeyboardInterrupt  # killed after the step-4 checkpoint and two more steps

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        train(s, corpus / "model", [corpus], broken, on_step=crash)
    assert len(losses(broken)) == 6
    train(s, corpus / "model", [corpus], broken)  # resumes from step 4

    def rows(out):
        return [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (out / METRICS_FILE).read_text().splitlines()
        ]

    assert rows(broken) == rows(whole)
    a = w2v.load(whole / "step-00000008").state_dict()
    b = w2v.load(broken / "step-00000008").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_settings(corpus, tmp_path):
    s = settings("pretrain", steps=2, checkpoint_every=1)
    train(s, corpus / "model", [corpus], tmp_path / "run")
    with pytest.raises(w2v.errors.UsageError, match="other settings"):
        train(settings("pretrain", steps=2, lr=1e-4), corpus / "model", [corpus], tmp_path / "run")


def test_cli_trains_and_reports_usage_errors(corpus, tmp_path, capsys):

    out = tmp_path / "cli"
    args = ["train", "classify", str(corpus), "--model", str(corpus / "model"), "--out", str(out)]
    code = main(
        [*args, "--targets", str(corpus / "labels.tsv"), "--steps", "2", "--crop-seconds", "0.5"]
    )
    assert code == 0
    assert len(losses(out)) == 2 and w2v.load(out / "step-00000002").head_kind
    assert main(args) == 2  # classification needs --targets
    assert "needs a targets file" in capsys.readouterr().err
