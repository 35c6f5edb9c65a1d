"""fairseq checkpoints (wav2vec2, HuBERT, data2vec-audio, their CTC fine-tunes) → w2v.

Pure functions of a model config section (plain dicts) and a ``model`` state
dict; reading the ``.pt`` file is :mod:`w2v.convert.fairseq_file`. A CTC
fine-tune (``wav2vec_ctc``, ``hubert_ctc``) keeps the encoder under
``w2v_encoder.w2v_model.`` and the CTC projection in ``w2v_encoder.proj``.
"""

from __future__ import annotations

import ast
from typing import Any

import torch
from w2v.convert.keys import Fill, Table, Transform, convert
from w2v.convert.outside import Outside, split

from w2v.config import MAX_CONV_LAYERS, Config
from w2v.errors import CheckpointError, quoted, shown

MAX_CONV_SPEC = 2000
"""Longest ``conv_feature_layers`` expression read (fairseq's own are under 100 characters)."""

# fairseq model name (cfg.model._name or args.arch) → w2v family
FAMILIES = {"wav2vec2": "wav2vec2", "hubert": "hubert", "data2vec_audio": "data2vec-audio"}
CTC_MODELS = ("wav2vec_ctc", "hubert_ctc")
ENCODER_PREFIX = "w2v_encoder.w2v_model."

# Defaults of fairseq's Wav2Vec2Config (shared by HubertConfig and
# Data2VecAudioConfig) for the architecture fields; old ``args`` may lack some.
FAIRSEQ_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "layer_norm_first": False,
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]",
    "conv_bias": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "pos_conv_depth": 1,
    "conv_pos_batch_norm": False,
    "quantize_input": False,
    "crop_seq_to_multiple": 1,
}


def config_from_fairseq(model_cfg: dict) -> tuple[Config, str]:
    """A fairseq model config section (plain dict) → (:class:`Config`, family).

    ``model_cfg`` is ``cfg.model`` of a pretraining checkpoint, the flat legacy
    ``args``, or ``w2v_args.model`` of a fine-tune. Fields it lacks take
    fairseq's defaults. Raises :class:`CheckpointError` (without a file name).
    """
    name = model_name(model_cfg) or "wav2vec2"
    if name not in FAMILIES:
        raise CheckpointError(_unsupported(name))
    family = FAMILIES[name]

    def get(key: str) -> Any:
        value = model_cfg.get(key)
        return FAIRSEQ_DEFAULTS[key] if value is None else value

    def get_int(key: str) -> int:
        value = get(key)
        # float.is_integer: a whole float (fairseq configs hold 768.0), never inf or nan
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise CheckpointError(f"{key} must be an integer, got {quoted(value)}")
        return int(value)

    if str(get("activation_fn")) != "gelu":
        raise CheckpointError(
            f"activation_fn {quoted(get('activation_fn'))} is not supported (gelu only)"
        )
    if str(get("layer_type")) != "transformer":
        raise CheckpointError(
            f"layer_type {quoted(get('layer_type'))} is not supported (transformer only)"
        )
    if get("quantize_input"):
        raise CheckpointError("quantize_input models are not supported")
    if get_int("crop_seq_to_multiple") != 1:
        raise CheckpointError("crop_seq_to_multiple != 1 is not supported")
    mode = str(get("extractor_mode"))
    conv_norm = {"default": "group", "layer_norm": "layer"}.get(mode)
    if conv_norm is None:
        raise CheckpointError(
            f"extractor_mode {quoted(mode)} is not supported (default or layer_norm)"
        )
    layers = parse_conv_layers(get("conv_feature_layers"))

    depth = get_int("pos_conv_depth")
    conv_pos = get_int("conv_pos")
    if depth > 1:
        # fairseq splits conv_pos over the stack: kernel max(3, conv_pos // depth)
        pos_conv, kernel = "stack", max(3, conv_pos // depth)
    elif get("conv_pos_batch_norm"):
        pos_conv, kernel = "batch_norm", conv_pos
    else:
        pos_conv, kernel = "weight_norm", conv_pos
    try:
        config = Config(
            conv_dim=tuple(d for d, _, _ in layers),
            conv_kernel=tuple(k for _, k, _ in layers),
            conv_stride=tuple(s for _, _, s in layers),
            conv_bias=bool(get("conv_bias")),
            conv_norm=conv_norm,
            hidden_size=get_int("encoder_embed_dim"),
            num_layers=get_int("encoder_layers"),
            num_heads=get_int("encoder_attention_heads"),
            intermediate_size=get_int("encoder_ffn_embed_dim"),
            layer_norm_eps=1e-5,  # fairseq's LayerNorm default everywhere
            layer_norm_first=bool(get("layer_norm_first")),
            feat_proj_layer_norm=True,  # fairseq always normalises the conv features
            pos_conv=pos_conv,
            pos_conv_kernel=kernel,
            pos_conv_groups=get_int("conv_pos_groups"),
            pos_conv_depth=depth,
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid architecture in the fairseq config: {shown(e)}") from None
    return config, family


def parse_conv_layers(spec: Any) -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers``, e.g. ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``.

    The string is a Python expression; fairseq ``eval``\\ s it. Here it is
    parsed with :mod:`ast` and only list/tuple literals of integers joined by
    ``+`` and repeated by ``* n`` are accepted, and no intermediate list may
    grow beyond :data:`~w2v.config.MAX_CONV_LAYERS` layers (so
    ``"[(1,1,1)] * 1000 * 1000 * 1000"`` is refused before it is built).
    """
    if isinstance(spec, (list, tuple)):
        if len(spec) > MAX_CONV_LAYERS:
            raise CheckpointError(
                f"conv_feature_layers lists {len(spec)} layers (at most {MAX_CONV_LAYERS})"
            )
        value: Any = list(spec)
    elif not isinstance(spec, str) or len(spec) > MAX_CONV_SPEC:
        raise CheckpointError(
            f"conv_feature_layers {_spec(spec)} is not an expression of at most "
            f"{MAX_CONV_SPEC} characters"
        )
    else:
        try:
            value = _literal(ast.parse(spec, mode="eval").body)
        except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError) as e:
            raise CheckpointError(
                f"cannot parse conv_feature_layers {_spec(spec)}: {shown(e)}"
            ) from None
    layers = []
    for item in value if isinstance(value, list) else [None]:
        if not (
            isinstance(item, (list, tuple))
            and len(item) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in item)
        ):
            raise CheckpointError(
                f"conv_feature_layers {_spec(spec)} is not a list of (dim, kernel, stride) triples"
            )
        layers.append(tuple(item))
    if not layers:
        raise CheckpointError(f"conv_feature_layers {_spec(spec)} is empty")
    return layers


def _spec(spec: Any) -> str:
    return quoted(spec) if isinstance(spec, str) else f"(a {type(spec).__name__})"


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(left, list) and isinstance(right, list):
            return _layers(len(left) + len(right)) and left + right
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(left, list) and isinstance(right, int) and right >= 0:
            return _layers(len(left) * right) and left * right
    raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")


def _layers(count: int) -> bool:
    """True when a list of ``count`` layers may be built (the check comes before building it)."""
    if count > MAX_CONV_LAYERS:
        raise ValueError(f"it makes more than {MAX_CONV_LAYERS} layers")
    return True


def model_name(model_cfg: dict) -> str | None:
    """fairseq's name of the model a config section describes (``_name`` or legacy ``arch``)."""
    name = model_cfg.get("_name", model_cfg.get("arch"))
    return name if name is None or isinstance(name, str) else shown(name)


def _unsupported(name: str) -> str:
    if name == "wav2vec":
        why = "wav2vec 1.0 is a different architecture"
    elif name.startswith("data2vec") and name != "data2vec_audio":
        why = "only data2vec-audio (data2vec 1.0) is supported, not data2vec 2.0 / other modalities"
    elif name.endswith("seq2seq"):
        why = "only CTC fine-tunes are supported, not seq2seq ones"
    else:
        why = "not a wav2vec 2.0 family encoder w2v knows"
    supported = ", ".join([*FAMILIES, *CTC_MODELS])
    return f"fairseq model type {_spec(name)} is not supported ({why}); supported: {supported}"


# Key tables: fairseq template → w2v template. "{}" is a layer index; other
# digits are literal, fairseq's nn.Sequential slots (conv .0, norm .2, the
# LayerNorm of layer-norm mode .2.1). Each section applies to some configs;
# key_table picks them.

CONV = Table(
    {"feature_extractor.conv_layers.{}.0.weight": "feature_extractor.conv_layers.{}.conv.weight"}
)
CONV_BIAS = Table(
    {"feature_extractor.conv_layers.{}.0.bias": "feature_extractor.conv_layers.{}.conv.bias"}
)
CONV_NORM = {
    # "group": Fp32GroupNorm in slot 2 of layer 0 only
    "group": Table(
        {
            "feature_extractor.conv_layers.{}.2.weight": "feature_extractor.conv_layers.{}.layer_norm.weight",
            "feature_extractor.conv_layers.{}.2.bias": "feature_extractor.conv_layers.{}.layer_norm.bias",
        }
    ),
    # "layer": Sequential(TransposeLast, Fp32LayerNorm, TransposeLast) in slot 2
    "layer": Table(
        {
            "feature_extractor.conv_layers.{}.2.1.weight": "feature_extractor.conv_layers.{}.layer_norm.weight",
            "feature_extractor.conv_layers.{}.2.1.bias": "feature_extractor.conv_layers.{}.layer_norm.bias",
        }
    ),
}
PROJECTION = Table(
    {
        "layer_norm.weight": "feature_projection.layer_norm.weight",
        "layer_norm.bias": "feature_projection.layer_norm.bias",
        "post_extract_proj.weight": "feature_projection.projection.weight",
        "post_extract_proj.bias": "feature_projection.projection.bias",
    }
)


def _identity(expected: torch.Tensor, converted: dict[str, torch.Tensor]) -> torch.Tensor:
    """eye for the projection's weight, zeros for its bias, in the checkpoint's dtype."""
    norm = converted.get("feature_projection.layer_norm.weight")
    dtype = norm.dtype if norm is not None else torch.float32
    if expected.dim() == 2:
        return torch.eye(*expected.shape, dtype=dtype)
    return torch.zeros(expected.shape, dtype=dtype)


_NO_PROJECTION = (
    "fairseq builds no post_extract_proj when the conv width equals the model width "
    "(wav2vec2, HuBERT); the identity is exactly what it computes"
)
# only for configs whose conv width equals the model width (see key_table)
IDENTITY_PROJECTION = Table(
    fills=(
        Fill("feature_projection.projection.weight", _identity, _NO_PROJECTION),
        Fill("feature_projection.projection.bias", _identity, _NO_PROJECTION),
    )
)


def _reshape_to_expected(g: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    # a g of the wrong size is left for the shape check to report
    return g.reshape(expected.shape) if g.numel() == expected.numel() else g


POS_CONV = {
    # nn.utils.weight_norm(dim=2); newer torch spells it as a parametrization
    "weight_norm": Table(
        {
            "encoder.pos_conv.0.weight_g": "encoder.pos_conv_embed.conv.weight_g",
            "encoder.pos_conv.0.weight_v": "encoder.pos_conv_embed.conv.weight_v",
            "encoder.pos_conv.0.parametrizations.weight.original0": "encoder.pos_conv_embed.conv.weight_g",
            "encoder.pos_conv.0.parametrizations.weight.original1": "encoder.pos_conv_embed.conv.weight_v",
            "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.conv.bias",
        },
        transforms=(
            Transform(
                "encoder.pos_conv_embed.conv.weight_g",
                _reshape_to_expected,
                "weight_norm(dim=2) keeps g as (1, 1, K); some exports flatten it",
            ),
        ),
    ),
    # HuBERT conv_pos_batch_norm: Sequential(BatchNorm1d, Conv1d, SamePad, GELU)
    "batch_norm": Table(
        {
            "encoder.pos_conv.0.weight": "encoder.pos_conv_embed.batch_norm.weight",
            "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.batch_norm.bias",
            "encoder.pos_conv.0.running_mean": "encoder.pos_conv_embed.batch_norm.running_mean",
            "encoder.pos_conv.0.running_var": "encoder.pos_conv_embed.batch_norm.running_var",
            "encoder.pos_conv.0.num_batches_tracked": "encoder.pos_conv_embed.batch_norm.num_batches_tracked",
            "encoder.pos_conv.1.weight": "encoder.pos_conv_embed.conv.weight",
            "encoder.pos_conv.1.bias": "encoder.pos_conv_embed.conv.bias",
        }
    ),
    # data2vec-audio: pos_conv_depth blocks of Sequential(Conv1d, SamePad, ..., LayerNorm(no affine), ...)
    "stack": Table(
        {
            "encoder.pos_conv.{}.0.weight": "encoder.pos_conv_embed.layers.{}.conv.weight",
            "encoder.pos_conv.{}.0.bias": "encoder.pos_conv_embed.layers.{}.conv.bias",
        }
    ),
}
ENCODER = Table(
    {
        "encoder.layer_norm.weight": "encoder.layer_norm.weight",
        "encoder.layer_norm.bias": "encoder.layer_norm.bias",
        "encoder.layers.{}.self_attn.q_proj.weight": "encoder.layers.{}.attention.q_proj.weight",
        "encoder.layers.{}.self_attn.q_proj.bias": "encoder.layers.{}.attention.q_proj.bias",
        "encoder.layers.{}.self_attn.k_proj.weight": "encoder.layers.{}.attention.k_proj.weight",
        "encoder.layers.{}.self_attn.k_proj.bias": "encoder.layers.{}.attention.k_proj.bias",
        "encoder.layers.{}.self_attn.v_proj.weight": "encoder.layers.{}.attention.v_proj.weight",
        "encoder.layers.{}.self_attn.v_proj.bias": "encoder.layers.{}.attention.v_proj.bias",
        "encoder.layers.{}.self_attn.out_proj.weight": "encoder.layers.{}.attention.out_proj.weight",
        "encoder.layers.{}.self_attn.out_proj.bias": "encoder.layers.{}.attention.out_proj.bias",
        "encoder.layers.{}.self_attn_layer_norm.weight": "encoder.layers.{}.layer_norm.weight",
        "encoder.layers.{}.self_attn_layer_norm.bias": "encoder.layers.{}.layer_norm.bias",
        "encoder.layers.{}.fc1.weight": "encoder.layers.{}.feed_forward.intermediate_dense.weight",
        "encoder.layers.{}.fc1.bias": "encoder.layers.{}.feed_forward.intermediate_dense.bias",
        "encoder.layers.{}.fc2.weight": "encoder.layers.{}.feed_forward.output_dense.weight",
        "encoder.layers.{}.fc2.bias": "encoder.layers.{}.feed_forward.output_dense.bias",
        "encoder.layers.{}.final_layer_norm.weight": "encoder.layers.{}.final_layer_norm.weight",
        "encoder.layers.{}.final_layer_norm.bias": "encoder.layers.{}.final_layer_norm.bias",
    }
)
_WAVLM = "a WavLM checkpoint? use its Hugging Face version, e.g. microsoft/wavlm-base-plus"
# Dropped on purpose, with the reason; "*" stands for the rest of the key.
PRETRAINING = Table(
    ignored={
        "mask_emb": "mask embedding, used only while masking during training",
        "quantizer.*": "quantizer producing wav2vec2 pretraining targets",
        "input_quantizer.*": "input quantizer of wav2vec2 pretraining",
        "project_q.*": "projection of the quantized pretraining targets",
        "final_proj.*": "projection onto the pretraining targets",
        "final_proj.{}.*": "HuBERT untied projections onto the pretraining targets",
        "target_glu.*": "GLU on the pretraining targets",
        "label_embs_concat": "HuBERT label embeddings, pretraining loss only",
        "_ema": "data2vec EMA teacher (a copy of encoder.layers.*), pretraining only",
        "_ema.*": "data2vec EMA teacher (a copy of encoder.layers.*), pretraining only",
    },
    # WavLM's own checkpoints look like wav2vec2 ones plus these
    hints={
        "encoder.layers.{}.self_attn.relative_attention_bias.*": _WAVLM,
        "encoder.layers.{}.self_attn.grep_linear.*": _WAVLM,
    },
)
# The pretraining parts w2v keeps (as the model's ``pretraining``,
# w2v.convert.checkpoint.Checkpoint): fairseq name → name in w2v's
# :class:`~w2v.nn.pretraining.Pretraining` module, for wav2vec 2.0 and for HuBERT, whose
# ``final_proj`` differ in role. Read non-strict, a pretraining checkpoint's keys under
# these modules stay outside the key table (kept); strict reads drop them as before.
PRETRAINING_KEYS = {
    "mask_emb": "masked_spec_embed",
    "quantizer.vars": "quantizer.codevectors",
    "quantizer.weight_proj.weight": "quantizer.weight_proj.weight",
    "quantizer.weight_proj.bias": "quantizer.weight_proj.bias",
    "project_q.weight": "project_q.weight",
    "project_q.bias": "project_q.bias",
    "final_proj.weight": "project_hid.weight",
    "final_proj.bias": "project_hid.bias",
}
HUBERT_PRETRAINING_KEYS = {
    "mask_emb": "masked_spec_embed",
    "label_embs_concat": "label_embeddings",
    "final_proj.weight": "final_proj.weight",
    "final_proj.bias": "final_proj.bias",
}
_KEPT_MODULES = ("mask_emb", "quantizer", "project_q", "final_proj", "label_embs_concat")
CTC_HEAD = Table(
    {
        "w2v_encoder.proj.weight": "lm_head.weight",
        "w2v_encoder.proj.bias": "lm_head.bias",
    }
)
# Named in the one-line notice when present (mask_emb is never worth a remark).
PRETRAINING_HEADS = (
    "quantizer",
    "input_quantizer",
    "project_q",
    "final_proj",
    "target_glu",
    "label_embs_concat",
    "_ema",
)


def key_table(config: Config) -> Table:
    """The fairseq key table for ``config`` (the CTC fine-tune layout when ``vocab_size``)."""
    encoder = CONV | CONV_NORM[config.conv_norm] | PROJECTION | POS_CONV[config.pos_conv]
    encoder = encoder | ENCODER | PRETRAINING
    if config.conv_bias:
        encoder = encoder | CONV_BIAS
    if config.conv_dim[-1] == config.hidden_size:
        encoder = encoder | IDENTITY_PROJECTION
    if config.vocab_size is None:
        return encoder
    return encoder.prefixed(ENCODER_PREFIX) | CTC_HEAD


def convert_fairseq_state_dict(
    state: dict[str, Any], config: Config, *, source: str = "fairseq state dict"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """fairseq ``model`` state dict → (w2v state dict, notices).

    Every key is renamed or dropped by :func:`key_table`, or is an error naming
    it; every weight the w2v model needs must be present with the shape
    ``config`` implies. Pure: the input is not modified and tensors are not
    copied (a flattened ``weight_g`` is a reshaped view).
    """
    out, dropped = convert(state, key_table(config), config, source)
    heads = sorted({h for h in PRETRAINING_HEADS if any(_under(k, h) for k in dropped)})
    if not heads:
        return out, []
    return out, [f"{source}: dropped pretraining-only weights: {', '.join(heads)}"]


# fairseq's encoder modules (top-level names of a wav2vec2 / HuBERT / data2vec-audio model);
# a key under one of them, or under the fine-tune's encoder, is inside the backbone
ENCODER_MODULES = ("feature_extractor", "layer_norm", "post_extract_proj", "encoder")


def split_fairseq_state_dict(
    state: dict[str, Any], config: Config, *, strict: bool = False, source: str = "fairseq"
) -> Outside:
    """Sort a fairseq ``model`` state dict at the encoder's edge
    (:func:`w2v.convert.outside.split`; fairseq checkpoints name no task head): keys the
    table does not know under :data:`ENCODER_MODULES` (below ``w2v_encoder.w2v_model.`` in
    a fine-tune) stay errors; others are kept unused, or refused when ``strict``."""
    prefix = ENCODER_PREFIX if config.vocab_size is not None else ""

    def inside(key: str) -> bool:
        return key.startswith(prefix) and key[len(prefix) :].split(".")[0] in ENCODER_MODULES

    table = key_table(config)
    # a wav2vec 2.0 / HuBERT pretraining checkpoint keeps its pretraining parts (data2vec's
    # final_proj regresses onto a teacher w2v does not have: dropped as before)
    if not strict and config.vocab_size is None and config.pos_conv != "stack":
        table = _keeping_pretraining(table)
    return split(state, table, inside, None, config, strict=strict, source=source)


def _keeping_pretraining(table: Table) -> Table:
    """``table`` without the ignored entries of the modules w2v keeps (:data:`_KEPT_MODULES`)."""
    ignored = {k: v for k, v in table.ignored.items() if k.split(".")[0] not in _KEPT_MODULES}
    return Table(
        table.keys, ignored, tuple(table.transforms.values()), tuple(table.fills.values()),
        table.hints,
    )  # fmt: skip


def _under(key: str, head: str) -> bool:
    key = key.removeprefix(ENCODER_PREFIX)
    return key == head or key.startswith(head + ".")
