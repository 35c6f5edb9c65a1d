"""fairseq ``.pt`` checkpoints (wav2vec2, HuBERT, data2vec-audio, their CTC fine-tunes) → w2v.

Read without fairseq and without running code from the file: the pickle goes
through :mod:`w2v.convert.unpickle`'s allow-list. Layouts understood:

* new-style ``cfg`` (omegaconf ``DictConfig`` or plain dicts) with ``model`` and
  ``task`` sections; legacy ``args`` (``argparse.Namespace``);
* pretraining checkpoints of ``wav2vec2``, ``hubert`` and ``data2vec_audio``;
* CTC fine-tunes (``wav2vec_ctc``, ``hubert_ctc``): the encoder under
  ``w2v_encoder.w2v_model.``, the CTC projection ``w2v_encoder.proj``, and the
  pretraining config in ``w2v_args``; the target dictionary's symbols become
  :attr:`Checkpoint.vocab` when ``task_state`` holds it.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

import torch
from w2v.convert.checkpoint import Checkpoint
from w2v.convert.keys import check_against, expected_state
from w2v.convert.safe_pickle import Record, Refused, RefusedGlobal, read_torch_file, to_plain

from w2v.config import CheckpointInfo, Config
from w2v.errors import CheckpointError, one_line

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

# fairseq key template → w2v key template; "{}" is a layer index, other digits
# are literal (fairseq's nn.Sequential slots: conv .0, norm .2, LayerNorm .2.1).
CONV_KEYS = {
    "feature_extractor.conv_layers.{}.0.weight": "feature_extractor.conv_layers.{}.conv.weight",
}
CONV_BIAS_KEYS = {
    "feature_extractor.conv_layers.{}.0.bias": "feature_extractor.conv_layers.{}.conv.bias",
}
CONV_NORM_KEYS = {
    # "group": Fp32GroupNorm in slot 2 of layer 0 only
    "group": {
        "feature_extractor.conv_layers.{}.2.weight": "feature_extractor.conv_layers.{}.layer_norm.weight",
        "feature_extractor.conv_layers.{}.2.bias": "feature_extractor.conv_layers.{}.layer_norm.bias",
    },
    # "layer": Sequential(TransposeLast, Fp32LayerNorm, TransposeLast) in slot 2
    "layer": {
        "feature_extractor.conv_layers.{}.2.1.weight": "feature_extractor.conv_layers.{}.layer_norm.weight",
        "feature_extractor.conv_layers.{}.2.1.bias": "feature_extractor.conv_layers.{}.layer_norm.bias",
    },
}
PROJECTION_KEYS = {
    "layer_norm.weight": "feature_projection.layer_norm.weight",
    "layer_norm.bias": "feature_projection.layer_norm.bias",
    "post_extract_proj.weight": "feature_projection.projection.weight",
    "post_extract_proj.bias": "feature_projection.projection.bias",
}
POS_CONV_KEYS = {
    # nn.utils.weight_norm(dim=2): g (1, 1, K); newer torch spells it as a parametrization
    "weight_norm": {
        "encoder.pos_conv.0.weight_g": "encoder.pos_conv_embed.conv.weight_g",
        "encoder.pos_conv.0.weight_v": "encoder.pos_conv_embed.conv.weight_v",
        "encoder.pos_conv.0.parametrizations.weight.original0": "encoder.pos_conv_embed.conv.weight_g",
        "encoder.pos_conv.0.parametrizations.weight.original1": "encoder.pos_conv_embed.conv.weight_v",
        "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.conv.bias",
    },
    # HuBERT conv_pos_batch_norm: Sequential(BatchNorm1d, Conv1d, SamePad, GELU)
    "batch_norm": {
        "encoder.pos_conv.0.weight": "encoder.pos_conv_embed.batch_norm.weight",
        "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.batch_norm.bias",
        "encoder.pos_conv.0.running_mean": "encoder.pos_conv_embed.batch_norm.running_mean",
        "encoder.pos_conv.0.running_var": "encoder.pos_conv_embed.batch_norm.running_var",
        "encoder.pos_conv.0.num_batches_tracked": "encoder.pos_conv_embed.batch_norm.num_batches_tracked",
        "encoder.pos_conv.1.weight": "encoder.pos_conv_embed.conv.weight",
        "encoder.pos_conv.1.bias": "encoder.pos_conv_embed.conv.bias",
    },
    # data2vec-audio: pos_conv_depth blocks of Sequential(Conv1d, SamePad, ..., LayerNorm(no affine), ...)
    "stack": {
        "encoder.pos_conv.{}.0.weight": "encoder.pos_conv_embed.layers.{}.conv.weight",
        "encoder.pos_conv.{}.0.bias": "encoder.pos_conv_embed.layers.{}.conv.bias",
    },
}
ENCODER_KEYS = {
    "encoder.layer_norm.weight": "encoder.layer_norm.weight",
    "encoder.layer_norm.bias": "encoder.layer_norm.bias",
}
for _p in ("q_proj", "k_proj", "v_proj", "out_proj"):
    for _w in ("weight", "bias"):
        ENCODER_KEYS[f"encoder.layers.{{}}.self_attn.{_p}.{_w}"] = (
            f"encoder.layers.{{}}.attention.{_p}.{_w}"
        )
for _src, _dst in (
    ("self_attn_layer_norm", "layer_norm"),
    ("fc1", "feed_forward.intermediate_dense"),
    ("fc2", "feed_forward.output_dense"),
    ("final_layer_norm", "final_layer_norm"),
):
    for _w in ("weight", "bias"):
        ENCODER_KEYS[f"encoder.layers.{{}}.{_src}.{_w}"] = f"encoder.layers.{{}}.{_dst}.{_w}"
CTC_HEAD_KEYS = {
    "w2v_encoder.proj.weight": "lm_head.weight",
    "w2v_encoder.proj.bias": "lm_head.bias",
}

# Encoder keys dropped on purpose: template → reason. "*" matches the rest of the key.
IGNORED_KEYS = {
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
}
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


# --------------------------------------------------------------------------
# Reading the file


def read_fairseq(path: str | os.PathLike) -> Checkpoint:
    """Read a fairseq ``.pt`` checkpoint into a :class:`Checkpoint` (weights in w2v's names).

    Raises :class:`CheckpointError` with a one-line message naming the file.
    """
    p = Path(path)
    obj = _unpickle(p)
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise CheckpointError(
            f"{p}: not a fairseq checkpoint (expected a dict with a 'model' state dict); "
            "w2v reads fairseq .pt files, w2v checkpoint directories and Hugging Face directories"
        )
    model_cfg, task_cfg = _sections(obj, p)
    name = _model_name(model_cfg)
    ctc = name in CTC_MODELS
    if ctc:
        w2v_args = model_cfg.get("w2v_args")
        if not isinstance(w2v_args, dict):
            raise CheckpointError(
                f"{p}: fine-tuned checkpoint without its pretraining config (w2v_args); "
                "it cannot be read without the pretrained checkpoint it names"
            )
        encoder_cfg = w2v_args.get("model", w2v_args)
        encoder_task = w2v_args.get("task", w2v_args)
        if not isinstance(encoder_cfg, dict):
            raise CheckpointError(f"{p}: w2v_args.model is not a config section")
    elif name is None or name in FAMILIES:
        encoder_cfg, encoder_task = model_cfg, task_cfg
    else:
        raise CheckpointError(f"{p}: {_unsupported(name)}")
    try:
        config, family = config_from_fairseq(encoder_cfg)
    except CheckpointError as e:
        raise CheckpointError(f"{p}: {e}") from None

    state = {k: v for k, v in obj["model"].items()}
    vocab = None
    if ctc:
        head = state.get("w2v_encoder.proj.weight")
        if not isinstance(head, torch.Tensor) or head.dim() != 2:
            raise CheckpointError(
                f"{p}: CTC checkpoint has no w2v_encoder.proj.weight (the output projection)"
            )
        config = Config.from_dict({**config.to_dict(), "vocab_size": int(head.shape[0])})
        vocab = _target_symbols(obj.get("task_state"))
    state, notices = convert_fairseq_state_dict(state, config, source=str(p))
    if vocab is not None and len(vocab) != config.vocab_size:
        notices.append(
            f"{p}: target dictionary has {len(vocab)} symbols but the CTC head has "
            f"{config.vocab_size} outputs; vocabulary not kept"
        )
        vocab = None
    normalize = _flag(task_cfg, "normalize")
    if normalize is None and ctc:
        normalize = _flag(encoder_task, "normalize")
    return Checkpoint(
        config=config,
        state_dict=state,
        info=CheckpointInfo(family=family, normalize=bool(normalize), vocab=vocab, source=str(p)),
        notices=tuple(notices),
    )


def _unpickle(p: Path) -> Any:
    try:
        return read_torch_file(p)
    except RefusedGlobal as e:
        raise CheckpointError(
            f"{p}: refusing to load: the pickle references {e.module}.{e.name}, which w2v does not "
            "allow (a checkpoint needs only tensors, plain data and configs; loading this one "
            "could run code). Do not load this file with torch.load either"
        ) from None
    except Refused as e:
        raise CheckpointError(
            f"{p}: refusing to load: {e} (w2v never runs code from a checkpoint)"
        ) from None
    except OSError as e:
        raise CheckpointError(f"{p}: cannot read the file ({e.strerror or e})") from None
    except Exception as e:  # a damaged file can fail in many ways; all mean the same to the user
        raise CheckpointError(
            f"{p}: cannot read as a PyTorch checkpoint ({one_line(e, 200)}); "
            "the file may be truncated or corrupt"
        ) from None


def _sections(obj: dict, p: Path) -> tuple[dict, dict]:
    """(model config, task config) as plain dicts from ``cfg`` or legacy ``args``."""
    cfg, args = obj.get("cfg"), obj.get("args")
    try:
        cfg = to_plain(cfg) if cfg is not None else None
        args = to_plain(args) if args is not None else None
    except ValueError as e:
        raise CheckpointError(f"{p}: unreadable config ({e})") from None
    if cfg is not None:
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            raise CheckpointError(f"{p}: the checkpoint's cfg has no model section")
        task = cfg.get("task")
        return cfg["model"], task if isinstance(task, dict) else {}
    if args is not None:
        if not isinstance(args, dict):
            raise CheckpointError(f"{p}: the checkpoint's args are not an argparse.Namespace")
        return args, args
    raise CheckpointError(
        f"{p}: the checkpoint has neither cfg nor args, so its architecture is unknown"
    )


def _model_name(model_cfg: dict) -> str | None:
    name = model_cfg.get("_name", model_cfg.get("arch"))
    return str(name) if name is not None else None


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
    return f"fairseq model type {name!r} is not supported ({why}); supported: {supported}"


def _flag(section: Any, key: str) -> bool | None:
    if isinstance(section, dict) and section.get(key) is not None:
        value = section[key]
        if isinstance(value, str):
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    return None


def _target_symbols(task_state: Any) -> list[str] | None:
    """Symbols of ``task_state["target_dictionary"]`` (a fairseq Dictionary), if present."""
    if not isinstance(task_state, dict):
        return None
    d = task_state.get("target_dictionary")
    state = Record.state_dict(d) if isinstance(d, Record) else d if isinstance(d, dict) else None
    symbols = state.get("symbols") if state else None
    if isinstance(symbols, list) and all(isinstance(s, str) for s in symbols):
        return list(symbols)
    return None


# --------------------------------------------------------------------------
# Config


def config_from_fairseq(model_cfg: dict) -> tuple[Config, str]:
    """A fairseq model config section (plain dict) → (:class:`Config`, family).

    ``model_cfg`` is ``cfg.model`` of a pretraining checkpoint, the flat legacy
    ``args``, or ``w2v_args.model`` of a fine-tune. Fields it lacks take
    fairseq's defaults. Raises :class:`CheckpointError` (without a file name).
    """
    name = _model_name(model_cfg) or "wav2vec2"
    if name not in FAMILIES:
        raise CheckpointError(_unsupported(name))
    family = FAMILIES[name]

    def get(key: str) -> Any:
        value = model_cfg.get(key)
        return FAIRSEQ_DEFAULTS[key] if value is None else value

    def get_int(key: str) -> int:
        value = get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise CheckpointError(f"{key} must be an integer, got {value!r}")
        return int(value)

    if str(get("activation_fn")) != "gelu":
        raise CheckpointError(
            f"activation_fn {get('activation_fn')!r} is not supported (gelu only)"
        )
    if str(get("layer_type")) != "transformer":
        raise CheckpointError(
            f"layer_type {get('layer_type')!r} is not supported (transformer only)"
        )
    if get("quantize_input"):
        raise CheckpointError("quantize_input models are not supported")
    if get_int("crop_seq_to_multiple") != 1:
        raise CheckpointError("crop_seq_to_multiple != 1 is not supported")
    mode = str(get("extractor_mode"))
    conv_norm = {"default": "group", "layer_norm": "layer"}.get(mode)
    if conv_norm is None:
        raise CheckpointError(f"extractor_mode {mode!r} is not supported (default or layer_norm)")
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
        raise CheckpointError(f"invalid architecture in the fairseq config: {e}") from None
    return config, family


def parse_conv_layers(spec: Any) -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers``, e.g. ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``.

    The string is a Python expression; fairseq ``eval``\\ s it. Here it is
    parsed with :mod:`ast` and only list/tuple literals of integers joined by
    ``+`` and repeated by ``* n`` are accepted.
    """
    if isinstance(spec, (list, tuple)):
        value: Any = list(spec)
    else:
        try:
            value = _literal(ast.parse(str(spec), mode="eval").body)
        except (SyntaxError, ValueError, TypeError, RecursionError) as e:
            raise CheckpointError(f"cannot parse conv_feature_layers {spec!r}: {e}") from None
    layers = []
    for item in value if isinstance(value, list) else [None]:
        if not (
            isinstance(item, (list, tuple))
            and len(item) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in item)
        ):
            raise CheckpointError(
                f"conv_feature_layers {spec!r} is not a list of (dim, kernel, stride) triples"
            )
        layers.append(tuple(item))
    if not layers:
        raise CheckpointError(f"conv_feature_layers {spec!r} is empty")
    return layers


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
            return left + right
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(left, list) and isinstance(right, int) and 0 <= right <= 1000:
            return left * right
    raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")


# --------------------------------------------------------------------------
# Weights


def key_table(config: Config) -> dict[str, str]:
    """fairseq → w2v key templates for ``config`` (CTC fine-tune layout when ``vocab_size``)."""
    encoder = {
        **CONV_KEYS,
        **(CONV_BIAS_KEYS if config.conv_bias else {}),
        **CONV_NORM_KEYS[config.conv_norm],
        **PROJECTION_KEYS,
        **POS_CONV_KEYS[config.pos_conv],
        **ENCODER_KEYS,
    }
    if config.vocab_size is None:
        return encoder
    return {**{ENCODER_PREFIX + k: v for k, v in encoder.items()}, **CTC_HEAD_KEYS}


def ignored_keys(config: Config) -> dict[str, str]:
    """Source key templates dropped on purpose, with the reason."""
    prefix = ENCODER_PREFIX if config.vocab_size is not None else ""
    return {prefix + k: v for k, v in IGNORED_KEYS.items()}


def convert_fairseq_state_dict(
    state: dict[str, Any], config: Config, *, source: str = "fairseq state dict"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """fairseq ``model`` state dict → (w2v state dict, notices).

    Every key is mapped through :func:`key_table`, dropped as listed in
    :func:`ignored_keys`, or an error naming it; every weight the w2v model
    needs must be present with the shape ``config`` implies. Pure: the input
    is not modified and tensors are not copied.
    """
    table = [(_template_regex(k), k, v) for k, v in key_table(config).items()]
    ignored = [(_template_regex(k, star=True), k) for k in ignored_keys(config)]
    out: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    dropped: set[str] = set()
    unknown: list[str] = []
    for key, value in state.items():
        if not isinstance(key, str):
            unknown.append(repr(key))
            continue
        target = _match(table, key)
        if target is not None:
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{source}: {key} is a {type(value).__name__}, not a tensor")
            if target in out:
                raise CheckpointError(f"{source}: {sources[target]} and {key} both give {target}")
            out[target], sources[target] = value, key
        elif any(rx.fullmatch(key) for rx, _ in ignored):
            dropped.add(key)
        else:
            unknown.append(key)
    if unknown:
        hint = ""
        if any("relative_attention_bias" in k or "grep_linear" in k for k in unknown):
            hint = " (a WavLM checkpoint? use its Hugging Face version, e.g. microsoft/wavlm-base-plus)"
        shown = ", ".join(unknown[:5]) + (
            f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        )
        raise CheckpointError(f"{source}: unknown weight keys: {shown}{hint}")

    expected = expected_state(config)
    g = "encoder.pos_conv_embed.conv.weight_g"
    if g in out and g in expected and out[g].numel() == expected[g].numel():
        # weight_norm(dim=2) keeps g as (1, 1, K); some exports flatten it
        out[g] = out[g].reshape(expected[g].shape)
    proj = "feature_projection.projection"
    if f"{proj}.weight" not in out and config.conv_dim[-1] == config.hidden_size:
        # fairseq builds no post_extract_proj when the conv width equals the model
        # width (wav2vec2 / HuBERT); the identity is exactly what it computes
        ref = out.get("feature_projection.layer_norm.weight")
        dtype = ref.dtype if ref is not None else torch.float32
        out[f"{proj}.weight"] = torch.eye(config.hidden_size, dtype=dtype)
        out[f"{proj}.bias"] = torch.zeros(config.hidden_size, dtype=dtype)
    extra = [k for k in out if k not in expected]
    if extra:
        shown = ", ".join(sources[k] for k in extra[:5])
        raise CheckpointError(
            f"{source}: weights the configured architecture has no place for: {shown} "
            f"(config: {config.num_layers} layers, conv_norm {config.conv_norm!r}, "
            f"pos_conv {config.pos_conv!r}); the checkpoint's config and weights disagree"
        )
    missing = [k for k in expected if k not in out]
    if missing:
        # name the fairseq key the user would look for, not only w2v's
        names = [_source_name(table, k) for k in missing]
        shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        raise CheckpointError(f"{source}: missing weight keys: {shown}")
    check_against(out, expected, source)

    notices = []
    heads = sorted({h for h in PRETRAINING_HEADS if any(_under(k, h) for k in dropped)})
    if heads:
        notices.append(f"{source}: dropped pretraining-only weights: {', '.join(heads)}")
    return out, notices


def _template_regex(template: str, star: bool = False) -> re.Pattern:
    parts = [re.escape(p) for p in template.split("{}")]
    rx = r"(\d+)".join(parts)
    if star:
        rx = rx.replace(r"\*", r".+")
    return re.compile(rx)


def _match(table: list[tuple[re.Pattern, str, str]], key: str) -> str | None:
    for rx, _src, target in table:
        m = rx.fullmatch(key)
        if m:
            return target.format(*m.groups())
    return None


def _source_name(table: list[tuple[re.Pattern, str, str]], target: str) -> str:
    for _rx, src, dst in table:
        m = _template_regex(dst).fullmatch(target)
        if m:
            return f"{src.format(*m.groups())} (w2v {target})"
    return target


def _under(key: str, head: str) -> bool:
    key = key.removeprefix(ENCODER_PREFIX)
    return key == head or key.startswith(head + ".")
