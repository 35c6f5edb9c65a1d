"""``w2v train``: a plain PyTorch loop for wav2vec 2.0 pretraining, CTC fine-tuning and
utterance classification.

AdamW (no decay on biases and norms), linear warm-up then linear decay, gradient-norm
clipping, bf16 autocast on a GPU that supports it (``amp``), a step skipped (and counted)
when its loss is not finite. Everything random in step ``s`` (the batch, crops, masks,
negatives, dropout, Gumbel noise) is drawn from generators seeded by ``(seed, s)``, and
the schedules are functions of ``s``, so a run resumed from a checkpoint continues with the
numbers an uninterrupted run would have had.

An output directory holds ``train.json`` (the settings), ``metrics.jsonl`` (one JSON
object per logged step: ``step``, ``lr``, the loss and its parts, diagnostics, ``seconds``),
``step-NNNNNNNN/`` checkpoints (w2v checkpoint directories, loadable with :func:`w2v.load`,
plus ``trainer.pt``: the optimizer's state) and ``latest.json`` naming the newest one.
Running again into the same directory resumes from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from w2v.atomic import atomic_write
from w2v.config import Regularization, num_frames
from w2v.convert.checkpoint import from_model, save
from w2v.errors import UsageError, shown
from w2v.loading import from_config, load
from w2v.nn.heads import HeadConfig, build_head
from w2v.nn.model import Model
from w2v.nn.pretraining import PretrainingConfig
from w2v.pipeline import audio
from w2v.pipeline.inputs import collect_inputs
from w2v.train.losses import ctc_loss, wav2vec2_loss
from w2v.train.masking import compute_mask_indices, spec_augment
from w2v.train.negatives import sample_negative_indices
from w2v.train.schedule import gumbel_temperature, learning_rate

TASKS = ("pretrain", "ctc", "classify")
SETTINGS_FILE = "train.json"
METRICS_FILE = "metrics.jsonl"
LATEST_FILE = "latest.json"
TRAINER_FILE = "trainer.pt"
WORD_DELIMITER = "|"
PAD = "<pad>"
UNK = "<unk>"
_STEP_SEED = 1_000_003  # step s of a run with seed k draws from seed k * _STEP_SEED + s


@dataclass(frozen=True)
class TrainSettings:
    """What a run does; saved as ``train.json`` and compared on resume.

    ``mask_prob`` None: 0.65 for pretraining, 0.05 (SpecAugment) for CTC, 0 for
    classification. ``amp``: bf16 autocast where the device supports it (a CUDA GPU with
    bf16). Dropouts and ``layerdrop`` act through :class:`~w2v.config.Regularization`.
    """

    task: str
    steps: int = 1000
    batch_size: int = 8
    crop_seconds: float = 15.0
    lr: float = 5e-5
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    mask_prob: float | None = None
    mask_length: int = 10
    min_masks: int = 2
    num_negatives: int = 100
    style: str = "hf"
    diversity_weight: float = 0.1
    gumbel_temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995)
    feature_penalty_weight: float = 10.0
    feature_grad_mult: float = 1.0
    freeze_feature_encoder: bool = False
    gradient_checkpointing: bool = False
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    feat_proj_dropout: float = 0.0
    layerdrop: float = 0.0
    checkpoint_every: int = 500
    log_every: int = 1
    amp: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UsageError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "mask_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"{name} must be a positive integer, got {v!r}")
        if not (self.crop_seconds > 0 and self.lr > 0 and self.max_grad_norm > 0):
            raise UsageError("crop_seconds, lr and max_grad_norm must be positive")
        if self.warmup_steps < 0 or self.num_negatives < 1 or self.min_masks < 0:
            raise UsageError("warmup_steps and min_masks must be >= 0, num_negatives >= 1")
        if self.mask_prob is not None and not 0 <= self.mask_prob <= 1:
            raise UsageError(f"mask_prob must be in [0, 1], got {self.mask_prob!r}")
        self.regularization()  # checks the dropouts

    def regularization(self) -> Regularization:
        try:
            return Regularization(
                feat_proj_dropout=self.feat_proj_dropout,
                hidden_dropout=self.hidden_dropout,
                attention_dropout=self.attention_dropout,
                activation_dropout=self.activation_dropout,
                layerdrop=self.layerdrop,
            )
        except ValueError as e:
            raise UsageError(str(e)) from None

    @property
    def masking(self) -> float:
        if self.mask_prob is not None:
            return self.mask_prob
        return {"pretrain": 0.65, "ctc": 0.05, "classify": 0.0}[self.task]

    def to_dict(self) -> dict[str, Any]:
        """As JSON data (tuples become lists), the form ``train.json`` holds."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# settings that may change between a run and its resumption
_RESUMABLE_CHANGES = ("checkpoint_every", "log_every")


@dataclass(frozen=True)
class Example:
    path: Path
    target: str | None = None  # transcript (ctc) or label (classify)


def read_examples(
    inputs: Sequence[str | os.PathLike], targets: str | os.PathLike | None
) -> list[Example]:
    """The audio files ``inputs`` name (files, directories, ``.txt``/``.lst`` lists, as for
    ``w2v embed``) with their targets from ``targets``: a UTF-8 file of ``PATH<TAB>TARGET``
    lines, ``PATH`` relative to that file (or absolute), or as a key under an input
    directory (``sub/a.flac``). Every input needs a target when ``targets`` is given."""
    items = collect_inputs(list(inputs))
    if targets is None:
        return [Example(i.path) for i in items]
    tfile = Path(targets)
    try:
        lines = tfile.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{shown(str(tfile))}: cannot read targets ({e})") from None
    table: dict[str, str] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        name, tab, target = line.partition("\t")
        if not tab:
            raise UsageError(f"{shown(str(tfile))}:{n}: expected PATH<TAB>TARGET")
        table[name] = target.strip()
        table[os.path.abspath(tfile.parent / name)] = target.strip()
    out = []
    for item in items:
        target = table.get(item.key, table.get(str(item.path)))
        if target is None:
            raise UsageError(f"{shown(str(item.path))}: no target in {shown(str(tfile))}")
        out.append(Example(item.path, target))
    return out


def train(
    settings: TrainSettings,
    model: str | os.PathLike | Model,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    targets: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` (a checkpoint path, a named config for random init, or a model) on
    ``inputs`` and write everything into ``out`` (module docstring); resume when ``out``
    holds a checkpoint of the same run. ``targets``: transcripts (``ctc``) or labels
    (``classify``). ``on_step(metrics)`` is called after every step. Returns the last
    step's metrics.
    """
    out = Path(out)
    if settings.task != "pretrain" and targets is None:
        raise UsageError(f"w2v train {settings.task} needs a targets file (--targets)")
    examples = read_examples(inputs, targets if settings.task != "pretrain" else None)
    device = torch.device(device)
    torch.manual_seed(settings.seed)  # a random init (config name, new parts) is the seed's
    start, model = _resume_or_start(settings, model, out, device)
    model = _prepare(settings, model, examples).to(device)
    optimizer = _optimizer(settings, model)
    if start:
        state = torch.load(out / _step_dir(start) / TRAINER_FILE, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / SETTINGS_FILE, lambda p: p.write_text(_json(settings.to_dict())))
    _truncate_metrics(out / METRICS_FILE, start)
    model.train()
    metrics: dict[str, float] = {}
    for step in range(start, settings.steps):
        began = time.perf_counter()
        lr = learning_rate(step, settings.lr, settings.warmup_steps, settings.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        metrics = _step(settings, model, optimizer, examples, step, device)
        metrics.update(step=step + 1, lr=lr, seconds=time.perf_counter() - began)
        if (step + 1) % settings.log_every == 0 or step + 1 == settings.steps:
            with open(out / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
            _save(out, model, optimizer, step + 1)
        if on_step is not None:
            on_step(metrics)
    model.eval()
    return metrics


def _json(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2) + "\n"


def _step_dir(step: int) -> str:
    return f"step-{step:08d}"


def _resume_or_start(
    settings: TrainSettings, model: str | os.PathLike | Model, out: Path, device: torch.device
) -> tuple[int, Model]:
    latest = out / LATEST_FILE
    if not latest.is_file():
        if isinstance(model, Model):
            return 0, model
        name = os.fspath(model)
        if not os.path.exists(name) and "/" not in name:
            try:
                return 0, from_config(name)
            except ValueError as e:
                raise UsageError(str(e)) from None
        return 0, load(name)
    saved = json.loads((out / SETTINGS_FILE).read_text(encoding="utf-8"))
    now = settings.to_dict()
    differ = [k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if differ:
        changes = ", ".join(f"{k}: {saved.get(k)!r} → {now[k]!r}" for k in differ)
        raise UsageError(
            f"{shown(str(out))} holds a run with other settings ({changes}); give another "
            "directory, or the same settings to resume it"
        )
    step = int(json.loads(latest.read_text(encoding="utf-8"))["step"])
    return step, load(out / _step_dir(step))


def _prepare(settings: TrainSettings, model: Model, examples: list[Example]) -> Model:
    """Give the model what the task needs (pretraining parts, a CTC or classification head)
    and the run's training options."""
    if settings.task == "pretrain":
        pretraining = model.pretraining
        if pretraining is None or pretraining.pretraining_config.objective != "wav2vec2":
            model.add_pretraining(PretrainingConfig(objective="wav2vec2"))
    elif settings.task == "ctc":
        if model.lm_head is None:
            model = _with_ctc_head(model, _vocabulary(e.target for e in examples))
        if settings.masking > 0 and model.pretraining is None:
            model.add_pretraining(PretrainingConfig(objective="mask"))
    else:
        labels = sorted({e.target for e in examples})
        head = model.task_head
        if head is None or head.head_config.labels != tuple(labels):
            config = HeadConfig(
                kind="sequence_classification", num_labels=len(labels), labels=tuple(labels)
            )
            model.task_head = build_head(config, model.config)
    model.set_regularization(settings.regularization())
    model.feature_grad_mult = settings.feature_grad_mult
    model.gradient_checkpointing = settings.gradient_checkpointing
    if settings.freeze_feature_encoder:
        model.freeze_feature_encoder()
    return model


def _vocabulary(texts) -> list[str]:
    """A character vocabulary for CTC: ``<pad>`` (the blank) first, ``<unk>``, the word
    delimiter ``|`` for spaces, then the characters seen, sorted."""
    chars = sorted({c for t in texts for c in t if c != " "} - {WORD_DELIMITER})
    return [PAD, UNK, WORD_DELIMITER, *chars]


def _with_ctc_head(model: Model, vocab: list[str]) -> Model:
    """The same model with a fresh CTC head over ``vocab``."""
    config = dataclasses.replace(model.config, vocab_size=len(vocab))
    info = dataclasses.replace(model.info, vocab=tuple(vocab))
    pretraining = None if model.pretraining is None else model.pretraining.pretraining_config
    fresh = Model(config, info, unused=model.unused, pretraining=pretraining)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("lm_head.") for k in missing):
        raise UsageError("cannot add a CTC head to this model (it has another head)")
    return fresh


def _optimizer(settings: TrainSettings, model: Model) -> torch.optim.Optimizer:
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else plain).append(p)  # no decay on biases and norms
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.lr)


def _batch(
    settings: TrainSettings,
    model: Model,
    examples: list[Example],
    g: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, list[Example]]:
    """The step's batch: examples drawn with ``g``, each cropped at random to
    ``crop_seconds``, right-padded; (batch, samples), lengths (batch,)."""
    n = len(examples)
    picks = torch.randperm(n, generator=g)[: settings.batch_size].tolist()
    while len(picks) < settings.batch_size:  # fewer examples than the batch
        picks.append(int(torch.randint(n, (), generator=g)))
    crop = int(settings.crop_seconds * 16000)
    minimum = model.config.receptive_field
    waves = []
    for i in picks:
        wave, _ = audio.load(examples[i].path, normalize_input=model.normalize, min_samples=minimum)
        if len(wave) > crop:
            offset = int(torch.randint(len(wave) - crop + 1, (), generator=g))
            wave = wave[offset : offset + crop]
        waves.append(np.asarray(wave, dtype=np.float32))
    lengths = torch.tensor([len(w) for w in waves])
    x = torch.zeros(len(waves), int(lengths.max()))
    for row, w in zip(x, waves, strict=True):
        row[: len(w)] = torch.from_numpy(w)
    return x.to(device), lengths.to(device), [examples[i] for i in picks]


def _step(
    settings: TrainSettings,
    model: Model,
    optimizer: torch.optim.Optimizer,
    examples: list[Example],
    step: int,
    device: torch.device,
) -> dict[str, float]:
    seed = settings.seed * _STEP_SEED + step
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout, layer drop and Gumbel noise of this step
    x, lengths, batch = _batch(settings, model, examples, g, device)
    frames = [num_frames(int(n), model.config) for n in lengths]
    shape = (len(frames), max(frames))
    amp = settings.amp and device.type == "cuda" and torch.cuda.is_bf16_supported()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        if settings.task == "pretrain":
            parts = _pretrain_loss(settings, model, x, lengths, frames, shape, g, step)
        elif settings.task == "ctc":
            parts = _ctc_loss(settings, model, x, lengths, frames, shape, g, batch)
        else:
            parts = _classify_loss(model, x, lengths, batch)
    loss = parts["loss"]
    optimizer.zero_grad(set_to_none=True)
    metrics = {k: float(v.detach()) for k, v in parts.items() if v.numel() == 1}
    if not math.isfinite(float(loss.detach())):
        metrics["skipped"] = 1.0  # a NaN or inf loss: no update from this batch
        return metrics
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm))
    optimizer.step()
    return metrics


def _pretrain_loss(settings, model, x, lengths, frames, shape, g, step) -> dict[str, torch.Tensor]:
    mask = compute_mask_indices(
        shape, settings.masking, settings.mask_length, lengths=frames,
        min_masks=settings.min_masks, generator=g, style=settings.style,
    )  # fmt: skip
    negatives = sample_negative_indices(
        shape, settings.num_negatives, mask_time_indices=mask, generator=g
    )
    model.pretraining.quantizer.temperature = gumbel_temperature(step, *settings.gumbel_temperature)
    parts = wav2vec2_loss(
        model, x, lengths, mask_time_indices=mask.to(x.device),
        sampled_negative_indices=negatives.to(x.device), style=settings.style,
        diversity_weight=settings.diversity_weight,
        feature_penalty_weight=settings.feature_penalty_weight,
    )  # fmt: skip
    # the loss sums over masked frames; per masked frame, as both references optimise it
    count = parts["num_masked"].clamp_min(1)
    for key in ("loss", "contrastive_loss", "diversity_loss", "feature_penalty"):
        parts[key] = parts[key] / count
    return parts


def _ctc_loss(settings, model, x, lengths, frames, shape, g, batch) -> dict[str, torch.Tensor]:
    vocab = model.vocab or []
    index = {s: i for i, s in enumerate(vocab)}
    rows = []
    for e in batch:
        text = e.target.replace(" ", WORD_DELIMITER)
        if any(c not in index for c in text) and UNK not in index:
            raise UsageError(f"{shown(str(e.path))}: transcript has symbols the vocabulary lacks")
        rows.append([index.get(c, index.get(UNK, 0)) for c in text])
    width = max(1, max(len(r) for r in rows))
    labels = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=x.device)
    time_mask, _ = spec_augment(
        frames, model.config.hidden_size, mask_time_prob=settings.masking,
        mask_time_length=settings.mask_length, generator=g,
    )  # fmt: skip
    if time_mask is not None:
        time_mask = time_mask.to(x.device)
    loss = ctc_loss(
        model, x, lengths, labels, [len(r) for r in rows], zero_infinity=True, time_mask=time_mask
    )
    return {"loss": loss, "ctc_loss": loss.detach()}


def _classify_loss(model, x, lengths, batch) -> dict[str, torch.Tensor]:
    labels = model.task_head.head_config.labels
    target = torch.tensor([labels.index(e.target) for e in batch], device=x.device)
    logits = model.head(x, lengths)["logits"]
    loss = F.cross_entropy(logits.float(), target)
    accuracy = (logits.argmax(-1) == target).float().mean()
    return {"loss": loss, "accuracy": accuracy}


def _save(out: Path, model: Model, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Checkpoint ``step``: the model as a w2v directory plus the optimizer, then
    ``latest.json`` (written last, so a run killed meanwhile resumes from the previous one)."""
    d = out / _step_dir(step)
    save(from_model(model), d)
    atomic_write(
        d / TRAINER_FILE,
        lambda p: torch.save({"optimizer": optimizer.state_dict(), "step": step}, p),
    )
    atomic_write(out / LATEST_FILE, lambda p: p.write_text(_json({"step": step, "dir": d.name})))


def _truncate_metrics(file: Path, step: int) -> None:
    """Drop the metrics of steps after ``step`` (a resumed run computes them again)."""
    if not file.is_file():
        return
    kept = []
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a kill
    atomic_write(file, lambda p: p.write_text("".join(kept), encoding="utf-8"))
