"""What a fine-tuned checkpoint's head is: a frozen :class:`HeadConfig`, and reading one from a
transformers ``config.json`` dict (:func:`head_config_from_hf`).

The backbone's sizes (``hidden_size``, ``num_layers``) are not repeated here: a head is
built from its HeadConfig and the backbone's :class:`~w2v.config.Config` together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from w2v.config import MAX_SIZE, from_fields, plain_fields
from w2v.errors import quoted

# kind → the transformers class-name suffix it comes from. "speech_classification" is the
# community notebook class (``Wav2Vec2ForSpeechClassification``), not part of transformers.
KINDS = {
    "sequence_classification": "ForSequenceClassification",
    "frame_classification": "ForAudioFrameClassification",
    "xvector": "ForXVector",
    "speech_classification": "ForSpeechClassification",
}
POOLING_MODES = ("mean", "sum", "max")

# transformers' defaults for the head fields a config.json may omit (the notebook class reads
# ``pooling_mode`` and pools with a mean when it is absent)
_HF_DEFAULTS: dict[str, Any] = {
    "num_labels": 2,
    "classifier_proj_size": 256,
    "use_weighted_layer_sum": False,
    "tdnn_dim": (512, 512, 512, 512, 1500),
    "tdnn_kernel": (5, 3, 3, 1, 1),
    "tdnn_dilation": (1, 2, 3, 1, 1),
    "xvector_output_dim": 512,
    "pooling_mode": "mean",
}


@dataclass(frozen=True)
class HeadConfig:
    """Architecture of one task head on top of a backbone.

    * ``kind``: one of :data:`KINDS`.
    * ``num_labels``: classes (output width of the classifiers; for ``xvector`` the
      speakers of the AM-softmax ``objective``, which the logits do not use).
    * ``labels``: class names in id order (``id2label``), or None when the checkpoint
      names none.
    * ``classifier_proj_size``: width of ``projector`` (sequence classification).
    * ``use_weighted_layer_sum``: the head reads a softmax-weighted sum of all hidden states
      0..N (learned ``layer_weights``) instead of the model output. Not for
      ``speech_classification``.
    * ``tdnn_dim`` / ``tdnn_kernel`` / ``tdnn_dilation``: the x-vector TDNN layers.
    * ``xvector_output_dim``: width of the x-vector embedding.
    * ``pooling_mode``: "mean", "sum" or "max" over valid frames (speech classification).

    Fields that the kind does not read keep their defaults.
    """

    kind: str
    num_labels: int = 2
    labels: tuple[str, ...] | None = None
    classifier_proj_size: int = 256
    use_weighted_layer_sum: bool = False
    tdnn_dim: tuple[int, ...] = _HF_DEFAULTS["tdnn_dim"]
    tdnn_kernel: tuple[int, ...] = _HF_DEFAULTS["tdnn_kernel"]
    tdnn_dilation: tuple[int, ...] = _HF_DEFAULTS["tdnn_dilation"]
    xvector_output_dim: int = 512
    pooling_mode: str = "mean"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"head kind must be one of {tuple(KINDS)}, got {quoted(self.kind)}")
        for name in ("num_labels", "classifier_proj_size", "xvector_output_dim"):
            _count(name, getattr(self, name))
        if not isinstance(self.use_weighted_layer_sum, bool):
            raise ValueError(
                f"use_weighted_layer_sum must be true or false, got "
                f"{quoted(self.use_weighted_layer_sum)}"
            )
        if self.use_weighted_layer_sum and self.kind == "speech_classification":
            raise ValueError("speech_classification reads the model output only (no layer sum)")
        for name in ("tdnn_dim", "tdnn_kernel", "tdnn_dilation"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not value:
                raise ValueError(
                    f"{name} must be a non-empty list of integers, got {quoted(value)}"
                )
            object.__setattr__(self, name, tuple(_count(f"{name} entry", v) for v in value))
        if not len(self.tdnn_dim) == len(self.tdnn_kernel) == len(self.tdnn_dilation):
            raise ValueError(
                "tdnn_dim, tdnn_kernel and tdnn_dilation must have the same length, got "
                f"{len(self.tdnn_dim)}, {len(self.tdnn_kernel)}, {len(self.tdnn_dilation)}"
            )
        if self.pooling_mode not in POOLING_MODES:
            raise ValueError(
                f"pooling_mode must be one of {POOLING_MODES}, got {quoted(self.pooling_mode)}"
            )
        if self.labels is not None:
            labels = tuple(self.labels)
            if len(labels) != self.num_labels or not all(isinstance(s, str) for s in labels):
                raise ValueError(
                    f"labels must be {self.num_labels} strings (one per label), got "
                    f"{quoted(self.labels)}"
                )
            object.__setattr__(self, "labels", labels)

    @property
    def id2label(self) -> dict[int, str] | None:
        """Label id → name, when the checkpoint names its labels."""
        return None if self.labels is None else dict(enumerate(self.labels))

    # Serialisation ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return plain_fields(self, ("labels", "tdnn_dim", "tdnn_kernel", "tdnn_dilation"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadConfig:
        return from_fields(cls, d, "head config")


def _count(name: str, value: Any) -> int:
    """``value`` when it is an integer in ``[1, MAX_SIZE]``; ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise ValueError(f"{name} must be an integer from 1 to {MAX_SIZE}, got {quoted(value)}")
    return value


def head_kind(architecture: str) -> str | None:
    """The head kind of a transformers class name (``"WavLMForXVector"`` → ``"xvector"``), or
    None for classes without a head w2v runs (``*Model``, ``*ForCTC``, ``*ForPreTraining``,
    anything unknown)."""
    for kind, suffix in KINDS.items():
        if architecture.endswith(suffix):
            return kind
    return None


def head_config_from_hf(cfg: dict[str, Any], architecture: str | None = None) -> HeadConfig | None:
    """A transformers ``config.json`` dict → the HeadConfig of its head, or None when the
    architecture has no head that w2v runs (see :func:`head_kind`).

    ``architecture``: the class name; default the config's ``architectures[0]``. Labels come
    from ``id2label`` (keys ``"0"``..``"n-1"``), which also fixes ``num_labels`` as it does
    in transformers. Raises ValueError for head settings that are malformed.
    """
    if architecture is None:
        names = cfg.get("architectures")
        if not isinstance(names, list) or not names or not isinstance(names[0], str):
            return None
        architecture = names[0]
    kind = head_kind(architecture)
    if kind is None:
        return None

    def get(name: str) -> Any:
        value = cfg.get(name)
        return _HF_DEFAULTS[name] if value is None else value

    labels = _labels(cfg.get("id2label"))
    return HeadConfig(
        kind=kind,
        num_labels=get("num_labels") if labels is None else len(labels),
        labels=labels,
        classifier_proj_size=get("classifier_proj_size"),
        use_weighted_layer_sum=get("use_weighted_layer_sum"),
        tdnn_dim=get("tdnn_dim"),
        tdnn_kernel=get("tdnn_kernel"),
        tdnn_dilation=get("tdnn_dilation"),
        xvector_output_dim=get("xvector_output_dim"),
        pooling_mode=get("pooling_mode"),
    )


def _labels(id2label: Any) -> tuple[str, ...] | None:
    """``{"0": "angry", "1": "happy"}`` → ``("angry", "happy")``; None when absent."""
    if id2label is None:
        return None
    if not isinstance(id2label, dict) or not id2label:
        raise ValueError(f"id2label must be a non-empty object, got {quoted(id2label)}")
    try:
        ids = {int(k): v for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ValueError(f"id2label keys must be integers, got {quoted(list(id2label))}") from None
    if sorted(ids) != list(range(len(ids))):
        raise ValueError(f"id2label keys must be 0..{len(ids) - 1}, got {quoted(sorted(ids))}")
    return tuple(str(ids[i]) for i in range(len(ids)))
