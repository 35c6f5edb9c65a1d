"""torchaudio's wav2vec2-family models (``torchaudio.models.Wav2Vec2Model``) ↔ w2v, without
torchaudio.

Pure functions and tables:

* :func:`config_from_torchaudio`: the keyword arguments of torchaudio's ``wav2vec2_model`` /
  ``wavlm_model`` → :class:`Config` (the dropouts are not architecture; see
  :func:`regularization_args`);
* :func:`infer_torchaudio_params`: those arguments read back from a state dict's shapes and
  key names (a torchaudio ``.pth`` file holds no config), or from a preset name (``arch``);
* :func:`convert_torchaudio_state_dict` / :func:`to_torchaudio_state_dict`: the weights,
  both ways, through the key tables below;
* :data:`BUNDLES`: what torchaudio's ``pipelines`` bundles say about their files
  (architecture, labels, input normalisation), by bundle name.

torchaudio names the weights as its module tree does: the conv stack under
``feature_extractor``, the projection under ``encoder.feature_projection``, the transformer
under ``encoder.transformer``, the CTC head as ``aux``. Its positional conv is weight-normed
through ``parametrizations`` (newer files) or ``weight_g``/``weight_v`` (older ones), and
WavLM layers keep q/k/v fused in one ``nn.MultiheadAttention`` (``attention.attention``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from w2v.convert.keys import Table, convert

from w2v.config import Config
from w2v.errors import CheckpointError, quoted, shown

MODEL_TYPES = ("Wav2Vec2", "WavLM")
"""torchaudio's two factories: ``wav2vec2_model`` (wav2vec 2.0, HuBERT, XLS-R) and
``wavlm_model``; pipelines call them model types."""

DEFAULT_CONV_LAYERS = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
"""torchaudio's ``extractor_conv_layer_config=None``: (channels, kernel, stride) per layer."""

EXTRACTOR_MODES = {"group_norm": "group", "layer_norm": "layer"}

LAYER_NORM_EPS = 1e-5
"""torchaudio builds every LayerNorm with PyTorch's default eps."""

WAVLM_MAX_DISTANCE = 800
"""``encoder_max_distance`` of every WavLM torchaudio builds; not stored in the weights."""

HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16, 1920: 16}
"""Attention heads of torchaudio's wav2vec2/HuBERT models by width: the weights do not
store it (q/k/v are D × D), so a ``.pth`` of another width needs ``arch``."""

# ----------------------------------------------------------------------------- keys
# torchaudio key template → w2v key template; the first spelling of a w2v key is the one
# to_torchaudio_state_dict writes (what torchaudio's own state_dict() gives today).
COMMON_KEYS = {
    "feature_extractor.conv_layers.{}.conv.weight": "feature_extractor.conv_layers.{}.conv.weight",
    "feature_extractor.conv_layers.{}.conv.bias": "feature_extractor.conv_layers.{}.conv.bias",
    "feature_extractor.conv_layers.{}.layer_norm.weight": "feature_extractor.conv_layers.{}.layer_norm.weight",
    "feature_extractor.conv_layers.{}.layer_norm.bias": "feature_extractor.conv_layers.{}.layer_norm.bias",
    "encoder.feature_projection.layer_norm.weight": "feature_projection.layer_norm.weight",
    "encoder.feature_projection.layer_norm.bias": "feature_projection.layer_norm.bias",
    "encoder.feature_projection.projection.weight": "feature_projection.projection.weight",
    "encoder.feature_projection.projection.bias": "feature_projection.projection.bias",
    # weight norm: parametrizations (torch >= 2.1 weight_norm) and the older weight_g/weight_v
    "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv_embed.conv.weight_g",
    "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv_embed.conv.weight_v",
    "encoder.transformer.pos_conv_embed.conv.weight_g": "encoder.pos_conv_embed.conv.weight_g",
    "encoder.transformer.pos_conv_embed.conv.weight_v": "encoder.pos_conv_embed.conv.weight_v",
    "encoder.transformer.pos_conv_embed.conv.bias": "encoder.pos_conv_embed.conv.bias",
    "encoder.transformer.layer_norm.weight": "encoder.layer_norm.weight",
    "encoder.transformer.layer_norm.bias": "encoder.layer_norm.bias",
    "encoder.transformer.layers.{}.layer_norm.weight": "encoder.layers.{}.layer_norm.weight",
    "encoder.transformer.layers.{}.layer_norm.bias": "encoder.layers.{}.layer_norm.bias",
    "encoder.transformer.layers.{}.feed_forward.intermediate_dense.weight": "encoder.layers.{}.feed_forward.intermediate_dense.weight",
    "encoder.transformer.layers.{}.feed_forward.intermediate_dense.bias": "encoder.layers.{}.feed_forward.intermediate_dense.bias",
    "encoder.transformer.layers.{}.feed_forward.output_dense.weight": "encoder.layers.{}.feed_forward.output_dense.weight",
    "encoder.transformer.layers.{}.feed_forward.output_dense.bias": "encoder.layers.{}.feed_forward.output_dense.bias",
    "encoder.transformer.layers.{}.final_layer_norm.weight": "encoder.layers.{}.final_layer_norm.weight",
    "encoder.transformer.layers.{}.final_layer_norm.bias": "encoder.layers.{}.final_layer_norm.bias",
    "aux.weight": "lm_head.weight",
    "aux.bias": "lm_head.bias",
}
# wav2vec2 / HuBERT attention: separate projections, as in w2v
ATTENTION_KEYS = {
    f"encoder.transformer.layers.{{}}.attention.{p}_proj.{w}": f"encoder.layers.{{}}.attention.{p}_proj.{w}"
    for p in ("q", "k", "v", "out")
    for w in ("weight", "bias")
}
# WavLM: nn.MultiheadAttention inside (attention.attention), the gate, and layer 0's
# bucket embedding, which w2v keeps on the encoder. The fused in_proj is split by FUSED.
WAVLM_KEYS = {
    **{
        f"encoder.transformer.layers.{{}}.attention.attention.{p}_proj.{w}": f"encoder.layers.{{}}.attention.{p}_proj.{w}"
        for p in ("q", "k", "v")
        for w in ("weight", "bias")
    },
    "encoder.transformer.layers.{}.attention.attention.out_proj.weight": "encoder.layers.{}.attention.out_proj.weight",
    "encoder.transformer.layers.{}.attention.attention.out_proj.bias": "encoder.layers.{}.attention.out_proj.bias",
    "encoder.transformer.layers.{}.attention.gru_rel_pos_const": "encoder.layers.{}.attention.gru_rel_pos_const",
    "encoder.transformer.layers.{}.attention.gru_rel_pos_linear.weight": "encoder.layers.{}.attention.gru_rel_pos_linear.weight",
    "encoder.transformer.layers.{}.attention.gru_rel_pos_linear.bias": "encoder.layers.{}.attention.gru_rel_pos_linear.bias",
    "encoder.transformer.layers.0.attention.rel_attn_embed.weight": "encoder.rel_attn_embed.weight",
}
FUSED_PREFIX = "encoder.transformer.layers.{}.attention.attention."
FUSED = {"in_proj_weight": "weight", "in_proj_bias": "bias"}
"""WavLM's fused projection (3D, ...) = q, k, v stacked: ``in_proj_weight`` → the three
``{q,k,v}_proj.weight`` of the same layer (WAVLM_KEYS renames those)."""

HINTS = {
    "wav2vec2.*": "a HuBERT pretraining model (hubert_pretrain_*): save its .wav2vec2 "
    "submodule's state_dict() and load that",
}

WAV2VEC2_TABLE = Table({**COMMON_KEYS, **ATTENTION_KEYS}, hints=HINTS)
WAVLM_TABLE = Table({**COMMON_KEYS, **WAVLM_KEYS}, hints=HINTS)

_FUSED_KEY = re.compile(
    r"encoder\.transformer\.layers\.([0-9]+)\.attention\.attention\.(in_proj_weight|in_proj_bias)"
)


def table_for(config: Config) -> Table:
    return WAVLM_TABLE if config.rel_pos_buckets else WAV2VEC2_TABLE


def split_fused(state: Mapping[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """``state`` with each WavLM ``in_proj_weight``/``in_proj_bias`` (3D, ...) replaced by its
    three ``{q,k,v}_proj`` parts (views, in the same layer's ``attention.attention.``)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        m = _FUSED_KEY.fullmatch(key) if isinstance(key, str) else None
        if m is None:
            out[key] = value
            continue
        if not isinstance(value, torch.Tensor) or value.dim() < 1 or value.shape[0] % 3:
            raise CheckpointError(
                f"{source}: {shown(key)} must be a tensor whose first size is 3 × the width, "
                f"got {_shape_of(value)}"
            )
        base = FUSED_PREFIX.format(m.group(1))
        for part, piece in zip(("q", "k", "v"), value.chunk(3), strict=True):
            name = f"{base}{part}_proj.{FUSED[m.group(2)]}"
            if name in state:
                raise CheckpointError(f"{source}: {shown(key)} and {shown(name)} both give it")
            out[name] = piece
    return out


def convert_torchaudio_state_dict(
    state: Mapping[str, Any], config: Config, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """A torchaudio ``Wav2Vec2Model`` state dict → w2v's (keys and shapes checked against
    the model ``config`` describes; :class:`CheckpointError` naming the key otherwise)."""
    out, _ = convert(split_fused(state, source), table_for(config), config, source)
    return out


def rename_to_w2v(key: str, config: Config) -> str | None:
    """The w2v key of one torchaudio key (None when there is none); fused keys excepted."""
    return table_for(config).target(key)


_SPLIT_KEY = re.compile(
    r"encoder\.transformer\.layers\.([0-9]+)\.attention\.attention\.([qkv])_proj\.(weight|bias)"
)


def torchaudio_key(key: str, config: Config) -> tuple[str, str | None] | None:
    """The torchaudio key a w2v key is stored under, and for WavLM's q/k/v which part of
    the fused key it is ("q", "k", "v"; else None). None when torchaudio has no such key."""
    name = table_for(config).source_of(key)
    if name is None:
        return None
    m = _SPLIT_KEY.fullmatch(name)
    if m is None:
        return name, None
    return FUSED_PREFIX.format(m.group(1)) + f"in_proj_{m.group(3)}", m.group(2)


def to_torchaudio_state_dict(
    state: Mapping[str, torch.Tensor], config: Config
) -> dict[str, torch.Tensor]:
    """w2v state dict (keys of ``Model(config)``) → the one torchaudio's model of the same
    architecture gives: its key names, WavLM's q/k/v fused again. Keys without a
    torchaudio name (a w2v task head) are left out."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        named = torchaudio_key(key, config)
        if named is None:
            continue
        name, part = named
        if part is not None:  # WavLM: gather q, k, v and write them fused, at q's place
            fused.setdefault(name, {})[part] = value
            out.setdefault(name, value)
            continue
        out[name] = value
    for name, parts in fused.items():
        out[name] = torch.cat([parts[p] for p in "qkv"])
    return out


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class Preset:
    """One of torchaudio's model factories (``wav2vec2_base`` ...): its model type, the
    architecture it builds and its family (for w2v's checkpoint info)."""

    model_type: str
    family: str
    params: dict[str, Any]


def _arch(
    mode: str, bias: bool, dim: int, layers: int, heads: int, ffn: int, first: bool
) -> dict[str, Any]:
    return {
        "extractor_mode": mode,
        "extractor_conv_layer_config": None,
        "extractor_conv_bias": bias,
        "encoder_embed_dim": dim,
        "encoder_pos_conv_kernel": 128,
        "encoder_pos_conv_groups": 16,
        "encoder_num_layers": layers,
        "encoder_num_heads": heads,
        "encoder_ff_interm_features": ffn,
        "encoder_layer_norm_first": first,
    }


_WAVLM = {"encoder_num_buckets": 320, "encoder_max_distance": WAVLM_MAX_DISTANCE}
PRESETS: dict[str, Preset] = {
    "wav2vec2_base": Preset("Wav2Vec2", "wav2vec2", _arch("group_norm", False, 768, 12, 12, 3072, False)),
    "wav2vec2_large": Preset("Wav2Vec2", "wav2vec2", _arch("group_norm", False, 1024, 24, 16, 4096, False)),
    "wav2vec2_large_lv60k": Preset("Wav2Vec2", "wav2vec2", _arch("layer_norm", True, 1024, 24, 16, 4096, True)),
    "wav2vec2_xlsr_300m": Preset("Wav2Vec2", "wav2vec2", _arch("layer_norm", True, 1024, 24, 16, 4096, True)),
    "wav2vec2_xlsr_1b": Preset("Wav2Vec2", "wav2vec2", _arch("layer_norm", True, 1280, 48, 16, 5120, True)),
    "wav2vec2_xlsr_2b": Preset("Wav2Vec2", "wav2vec2", _arch("layer_norm", True, 1920, 48, 16, 7680, True)),
    "hubert_base": Preset("Wav2Vec2", "hubert", _arch("group_norm", False, 768, 12, 12, 3072, False)),
    "hubert_large": Preset("Wav2Vec2", "hubert", _arch("layer_norm", False, 1024, 24, 16, 4096, True)),
    "hubert_xlarge": Preset("Wav2Vec2", "hubert", _arch("layer_norm", False, 1280, 48, 16, 5120, True)),
    "wavlm_base": Preset("WavLM", "wavlm", {**_arch("group_norm", False, 768, 12, 12, 3072, False), **_WAVLM}),
    "wavlm_large": Preset("WavLM", "wavlm", {**_arch("layer_norm", False, 1024, 24, 16, 4096, True), **_WAVLM}),
}  # fmt: skip
"""torchaudio's presets by factory name: the architecture each builds (dropouts aside)."""

DROPOUT_ARGS = (
    "encoder_projection_dropout",
    "encoder_attention_dropout",
    "encoder_ff_interm_dropout",
    "encoder_dropout",
    "encoder_layer_drop",
)
"""torchaudio's train-mode arguments, in the order of w2v's Regularization fields they set:
``feat_proj_dropout``, ``attention_dropout``, ``activation_dropout``, ``hidden_dropout``,
``layerdrop``."""


def regularization_args(params: Mapping[str, Any]) -> dict[str, float]:
    """torchaudio's dropout arguments → the fields of :class:`w2v.config.Regularization`."""
    get = {name: float(params.get(name, 0.0)) for name in DROPOUT_ARGS}
    return {
        "feat_proj_dropout": get["encoder_projection_dropout"],
        "attention_dropout": get["encoder_attention_dropout"],
        "activation_dropout": get["encoder_ff_interm_dropout"],
        "hidden_dropout": get["encoder_dropout"],
        "layerdrop": get["encoder_layer_drop"],
    }


def config_from_torchaudio(params: Mapping[str, Any], model_type: str = "Wav2Vec2") -> Config:
    """Keyword arguments of torchaudio's ``wav2vec2_model`` (``model_type`` "Wav2Vec2") or
    ``wavlm_model`` ("WavLM") → :class:`Config`. Raises ValueError for values torchaudio
    would refuse or w2v cannot build."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model type must be one of {MODEL_TYPES}, got {quoted(model_type)}")
    mode = params["extractor_mode"]
    if mode not in EXTRACTOR_MODES:
        raise ValueError(f"extractor_mode must be 'group_norm' or 'layer_norm', got {quoted(mode)}")
    layers = params.get("extractor_conv_layer_config")
    layers = DEFAULT_CONV_LAYERS if layers is None else tuple(tuple(x) for x in layers)
    if any(len(x) != 3 for x in layers):
        raise ValueError("extractor_conv_layer_config must list (channels, kernel, stride) triples")
    aux = params.get("aux_num_out")
    fields: dict[str, Any] = dict(
        conv_dim=tuple(c for c, _, _ in layers),
        conv_kernel=tuple(k for _, k, _ in layers),
        conv_stride=tuple(s for _, _, s in layers),
        conv_bias=bool(params["extractor_conv_bias"]),
        conv_norm=EXTRACTOR_MODES[mode],
        hidden_size=params["encoder_embed_dim"],
        num_layers=params["encoder_num_layers"],
        num_heads=params["encoder_num_heads"],
        intermediate_size=params["encoder_ff_interm_features"],
        layer_norm_eps=LAYER_NORM_EPS,
        layer_norm_first=bool(params["encoder_layer_norm_first"]),
        pos_conv_kernel=params["encoder_pos_conv_kernel"],
        pos_conv_groups=params["encoder_pos_conv_groups"],
        vocab_size=aux,
    )
    if model_type == "WavLM":
        fields.update(
            rel_pos_buckets=params["encoder_num_buckets"],
            rel_pos_max_distance=params["encoder_max_distance"],
        )
    return Config(**fields)


def infer_torchaudio_params(
    state: Mapping[str, Any], arch: str | None = None, source: str = "checkpoint"
) -> tuple[str, str, dict[str, Any]]:
    """(model type, family, architecture arguments) of a torchaudio state dict.

    ``arch``: a preset name (:data:`PRESETS`) that fixes the architecture; only the CTC
    head's size is then read from the weights. Without it, everything is read from the
    shapes and key names, with three things the weights do not store: the conv strides
    (torchaudio's defaults, when the kernels are its defaults), the attention heads of a
    wav2vec2/HuBERT model (:data:`HEADS_BY_WIDTH`) and pre-LN versus post-LN, taken as
    torchaudio's models all have it: pre-LN exactly when the conv layers use LayerNorm.
    Raises :class:`CheckpointError` naming the key or what to give instead.
    """
    aux = state.get("aux.weight")
    aux_num_out = int(aux.shape[0]) if isinstance(aux, torch.Tensor) and aux.dim() == 2 else None
    if arch is not None:
        if arch not in PRESETS:
            raise CheckpointError(
                f"unknown architecture {quoted(arch)}; valid names: {', '.join(PRESETS)}"
            )
        preset = PRESETS[arch]
        return preset.model_type, preset.family, {**preset.params, "aux_num_out": aux_num_out}

    def tensor(key: str, dims: int) -> torch.Tensor:
        value = state.get(key)
        if not isinstance(value, torch.Tensor) or value.dim() != dims:
            raise CheckpointError(
                f"{source}: {shown(key)} must be a {dims}-d tensor to read the architecture "
                f"from, got {_shape_of(value)}"
            )
        return value

    wavlm = any(
        isinstance(k, str) and (_FUSED_KEY.fullmatch(k) or k.endswith(".rel_attn_embed.weight"))
        for k in state
    )
    conv = []
    while f"feature_extractor.conv_layers.{len(conv)}.conv.weight" in state:
        w = tensor(f"feature_extractor.conv_layers.{len(conv)}.conv.weight", 3)
        conv.append((int(w.shape[0]), int(w.shape[2])))
    if not conv:
        raise CheckpointError(f"{source}: no feature_extractor.conv_layers.0.conv.weight")
    if tuple(k for _, k in conv) != tuple(k for _, k, _ in DEFAULT_CONV_LAYERS):
        raise CheckpointError(
            f"{source}: conv kernels {[k for _, k in conv]} are not torchaudio's defaults, and "
            "the strides are not stored in the weights; build the model with "
            "w2v.compat.torchaudio.models.wav2vec2_model(...) and load_state_dict instead"
        )
    layer_conv_norm = len(conv) > 1 and "feature_extractor.conv_layers.1.layer_norm.weight" in state
    dim = int(tensor("encoder.feature_projection.projection.weight", 2).shape[0])
    pos = state.get("encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1")
    if pos is None:
        pos = state.get("encoder.transformer.pos_conv_embed.conv.weight_v")
    if not isinstance(pos, torch.Tensor) or pos.dim() != 3 or not pos.shape[1]:
        raise CheckpointError(
            f"{source}: no positional conv weight (encoder.transformer.pos_conv_embed.conv."
            f"parametrizations.weight.original1 or .weight_v)"
        )
    layers = 0
    while f"encoder.transformer.layers.{layers}.final_layer_norm.weight" in state:
        layers += 1
    ffn = tensor("encoder.transformer.layers.0.feed_forward.intermediate_dense.weight", 2)
    params: dict[str, Any] = {
        "extractor_mode": "layer_norm" if layer_conv_norm else "group_norm",
        "extractor_conv_layer_config": [
            (c, k, s) for (c, k), (_, _, s) in zip(conv, DEFAULT_CONV_LAYERS, strict=True)
        ],
        "extractor_conv_bias": "feature_extractor.conv_layers.0.conv.bias" in state,
        "encoder_embed_dim": dim,
        "encoder_pos_conv_kernel": int(pos.shape[2]),
        "encoder_pos_conv_groups": dim // int(pos.shape[1]),
        "encoder_num_layers": layers,
        "encoder_ff_interm_features": int(ffn.shape[0]),
        "encoder_layer_norm_first": layer_conv_norm,
        "aux_num_out": aux_num_out,
    }
    if wavlm:
        embed = tensor("encoder.transformer.layers.0.attention.rel_attn_embed.weight", 2)
        params.update(
            encoder_num_heads=int(embed.shape[1]),
            encoder_num_buckets=int(embed.shape[0]),
            encoder_max_distance=WAVLM_MAX_DISTANCE,
        )
        return "WavLM", "wavlm", params
    if dim not in HEADS_BY_WIDTH:
        raise CheckpointError(
            f"{source}: the number of attention heads of a {dim}-wide model is not stored in "
            f"the weights (known widths: {', '.join(map(str, HEADS_BY_WIDTH))}); give an "
            f"architecture name ({', '.join(PRESETS)}) or build the model with "
            "w2v.compat.torchaudio.models.wav2vec2_model(...)"
        )
    params["encoder_num_heads"] = HEADS_BY_WIDTH[dim]
    return "Wav2Vec2", "wav2vec2", params


def is_torchaudio_state(obj: Any) -> bool:
    """Whether ``obj`` looks like a torchaudio ``Wav2Vec2Model`` state dict: a dict of
    tensors with torchaudio's projection and transformer keys."""
    return (
        isinstance(obj, dict)
        and "encoder.feature_projection.projection.weight" in obj
        and any(isinstance(k, str) and k.startswith("encoder.transformer.") for k in obj)
    )


def _shape_of(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}"
    return "nothing" if value is None else f"a {type(value).__name__}"


# ----------------------------------------------------------------------------- bundles
@dataclass(frozen=True)
class BundleInfo:
    """What one of torchaudio's pipeline bundles says about its weights file.

    ``path``: the file name under torchaudio's download URL (or the whole URL);
    ``params``: the factory's keyword arguments (dropouts included); ``labels``: the CTC
    outputs after the blank (ASR and alignment bundles); ``remove_aux_axis``: rows of
    ``aux`` the file has but the model drops (fairseq dictionary specials);
    ``normalize``: torchaudio normalises the input waveform before the model.
    """

    kind: str  # "pretrained", "asr" or "fa"
    path: str
    model_type: str
    family: str
    params: dict[str, Any]
    normalize: bool
    labels: tuple[str, ...] | None = None
    remove_aux_axis: tuple[int, ...] = ()

    @property
    def file_name(self) -> str:
        """The name torchaudio's download cache gives the file."""
        return self.path.rsplit("/", 1)[-1]


EN = tuple("|ETAONIHSRDLUMWCFGYPBVK'XJQZ")
LABELS = {
    "en": EN,
    "de": tuple("|enirstadhulgcmobwfkzpvüäöjßyxq"),
    "vp_en": tuple("|etoiansrhldcumpfgwybvkxjqz"),
    "es": tuple("|eaosnrildctupmbqygvhófíájzñéxúkwü"),
    "fr": tuple("|esnitraouldcpmévqfgbhxàjèyêzôkçœûùîâwïëüæ"),
    "it": tuple("|eiaontrlscdupmgvhzfbqàèùéòìkyxwjóíï"),
    "mms": tuple("aienoutsrmkldghybpwcvjzf'qx"),
}
"""torchaudio's label sets (after the blank), by language."""


def _bundle(
    kind: str,
    path: str,
    arch: str,
    dropouts: tuple[float, float, float, float, float],
    normalize: bool,
    labels: str | None = None,
    remove: tuple[int, ...] = (1, 2, 3),
) -> BundleInfo:
    preset = PRESETS[arch]
    params = {**preset.params, **dict(zip(DROPOUT_ARGS, dropouts, strict=True))}
    params["extractor_conv_layer_config"] = [list(x) for x in DEFAULT_CONV_LAYERS]
    label_set = None if labels is None else LABELS[labels]
    params["aux_num_out"] = None if label_set is None else len(label_set) + 1  # blank first
    family = "hubert" if path.startswith("hubert") else preset.family
    return BundleInfo(
        kind, path, preset.model_type, family, params, normalize, label_set,
        remove if label_set is not None else (),
    )  # fmt: skip


# dropouts: projection, attention, ff_interm, encoder, layer_drop (DROPOUT_ARGS order)
_BASE = (0.1, 0.1, 0.0, 0.1, 0.05)
_LARGE = (0.1, 0.1, 0.0, 0.0, 0.2)
_LV60K = (0.1, 0.1, 0.0, 0.0, 0.0)
_ZERO = (0.0, 0.0, 0.0, 0.0, 0.0)
_HUBERT_ASR = (0.0, 0.0, 0.1, 0.0, 0.1)
_VOXPOPULI = (0.0, 0.0, 0.1, 0.0, 0.1)
_XLSR = (0.1, 0.0, 0.0, 0.0, 0.0)
_WAVLM = (0.1, 0.1, 0.0, 0.1, 0.05)
BUNDLES: dict[str, BundleInfo] = {
    "WAV2VEC2_BASE": _bundle("pretrained", "wav2vec2_fairseq_base_ls960.pth", "wav2vec2_base", _BASE, False),
    "WAV2VEC2_ASR_BASE_10M": _bundle("asr", "wav2vec2_fairseq_base_ls960_asr_ll10m.pth", "wav2vec2_base", _BASE, False, "en"),
    "WAV2VEC2_ASR_BASE_100H": _bundle("asr", "wav2vec2_fairseq_base_ls960_asr_ls100.pth", "wav2vec2_base", _BASE, False, "en"),
    "WAV2VEC2_ASR_BASE_960H": _bundle("asr", "wav2vec2_fairseq_base_ls960_asr_ls960.pth", "wav2vec2_base", _BASE, False, "en"),
    "WAV2VEC2_LARGE": _bundle("pretrained", "wav2vec2_fairseq_large_ls960.pth", "wav2vec2_large", _LARGE, False),
    "WAV2VEC2_ASR_LARGE_10M": _bundle("asr", "wav2vec2_fairseq_large_ls960_asr_ll10m.pth", "wav2vec2_large", _LARGE, False, "en"),
    "WAV2VEC2_ASR_LARGE_100H": _bundle("asr", "wav2vec2_fairseq_large_ls960_asr_ls100.pth", "wav2vec2_large", _LARGE, False, "en"),
    "WAV2VEC2_ASR_LARGE_960H": _bundle("asr", "wav2vec2_fairseq_large_ls960_asr_ls960.pth", "wav2vec2_large", _LARGE, False, "en"),
    "WAV2VEC2_LARGE_LV60K": _bundle("pretrained", "wav2vec2_fairseq_large_lv60k.pth", "wav2vec2_large_lv60k", _LV60K, True),
    "WAV2VEC2_ASR_LARGE_LV60K_10M": _bundle("asr", "wav2vec2_fairseq_large_lv60k_asr_ll10m.pth", "wav2vec2_large_lv60k", _LV60K, True, "en"),
    "WAV2VEC2_ASR_LARGE_LV60K_100H": _bundle("asr", "wav2vec2_fairseq_large_lv60k_asr_ls100.pth", "wav2vec2_large_lv60k", _LV60K, True, "en"),
    "WAV2VEC2_ASR_LARGE_LV60K_960H": _bundle("asr", "wav2vec2_fairseq_large_lv60k_asr_ls960.pth", "wav2vec2_large_lv60k", _LV60K, True, "en"),
    "WAV2VEC2_XLSR53": _bundle("pretrained", "wav2vec2_fairseq_large_xlsr53.pth", "wav2vec2_large_lv60k", _ZERO, True),
    "WAV2VEC2_XLSR_300M": _bundle("pretrained", "wav2vec2_xlsr_300m.pth", "wav2vec2_xlsr_300m", _ZERO, True),
    "WAV2VEC2_XLSR_1B": _bundle("pretrained", "wav2vec2_xlsr_1b.pth", "wav2vec2_xlsr_1b", _XLSR, True),
    "WAV2VEC2_XLSR_2B": _bundle("pretrained", "wav2vec2_xlsr_2b.pth", "wav2vec2_xlsr_2b", _XLSR, True),
    "HUBERT_BASE": _bundle("pretrained", "hubert_fairseq_base_ls960.pth", "hubert_base", _BASE, False),
    "HUBERT_LARGE": _bundle("pretrained", "hubert_fairseq_large_ll60k.pth", "hubert_large", _ZERO, True),
    "HUBERT_XLARGE": _bundle("pretrained", "hubert_fairseq_xlarge_ll60k.pth", "hubert_xlarge", _ZERO, True),
    "HUBERT_ASR_LARGE": _bundle("asr", "hubert_fairseq_large_ll60k_asr_ls960.pth", "hubert_large", _HUBERT_ASR, True, "en"),
    "HUBERT_ASR_XLARGE": _bundle("asr", "hubert_fairseq_xlarge_ll60k_asr_ls960.pth", "hubert_xlarge", _HUBERT_ASR, True, "en"),
    "VOXPOPULI_ASR_BASE_10K_DE": _bundle("asr", "wav2vec2_voxpopuli_base_10k_asr_de.pt", "wav2vec2_base", _VOXPOPULI, False, "de", (1, 2, 3, 35)),
    "VOXPOPULI_ASR_BASE_10K_EN": _bundle("asr", "wav2vec2_voxpopuli_base_10k_asr_en.pt", "wav2vec2_base", _VOXPOPULI, False, "vp_en", (1, 2, 3, 31)),
    "VOXPOPULI_ASR_BASE_10K_ES": _bundle("asr", "wav2vec2_voxpopuli_base_10k_asr_es.pt", "wav2vec2_base", _VOXPOPULI, False, "es", (1, 2, 3, 35)),
    "VOXPOPULI_ASR_BASE_10K_FR": _bundle("asr", "wav2vec2_voxpopuli_base_10k_asr_fr.pt", "wav2vec2_base", _VOXPOPULI, False, "fr"),
    "VOXPOPULI_ASR_BASE_10K_IT": _bundle("asr", "wav2vec2_voxpopuli_base_10k_asr_it.pt", "wav2vec2_base", _VOXPOPULI, False, "it"),
    "WAVLM_BASE": _bundle("pretrained", "wavlm_base.pth", "wavlm_base", _WAVLM, False),
    "WAVLM_BASE_PLUS": _bundle("pretrained", "wavlm_base_plus.pth", "wavlm_base", _WAVLM, False),
    "WAVLM_LARGE": _bundle("pretrained", "wavlm_large.pth", "wavlm_large", _WAVLM, True),
    "MMS_FA": _bundle("fa", "https://dl.fbaipublicfiles.com/mms/torchaudio/ctc_alignment_mling_uroman/model.pt", "wav2vec2_xlsr_300m", _HUBERT_ASR, True, "mms"),
}  # fmt: skip
"""torchaudio's wav2vec2-family pipeline bundles by name (``torchaudio.pipelines.<NAME>``)."""


def bundle_for_file(name: str) -> tuple[str, BundleInfo] | None:
    """The bundle whose weights file is called ``name`` (MMS_FA's generic ``model.pt`` is
    not matched), or None."""
    for bundle_name, info in BUNDLES.items():
        if info.file_name == name and info.kind != "fa":
            return bundle_name, info
    return None


def remove_aux_rows(
    state: Mapping[str, Any], rows: tuple[int, ...], source: str = "checkpoint"
) -> dict[str, Any]:
    """``state`` without the rows ``rows`` of ``aux.weight`` and ``aux.bias``, as torchaudio's
    pipelines drop them (fairseq's dictionary specials of the fine-tuned files)."""
    out = dict(state)
    for key in ("aux.weight", "aux.bias"):
        value = out.get(key)
        if not isinstance(value, torch.Tensor) or value.dim() < 1 or value.shape[0] <= max(rows):
            raise CheckpointError(
                f"{source}: {key} must have more than {max(rows)} rows, got {_shape_of(value)}"
            )
        keep = [i for i in range(value.shape[0]) if i not in rows]
        out[key] = value[keep]
    return out
