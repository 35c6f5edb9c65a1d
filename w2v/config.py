"""Architecture configuration: a frozen dataclass plus the named configs (package data
``w2v.configs``, the repository's ``configs/`` folder)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

from w2v.errors import quoted

SAMPLE_RATE = 16000
"""Samples per second of every model's input (the checkpoints were trained on 16 kHz audio)."""

MAX_LAYERS = 1000
"""Most transformer layers a config may have (the largest public model has 48)."""

MAX_CONV_LAYERS = 64
"""Most conv feature-encoder layers, and most positional-conv blocks (public models: 7 and 5)."""

MAX_SIZE = 1 << 20
"""Largest width, kernel, stride, head or group count, bucket count or vocabulary a config may
name. A sanity bound that refuses absurd configs at once; converters also check every size
against the checkpoint's own weights before building anything."""

CONV_NORMS = ("group", "layer")
POS_CONVS = ("weight_norm", "batch_norm", "stack")


@dataclass(frozen=True)
class Config:
    """Architecture of one wav2vec 2.0 family encoder.

    Only fields that change the computation live here; checkpoint metadata
    (input normalisation, CTC vocabulary, provenance) travels beside it.
    Families differ by flags read at a single point each:

    * ``conv_norm``: "group" puts GroupNorm(C, C) on conv layer 0 only
      (fairseq "default"); "layer" puts a LayerNorm over channels on every layer.
    * ``layer_norm_first``: pre-LN transformer layers with the encoder LayerNorm
      after the last layer (HF ``do_stable_layer_norm``); otherwise post-LN with
      the encoder LayerNorm before layer 1.
    * ``pos_conv``: "weight_norm" (wav2vec2, HuBERT, WavLM), "batch_norm"
      (HuBERT ``conv_pos_batch_norm``), "stack" (data2vec-audio:
      ``pos_conv_depth`` conv → LayerNorm(no affine) → GELU blocks).
    * ``rel_pos_buckets`` > 0: WavLM's gated relative position bias.
    * ``vocab_size``: a CTC head of that many outputs.
    """

    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    conv_norm: str = "group"
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-5
    layer_norm_first: bool = False
    feat_proj_layer_norm: bool = True
    pos_conv: str = "weight_norm"
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    pos_conv_depth: int = 1
    rel_pos_buckets: int = 0
    rel_pos_max_distance: int = 800
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise ValueError(f"{name} must be a list of integers, got {quoted(value)}")
            if not 1 <= len(value) <= MAX_CONV_LAYERS:
                raise ValueError(
                    f"{name} must list 1 to {MAX_CONV_LAYERS} conv layers, got {len(value)}"
                )
            object.__setattr__(self, name, tuple(_size(f"{name} entry", v) for v in value))
        if not (len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride)):
            raise ValueError(
                "conv_dim, conv_kernel and conv_stride must have the same length, got "
                f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}"
            )
        for name in ("conv_bias", "layer_norm_first", "feat_proj_layer_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {quoted(getattr(self, name))}")
        if self.conv_norm not in CONV_NORMS:
            raise ValueError(f"conv_norm must be one of {CONV_NORMS}, got {quoted(self.conv_norm)}")
        if self.pos_conv not in POS_CONVS:
            raise ValueError(f"pos_conv must be one of {POS_CONVS}, got {quoted(self.pos_conv)}")
        for name in (
            "hidden_size", "num_heads", "intermediate_size", "pos_conv_kernel",
            "pos_conv_groups", "rel_pos_max_distance",
        ):  # fmt: skip
            _size(name, getattr(self, name))
        _size("num_layers", self.num_layers, limit=MAX_LAYERS)
        _size("pos_conv_depth", self.pos_conv_depth, limit=MAX_CONV_LAYERS)
        _size("rel_pos_buckets", self.rel_pos_buckets, minimum=0)
        if self.vocab_size is not None:
            _size("vocab_size", self.vocab_size)
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
            raise ValueError(f"layer_norm_eps must be a finite number >= 0, got {quoted(eps)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.hidden_size % self.pos_conv_groups:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by pos_conv_groups "
                f"{self.pos_conv_groups}"
            )

    # Derived values -------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def hop_length(self) -> int:
        """Samples between consecutive frames (320 = 20 ms at 16 kHz)."""
        hop = 1
        for s in self.conv_stride:
            hop *= s
        return hop

    @property
    def receptive_field(self) -> int:
        """Samples seen by one frame (400 = 25 ms at 16 kHz); also the shortest valid input."""
        field = 1
        for k, s in zip(reversed(self.conv_kernel), reversed(self.conv_stride), strict=True):
            field = (field - 1) * s + k
        return field

    # Serialisation ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return plain_fields(self, ("conv_dim", "conv_kernel", "conv_stride"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return from_fields(cls, d, "config")

    @classmethod
    def from_name(cls, name: str) -> Config:
        """The named architecture ``configs/<name>.json`` (exact match)."""
        return cls.from_dict(named_config_info(name)["config"])


def _size(name: str, value: Any, *, minimum: int = 1, limit: int = MAX_SIZE) -> int:
    """``value`` when it is an integer in ``[minimum, limit]``; ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= limit:
        raise ValueError(
            f"{name} must be an integer from {minimum} to {limit}, got {quoted(value)}"
        )
    return value


def _config_files() -> dict[str, Any]:
    """Name → resource of every named config shipped with w2v."""
    root = resources.files("w2v.configs")
    return {
        f.name.removesuffix(".json"): f
        for f in root.iterdir()
        if f.name.endswith(".json") and f.is_file()
    }


def plain_fields(record: Any, sequences: tuple[str, ...]) -> dict[str, Any]:
    """A frozen dataclass record as JSON-ready data: its fields, the tuple-valued ones named
    in ``sequences`` as lists (None stays None)."""
    d = dataclasses.asdict(record)
    for name in sequences:
        d[name] = None if d[name] is None else list(d[name])
    return d


def from_fields(cls: type, d: Any, what: str) -> Any:
    """``cls(**d)`` for a dict read from a file; ValueError naming ``what`` when ``d`` is not
    an object or has fields ``cls`` does not know (the record validates the values)."""
    if not isinstance(d, dict):
        raise ValueError(f"a {what} must be a JSON object, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} fields: {quoted(', '.join(unknown))}")
    return cls(**d)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says beyond the architecture; the model carries it as ``model.info``.

    * ``family``: "wav2vec2", "hubert", "data2vec-audio" or "wavlm".
    * ``normalize``: whether inputs should be normalised per utterance to zero mean
      and unit variance before the model (HF ``do_normalize``, fairseq
      ``task.normalize``); the model itself does not do it.
    * ``vocab``: the CTC head's output symbols in order, when known.
    * ``source``: where the weights came from (a path, a hub id, a description).
    """

    family: str = "wav2vec2"
    normalize: bool = False
    vocab: tuple[str, ...] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "normalize", bool(self.normalize))
        if self.vocab is not None:
            object.__setattr__(self, "vocab", tuple(str(s) for s in self.vocab))


@dataclass(frozen=True)
class Regularization:
    """Train-mode regularisation of a model; nothing here acts in eval mode.

    Kept out of :class:`Config`, whose equality means architecture identity: two
    checkpoints of one architecture trained with other dropouts are the same model.
    Placement follows transformers' Wav2Vec2 and torchaudio (they agree):

    * ``feat_proj_dropout``: after the feature projection;
    * ``hidden_dropout``: after the transformer input (positional-conv sum and, post-LN,
      the encoder LayerNorm), after each attention block and after each FFN's output;
    * ``attention_dropout``: on the attention weights (SDPA's ``dropout_p``);
    * ``activation_dropout``: after the FFN activation;
    * ``layerdrop``: each transformer layer is skipped with this probability, one uniform
      draw per layer per forward pass.

    Every field is a probability in [0, 1); the default, 0, switches it off.
    """

    feat_proj_dropout: float = 0.0
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    layerdrop: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            p = getattr(self, f.name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
                raise ValueError(f"{f.name} must be a probability in [0, 1), got {quoted(p)}")
            object.__setattr__(self, f.name, float(p))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Regularization:
        return from_fields(cls, d, "regularization")


def config_names() -> list[str]:
    """Names of the architectures shipped in ``configs/``."""
    return sorted(_config_files())


def named_config_info(name: str) -> dict[str, Any]:
    """The whole JSON of a named config: ``config``, ``family`` and ``checkpoints``."""
    files = _config_files()
    if name not in files:
        raise ValueError(f"unknown config {name!r}; valid names: {', '.join(sorted(files))}")
    return json.loads(files[name].read_text(encoding="utf-8"))


def num_frames(num_samples: int, config: Config | None = None) -> int:
    """Frames the conv feature encoder produces for ``num_samples`` input samples.

    Applies ``floor((L - k) / s) + 1`` per conv layer; 0 when the input is
    shorter than the receptive field (400 samples for every public model).
    """
    config = config or Config()
    length = int(num_samples)
    for k, s in zip(config.conv_kernel, config.conv_stride, strict=True):
        if length < k:
            return 0
        length = (length - k) // s + 1
    return length
