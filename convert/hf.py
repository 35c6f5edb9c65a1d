"""Hugging Face ``transformers`` checkpoints (any head class) → w2v, without transformers.

Pure functions of a ``config.json`` dict and a state dict; reading a model
directory is :mod:`w2v.convert.hf_dir`.
"""

from __future__ import annotations

from typing import Any

import torch
from w2v.convert.keys import Table, convert
from w2v.convert.outside import Outside, split

from w2v.config import Config
from w2v.errors import quoted
from w2v.nn.heads import HeadConfig

# model_type → (family, backbone prefix in head models)
MODEL_TYPES = {
    "wav2vec2": ("wav2vec2", "wav2vec2."),
    "hubert": ("hubert", "hubert."),
    "data2vec-audio": ("data2vec-audio", "data2vec_audio."),
    "wavlm": ("wavlm", "wavlm."),
}

# Backbone keys: HF name template → w2v name template. Most are identical by design.
BACKBONE_KEYS = {
    "feature_extractor.conv_layers.{}.conv.weight": "feature_extractor.conv_layers.{}.conv.weight",
    "feature_extractor.conv_layers.{}.conv.bias": "feature_extractor.conv_layers.{}.conv.bias",
    "feature_extractor.conv_layers.{}.layer_norm.weight": "feature_extractor.conv_layers.{}.layer_norm.weight",
    "feature_extractor.conv_layers.{}.layer_norm.bias": "feature_extractor.conv_layers.{}.layer_norm.bias",
    "feature_projection.layer_norm.weight": "feature_projection.layer_norm.weight",
    "feature_projection.layer_norm.bias": "feature_projection.layer_norm.bias",
    "feature_projection.projection.weight": "feature_projection.projection.weight",
    "feature_projection.projection.bias": "feature_projection.projection.bias",
    # weight norm, older (weight_g/weight_v) and newer (parametrizations) spellings
    "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv_embed.conv.weight_g",
    "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv_embed.conv.weight_v",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv_embed.conv.weight_g",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv_embed.conv.weight_v",
    "encoder.pos_conv_embed.conv.bias": "encoder.pos_conv_embed.conv.bias",
    # HuBERT conv_pos_batch_norm: plain conv weight + BatchNorm
    "encoder.pos_conv_embed.conv.weight": "encoder.pos_conv_embed.conv.weight",
    "encoder.pos_conv_embed.batch_norm.weight": "encoder.pos_conv_embed.batch_norm.weight",
    "encoder.pos_conv_embed.batch_norm.bias": "encoder.pos_conv_embed.batch_norm.bias",
    "encoder.pos_conv_embed.batch_norm.running_mean": "encoder.pos_conv_embed.batch_norm.running_mean",
    "encoder.pos_conv_embed.batch_norm.running_var": "encoder.pos_conv_embed.batch_norm.running_var",
    "encoder.pos_conv_embed.batch_norm.num_batches_tracked": "encoder.pos_conv_embed.batch_norm.num_batches_tracked",
    # data2vec-audio positional conv stack
    "encoder.pos_conv_embed.layers.{}.conv.weight": "encoder.pos_conv_embed.layers.{}.conv.weight",
    "encoder.pos_conv_embed.layers.{}.conv.bias": "encoder.pos_conv_embed.layers.{}.conv.bias",
    "encoder.layer_norm.weight": "encoder.layer_norm.weight",
    "encoder.layer_norm.bias": "encoder.layer_norm.bias",
    "encoder.layers.{}.attention.q_proj.weight": "encoder.layers.{}.attention.q_proj.weight",
    "encoder.layers.{}.attention.q_proj.bias": "encoder.layers.{}.attention.q_proj.bias",
    "encoder.layers.{}.attention.k_proj.weight": "encoder.layers.{}.attention.k_proj.weight",
    "encoder.layers.{}.attention.k_proj.bias": "encoder.layers.{}.attention.k_proj.bias",
    "encoder.layers.{}.attention.v_proj.weight": "encoder.layers.{}.attention.v_proj.weight",
    "encoder.layers.{}.attention.v_proj.bias": "encoder.layers.{}.attention.v_proj.bias",
    "encoder.layers.{}.attention.out_proj.weight": "encoder.layers.{}.attention.out_proj.weight",
    "encoder.layers.{}.attention.out_proj.bias": "encoder.layers.{}.attention.out_proj.bias",
    "encoder.layers.{}.attention.gru_rel_pos_const": "encoder.layers.{}.attention.gru_rel_pos_const",
    "encoder.layers.{}.attention.gru_rel_pos_linear.weight": "encoder.layers.{}.attention.gru_rel_pos_linear.weight",
    "encoder.layers.{}.attention.gru_rel_pos_linear.bias": "encoder.layers.{}.attention.gru_rel_pos_linear.bias",
    "encoder.layers.{}.layer_norm.weight": "encoder.layers.{}.layer_norm.weight",
    "encoder.layers.{}.layer_norm.bias": "encoder.layers.{}.layer_norm.bias",
    "encoder.layers.{}.feed_forward.intermediate_dense.weight": "encoder.layers.{}.feed_forward.intermediate_dense.weight",
    "encoder.layers.{}.feed_forward.intermediate_dense.bias": "encoder.layers.{}.feed_forward.intermediate_dense.bias",
    "encoder.layers.{}.feed_forward.output_dense.weight": "encoder.layers.{}.feed_forward.output_dense.weight",
    "encoder.layers.{}.feed_forward.output_dense.bias": "encoder.layers.{}.feed_forward.output_dense.bias",
    "encoder.layers.{}.final_layer_norm.weight": "encoder.layers.{}.final_layer_norm.weight",
    "encoder.layers.{}.final_layer_norm.bias": "encoder.layers.{}.final_layer_norm.bias",
    # WavLM: layer 0 alone owns the bucket embedding; w2v keeps it on the encoder.
    "encoder.layers.0.attention.rel_attn_embed.weight": "encoder.rel_attn_embed.weight",
}

BACKBONE_IGNORED = {
    "masked_spec_embed": "SpecAugment mask embedding, used in training only",
}
# Backbone features w2v does not implement: named when their keys turn up (their configs
# are refused first, see config_from_hf; these catch weights whose config says otherwise).
BACKBONE_HINTS = {
    "encoder.layers.{}.adapter_layer.*": "MMS language adapters (adapter_attn_dim), "
    "which w2v does not support",
    "adapter.*": "a Wav2Vec2 adapter stack (add_adapter), which w2v does not support",
    "encoder.layers.{}.conv_module.*": "a conformer layer, which w2v does not support",
}

# Keys outside the backbone prefix of head models that the key table handles; task heads
# (classification, x-vector) and unknown heads are sorted by w2v.convert.outside.
HEAD_KEYS = {
    "lm_head.weight": "lm_head.weight",
    "lm_head.bias": "lm_head.bias",
}
HEAD_IGNORED = {
    "quantizer.codevectors": "pretraining quantizer",
    "quantizer.weight_proj.weight": "pretraining quantizer",
    "quantizer.weight_proj.bias": "pretraining quantizer",
    "project_hid.weight": "pretraining projection",
    "project_hid.bias": "pretraining projection",
    "project_q.weight": "pretraining projection",
    "project_q.bias": "pretraining projection",
}

BACKBONE = Table(BACKBONE_KEYS, BACKBONE_IGNORED, hints=BACKBONE_HINTS)
HEADS = Table(HEAD_KEYS, HEAD_IGNORED)

# A *ForPreTraining checkpoint's pretraining parts: HF name → name in w2v's
# :class:`~w2v.nn.pretraining.Pretraining` module ({} is the backbone prefix's family name).
# Read (non-strict) they stay outside the key table and are kept as the model's
# ``pretraining`` (w2v.convert.checkpoint.Checkpoint); strict reads drop them.
PRETRAINING_KEYS = {
    "quantizer.codevectors": "quantizer.codevectors",
    "quantizer.weight_proj.weight": "quantizer.weight_proj.weight",
    "quantizer.weight_proj.bias": "quantizer.weight_proj.bias",
    "project_q.weight": "project_q.weight",
    "project_q.bias": "project_q.bias",
    "project_hid.weight": "project_hid.weight",
    "project_hid.bias": "project_hid.bias",
    **{f"{p}masked_spec_embed": "masked_spec_embed" for _, p in MODEL_TYPES.values()},
}
PRETRAINING = Table(PRETRAINING_KEYS)
# without a CTC config (vocab_size) the CTC head is dropped like the others
_NO_CTC = "CTC head, not kept: the config has no vocab_size"
HEADS_WITHOUT_CTC = Table(
    ignored={**HEAD_IGNORED, "lm_head.weight": _NO_CTC, "lm_head.bias": _NO_CTC}
)
# model types of the wav2vec2 lineage that w2v does not implement, and what they are
UNSUPPORTED_MODEL_TYPES = {
    "wav2vec2-conformer": "a conformer encoder, which w2v does not implement",
    "wav2vec2-bert": "w2v-BERT 2.0, a conformer encoder, which w2v does not implement",
}

# HF defaults for fields a config.json may omit
_DEFAULTS: dict[str, Any] = {
    "feat_extract_norm": "group",
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-5,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False,
    "feat_proj_layer_norm": True,
    "conv_pos_batch_norm": False,
    "conv_pos_kernel_size": 19,
    "num_buckets": 320,
    "max_bucket_distance": 800,
    "hidden_act": "gelu",
    "feat_extract_activation": "gelu",
    "add_adapter": False,
}


def config_from_hf(cfg: dict[str, Any], *, ctc: bool = False) -> tuple[Config, str]:
    """A transformers ``config.json`` dict → (w2v Config, family).

    ``ctc``: keep a CTC head of ``vocab_size`` outputs. Raises ValueError for
    model types and settings w2v does not implement.
    """
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        what = UNSUPPORTED_MODEL_TYPES.get(model_type) if isinstance(model_type, str) else None
        raise ValueError(
            f"unsupported model_type {quoted(model_type)}"
            + (f" ({what})" if what else "")
            + f"; supported: {', '.join(MODEL_TYPES)}"
        )
    family = MODEL_TYPES[model_type][0]

    def get(name: str) -> Any:
        return cfg.get(name, _DEFAULTS[name])

    for name in ("hidden_act", "feat_extract_activation"):
        if get(name) != "gelu":
            raise ValueError(f"{name}={quoted(get(name))} is not supported (only 'gelu')")
    if get("add_adapter"):
        raise ValueError("add_adapter=true (a Wav2Vec2 adapter stack) is not supported")
    if cfg.get("adapter_attn_dim") is not None:
        raise ValueError(
            f"adapter_attn_dim={quoted(cfg['adapter_attn_dim'])} (MMS language adapters in "
            "every encoder layer) is not supported"
        )
    norm = get("feat_extract_norm")
    if family == "data2vec-audio":
        norm = "layer"  # data2vec-audio always uses LayerNorm conv layers
    if norm not in ("group", "layer"):
        raise ValueError(f"feat_extract_norm={quoted(norm)} is not supported (group or layer)")

    fields: dict[str, Any] = dict(
        conv_dim=get("conv_dim"),
        conv_kernel=get("conv_kernel"),
        conv_stride=get("conv_stride"),
        conv_bias=bool(get("conv_bias")),
        conv_norm=norm,
        hidden_size=get("hidden_size"),
        num_layers=get("num_hidden_layers"),
        num_heads=get("num_attention_heads"),
        intermediate_size=get("intermediate_size"),
        layer_norm_eps=float(get("layer_norm_eps")),
        layer_norm_first=bool(get("do_stable_layer_norm")),
        pos_conv_kernel=get("num_conv_pos_embeddings"),
        pos_conv_groups=get("num_conv_pos_embedding_groups"),
    )
    if family == "hubert":
        fields["feat_proj_layer_norm"] = bool(get("feat_proj_layer_norm"))
        if get("conv_pos_batch_norm"):
            fields["pos_conv"] = "batch_norm"
    if family == "data2vec-audio":
        # here num_conv_pos_embeddings counts blocks, not taps
        fields.update(
            pos_conv="stack",
            pos_conv_depth=cfg.get("num_conv_pos_embeddings", 5),  # HF data2vec default, not 128
            pos_conv_kernel=get("conv_pos_kernel_size"),
            layer_norm_first=False,
        )
    if family == "wavlm":
        fields.update(
            rel_pos_buckets=get("num_buckets"), rel_pos_max_distance=get("max_bucket_distance")
        )
    if ctc:
        if "vocab_size" not in cfg:
            raise ValueError("a CTC model's config needs vocab_size")
        fields["vocab_size"] = cfg["vocab_size"]  # Config checks it is a size
    return Config(**fields), family


def convert_hf_state_dict(
    state: dict[str, torch.Tensor], config: Config, family: str, source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """HF state dict (base or head model) → (w2v state dict, dropped head keys).

    A head model keeps the backbone under a prefix (``wav2vec2.``); outside it only the
    CTC head and pretraining parts (dropped, returned for the notice) are read here: task
    heads and unknown keys are first set aside by :func:`split_hf_state_dict`, or are
    errors.
    """
    table, prefix = _table(state, config, family)
    out, dropped = convert(state, table, config, source)
    return out, [k for k in dropped if not k.startswith(prefix)]


def split_hf_state_dict(
    state: dict[str, torch.Tensor],
    config: Config,
    family: str,
    head: HeadConfig | None = None,
    *,
    strict: bool = False,
    source: str = "checkpoint",
) -> Outside:
    """Sort an HF state dict at the backbone's edge (:func:`w2v.convert.outside.split`):
    keys under the backbone prefix are the backbone; in a base model (no prefix) every key
    is. ``head``: the head the config names (:func:`w2v.nn.heads.head_config_from_hf`),
    whose keys are the checkpoint's own keys outside the prefix."""
    table, prefix = _table(state, config, family)
    kept = None
    if prefix and not strict and "quantizer.codevectors" in state:
        # a ForPreTraining checkpoint: its pretraining parts (the mask embedding inside the
        # prefix too) are kept beside the backbone rather than dropped
        kept = f"{prefix}masked_spec_embed"
        table = _without_pretraining(config, prefix)

    def inside(key: str) -> bool:
        return key.startswith(prefix) and key != kept

    return split(
        state,
        table,
        inside,
        head,
        config,
        strict=strict,
        source=source,
    )


def _without_pretraining(config: Config, prefix: str) -> Table:
    """The head model's table with the pretraining parts unknown rather than ignored."""
    ignored = {k: v for k, v in BACKBONE_IGNORED.items() if k != "masked_spec_embed"}
    backbone = Table(BACKBONE_KEYS, ignored, hints=BACKBONE_HINTS).prefixed(prefix)
    if config.vocab_size is not None:
        return backbone | Table(HEAD_KEYS)
    return backbone | Table(ignored={"lm_head.weight": _NO_CTC, "lm_head.bias": _NO_CTC})


def _table(state: dict[str, torch.Tensor], config: Config, family: str) -> tuple[Table, str]:
    """The key table of ``state`` and its backbone prefix ("" for a base model)."""
    prefix = next(p for f, p in MODEL_TYPES.values() if f == family)
    if any(isinstance(k, str) and k.startswith(prefix) for k in state):
        heads = HEADS if config.vocab_size is not None else HEADS_WITHOUT_CTC
        return BACKBONE.prefixed(prefix) | heads, prefix
    return BACKBONE, ""
