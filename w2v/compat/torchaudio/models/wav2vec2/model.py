"""torchaudio's ``Wav2Vec2Model`` and its factories, on w2v's modules.

The model is a :class:`w2v.nn.model.Model`; this module gives it torchaudio's face:

* the module tree torchaudio users reach into: ``feature_extractor`` (w2v's conv stack,
  ``conv_layers``), ``encoder`` with ``feature_projection`` and ``transformer``
  (w2v's transformer: ``pos_conv_embed``, ``layer_norm``, ``layers``), ``aux`` (the CTC
  head). These are w2v's own module objects, registered under torchaudio's names: one
  set of weights, one implementation of the math;
* ``state_dict()`` in torchaudio's key names and shapes, and ``load_state_dict`` of
  torchaudio's (``strict=True`` works), both through the key table of
  :mod:`w2v.convert.torchaudio` (state-dict hooks: the weight-norm spelling and
  WavLM's fused q/k/v are the only places the two layouts differ);
* ``forward(waveforms, lengths)`` and ``extract_features(waveforms, lengths, num_layers)``
  with torchaudio's semantics, computed by the w2v model.

Batched numbers follow torchaudio by default (``exact=False``): with ``lengths``, the
GroupNorm of group-norm models takes its statistics over the padded batch, as torchaudio's
does. ``model.exact = True`` gives w2v's exact mode, in which a padded item's output
equals its output alone.

Train mode: the factories' dropout arguments set the w2v model's
:class:`~w2v.config.Regularization`, and a forward pass draws the random numbers torchaudio
draws, in its order, so that one ``torch.manual_seed`` gives the same dropout masks and
dropped layers (two torchaudio quirks are reproduced for that, see :func:`_before_layer`;
``extract_features`` drops no layer, as torchaudio's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from w2v.config import CheckpointInfo, Config, Regularization
from w2v.convert.torchaudio import (
    PRESETS,
    config_from_torchaudio,
    regularization_args,
    rename_to_w2v,
    split_fused,
    to_torchaudio_state_dict,
    torchaudio_key,
)
from w2v.nn.functional import frame_mask
from w2v.nn.model import Model

# Where torchaudio's module tree puts each of w2v's top-level modules: compat key prefix →
# w2v key prefix. The state-dict hooks re-root keys through it, then rename through the
# torchaudio key table.
TREE = (
    ("feature_extractor.", "feature_extractor."),
    ("encoder.feature_projection.", "feature_projection."),
    ("encoder.transformer.", "encoder."),
    ("aux.", "lm_head."),
)


def _reroot(key: str, source: int) -> str | None:
    """``key`` moved from one side of :data:`TREE` (0: compat, 1: w2v) to the other."""
    for pair in TREE:
        if key.startswith(pair[source]):
            return pair[1 - source] + key[len(pair[source]) :]
    return None


class FeatureExtractor(nn.Module):
    """torchaudio's ``model.feature_extractor``: ``conv_layers`` are w2v's conv layers.

    ``forward(x, length)``: waveforms (batch, samples) and valid samples (batch,) or None →
    features (batch, frames, 512) and valid frames (or None)."""

    def __init__(self, model: Model):
        super().__init__()
        self.conv_layers = model.feature_extractor.conv_layers
        self.__dict__["_model"] = model  # not a child: its modules are registered here
        self.exact = False

    def forward(self, x: Tensor, length: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        return self._model.feature_extractor(x, length, self.exact)


class Encoder(nn.Module):
    """torchaudio's ``model.encoder``: ``feature_projection`` and ``transformer`` (w2v's
    projection and transformer modules).

    Called on its own (``encoder(features, lengths)``, ``encoder.extract_features(...)``),
    it runs the same steps as the whole model does after the conv stack."""

    def __init__(self, model: Model):
        super().__init__()
        self.feature_projection = model.feature_projection
        self.transformer = model.encoder
        self.__dict__["_model"] = model
        self.exact = False
        # torchaudio's train-mode quirks, reproduced while a forward pass runs (see _before_layer)
        self._forward_pass = False
        self._layer0_ran = False
        for i, layer in enumerate(model.encoder.layers):
            layer.register_forward_pre_hook(partial(_before_layer, self, i))

    def _layers(
        self, features: Tensor, lengths: Tensor | None, depth: int, layer_drop: bool
    ) -> list[Tensor]:
        model = self._model
        x = self.feature_projection(features)  # (B, T, D)
        valid = key_mask = None
        if lengths is not None:
            valid = frame_mask(lengths, x.shape[1])  # (B, T)
            key_mask = valid[:, None, None, :]
        x = self.transformer.embed(x, valid, self.exact)
        bias = self.transformer.position_bias(x.shape[1])
        out = []
        for layer in self.transformer.layers[:depth]:
            if not (layer_drop and model._skip_layer()):
                x = layer(x, key_mask, bias)
            out.append(x)
        return out

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(batch, frames, 512) conv features → (batch, frames, dim) transformer output."""
        with self.forward_pass():
            x = self._layers(features, lengths, len(self.transformer.layers), True)[-1]
        return self.transformer.finish(x)

    @contextmanager
    def forward_pass(self) -> Iterator[None]:
        """Within: a train-mode forward pass, which draws random numbers as torchaudio's."""
        self._forward_pass, self._layer0_ran = self.training, False
        try:
            yield
        finally:
            self._forward_pass = False

    def extract_features(
        self, features: Tensor, lengths: Tensor | None = None, num_layers: int | None = None
    ) -> list[Tensor]:
        """Outputs of transformer layers 1..num_layers (default all), each (batch, frames, dim)."""
        n = len(self.transformer.layers)
        if num_layers is not None and not 0 < num_layers <= n:
            raise ValueError(f"`num_layers` must be between [1, {n}]")
        return self._layers(features, lengths, n if num_layers is None else num_layers, False)


class Wav2Vec2Model(nn.Module):
    """torchaudio's ``Wav2Vec2Model(feature_extractor, encoder, aux=None)`` on a w2v model.

    Build it with :func:`wav2vec2_model`, :func:`wavlm_model` or a preset; the
    ``feature_extractor`` and ``encoder`` given must come from one of those (they carry the
    w2v model). ``aux``: the module applied to the encoder output (the CTC head), or None.

    ``exact`` (default False): False reproduces torchaudio's batched numbers, True makes
    every padded item's output equal its output alone (w2v's exact mode). ``w2v_model``:
    the underlying :class:`w2v.nn.model.Model` (same weights).
    """

    def __init__(
        self, feature_extractor: nn.Module, encoder: nn.Module, aux: nn.Module | None = None
    ):
        super().__init__()
        if not (
            isinstance(feature_extractor, FeatureExtractor)
            and isinstance(encoder, Encoder)
            and feature_extractor._model is encoder._model
        ):
            raise TypeError(
                "Wav2Vec2Model takes the feature_extractor and encoder of a model built by "
                "w2v.compat.torchaudio.models (wav2vec2_model, wavlm_model or a preset)"
            )
        model = encoder._model
        self.__dict__["w2v_model"] = model  # not a child: its modules are registered below
        self.feature_extractor = feature_extractor
        self.encoder = encoder
        self.aux = aux
        self.register_state_dict_post_hook(_save_torchaudio_keys)
        self.register_load_state_dict_pre_hook(_load_torchaudio_keys)
        self.register_load_state_dict_post_hook(_name_missing_keys)
        self._load_prefix = ""

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "aux":  # a new head (fine-tuning) is the w2v model's CTC head too
            model = self.w2v_model
            model.lm_head = value
            vocab = value.out_features if isinstance(value, nn.Linear) else None
            model.config = dataclasses.replace(model.config, vocab_size=vocab)

    # ------------------------------------------------------------------ settings
    @property
    def exact(self) -> bool:
        return self.encoder.exact

    @exact.setter
    def exact(self, value: bool) -> None:
        self.feature_extractor.exact = self.encoder.exact = bool(value)

    @property
    def config(self) -> Config:
        return self.w2v_model.config

    def train(self, mode: bool = True) -> Wav2Vec2Model:
        super().train(mode)
        self.w2v_model.training = mode  # layer drop reads the w2v model's own flag
        return self

    # ------------------------------------------------------------------ computation
    def forward(
        self, waveforms: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(batch, samples) → encoder output, or ``aux`` of it (batch, frames, dim or
        labels), and valid frames per item (None without ``lengths``)."""
        with self.encoder.forward_pass():
            return self.w2v_model(waveforms, lengths, exact=self.exact)

    def extract_features(
        self,
        waveforms: Tensor,
        lengths: Tensor | None = None,
        num_layers: int | None = None,
    ) -> tuple[list[Tensor], Tensor | None]:
        """Outputs of transformer layers 1..num_layers (default all; no layer past it is
        computed), each (batch, frames, dim), never the final LayerNorm of pre-LN models;
        and valid frames per item. In train mode no layer is dropped, as in torchaudio."""
        model = self.w2v_model
        n = model.config.num_layers
        if num_layers is not None and not 0 < num_layers <= n:
            raise ValueError(f"`num_layers` must be between [1, {n}]")
        reg = model.regularization
        if not (self.training and reg.layerdrop):
            return model.extract_features(waveforms, lengths, num_layers, exact=self.exact)
        model.set_regularization(dataclasses.replace(reg, layerdrop=0.0))
        try:
            return model.extract_features(waveforms, lengths, num_layers, exact=self.exact)
        finally:
            model.set_regularization(reg)


def _before_layer(encoder: Encoder, index: int, layer: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook of transformer layer ``index``: torchaudio's train-mode forward pass.

    * torchaudio draws one uniform number per layer for layer drop in train mode even when
      the probability is 0; w2v draws none then, so the draw is made here, keeping the
      dropout masks that follow the same as torchaudio's under one seed.
    * torchaudio's WavLM computes the relative position bias inside layer 0 and hands it
      on; when layer drop skips layer 0, the later layers get no position bias at all.
    """
    if not encoder._forward_pass:
        return None
    if encoder._model.regularization.layerdrop == 0:
        torch.rand(1)
    if index == 0:
        encoder._layer0_ran = True
        return None
    if not encoder._layer0_ran and len(args) > 2 and args[2] is not None:
        return (*args[:2], None, *args[3:])
    return None


def _save_torchaudio_keys(module: Wav2Vec2Model, state: dict, prefix: str, _meta: Any) -> None:
    """state_dict post-hook: this model's keys (compat tree) → torchaudio's."""
    mine = {}
    for key in [k for k in state if k.startswith(prefix)]:
        w2v_key = _reroot(key[len(prefix) :], 0)
        if w2v_key is not None:
            mine[w2v_key] = state.pop(key)
    for key, value in to_torchaudio_state_dict(mine, module.config).items():
        state[prefix + key] = value


def _load_torchaudio_keys(module: Wav2Vec2Model, state: dict, prefix: str, *_args: Any) -> None:
    """load_state_dict pre-hook: torchaudio's keys → this model's (compat tree). Keys the
    table does not know are left alone, for load_state_dict to report."""
    module._load_prefix = prefix
    config = module.config
    theirs = {k[len(prefix) :]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
    for key, value in split_fused(theirs, "state_dict").items():
        w2v_key = rename_to_w2v(key, config)
        compat_key = None if w2v_key is None else _reroot(w2v_key, 1)
        state[prefix + (compat_key or key)] = value


def _name_missing_keys(module: Wav2Vec2Model, incompatible: Any) -> None:
    """load_state_dict post-hook: missing keys named as torchaudio names them."""
    prefix, missing = module._load_prefix, incompatible.missing_keys
    names = []
    for key in missing:
        w2v_key = _reroot(key[len(prefix) :], 0) if key.startswith(prefix) else None
        named = None if w2v_key is None else torchaudio_key(w2v_key, module.config)
        name = key if named is None else prefix + named[0]
        if name not in names:
            names.append(name)
    missing[:] = names


# ----------------------------------------------------------------------------- factories
def _build(
    model_type: str, params: dict[str, Any], family: str, exact: bool = False
) -> Wav2Vec2Model:
    config = config_from_torchaudio(params, model_type)
    reg = Regularization(**regularization_args(params))
    model = Model(
        dataclasses.replace(config, vocab_size=None),
        CheckpointInfo(family=family),
        regularization=reg,
    )
    aux = None if config.vocab_size is None else nn.Linear(config.hidden_size, config.vocab_size)
    out = Wav2Vec2Model(FeatureExtractor(model), Encoder(model), aux)
    out.exact = exact
    return out


def wav2vec2_model(
    extractor_mode: str,
    extractor_conv_layer_config: list[tuple[int, int, int]] | None,
    extractor_conv_bias: bool,
    encoder_embed_dim: int,
    encoder_projection_dropout: float,
    encoder_pos_conv_kernel: int,
    encoder_pos_conv_groups: int,
    encoder_num_layers: int,
    encoder_num_heads: int,
    encoder_attention_dropout: float,
    encoder_ff_interm_features: int,
    encoder_ff_interm_dropout: float,
    encoder_dropout: float,
    encoder_layer_norm_first: bool,
    encoder_layer_drop: float,
    aux_num_out: int | None,
) -> Wav2Vec2Model:
    """torchaudio's ``wav2vec2_model``: a custom wav2vec 2.0 / HuBERT model (see
    :func:`w2v.convert.torchaudio.config_from_torchaudio` for how each argument maps)."""
    return _build("Wav2Vec2", dict(locals()), "wav2vec2")


def wavlm_model(
    extractor_mode: str,
    extractor_conv_layer_config: list[tuple[int, int, int]] | None,
    extractor_conv_bias: bool,
    encoder_embed_dim: int,
    encoder_projection_dropout: float,
    encoder_pos_conv_kernel: int,
    encoder_pos_conv_groups: int,
    encoder_num_layers: int,
    encoder_num_heads: int,
    encoder_num_buckets: int,
    encoder_max_distance: int,
    encoder_attention_dropout: float,
    encoder_ff_interm_features: int,
    encoder_ff_interm_dropout: float,
    encoder_dropout: float,
    encoder_layer_norm_first: bool,
    encoder_layer_drop: float,
    aux_num_out: int | None,
) -> Wav2Vec2Model:
    """torchaudio's ``wavlm_model``: a custom WavLM model."""
    return _build("WavLM", dict(locals()), "wavlm")


def _preset(name: str, dropouts: dict[str, Any]) -> Wav2Vec2Model:
    p = PRESETS[name]
    return _build(p.model_type, {**p.params, **dropouts}, p.family)


def wav2vec2_base(
    encoder_projection_dropout: float = 0.1,
    encoder_attention_dropout: float = 0.1,
    encoder_ff_interm_dropout: float = 0.1,
    encoder_dropout: float = 0.1,
    encoder_layer_drop: float = 0.1,
    aux_num_out: int | None = None,
) -> Wav2Vec2Model:
    """torchaudio's ``wav2vec2_base``: 768 wide, 12 layers, group-norm conv, post-LN."""
    return _preset("wav2vec2_base", locals())


def wav2vec2_large(
    encoder_projection_dropout: float = 0.1,
    encoder_attention_dropout: float = 0.1,
    encoder_ff_interm_dropout: float = 0.1,
    encoder_dropout: float = 0.1,
    encoder_layer_drop: float = 0.1,
    aux_num_out: int | None = None,
) -> Wav2Vec2Model:
    """torchaudio's ``wav2vec2_large``: 1024 wide, 24 layers, group-norm conv, post-LN."""
    return _preset("wav2vec2_large", locals())


def wav2vec2_large_lv60k(
    encoder_projection_dropout: float = 0.1,
    encoder_attention_dropout: float = 0.0,
    encoder_ff_interm_dropout: float = 0.1,
    encoder_dropout: float = 0.0,
    encoder_layer_drop: float = 0.1,
    aux_num_out: int | None = None,
) -> Wav2Vec2Model:
    """torchaudio's ``wav2vec2_large_lv60k``: 1024 wide, 24 layers, layer-norm conv with
    bias, pre-LN."""
    return _preset("wav2vec2_large_lv60k", locals())


def wav2vec2_xlsr_300m(
    encoder_projection_dropout: float = 0.0,
    encoder_attention_dropout: float = 0.0,
    encoder_ff_interm_dropout: float = 0.0,
    encoder_dropout: float = 0.0,
    encoder_layer_drop: float = 0.0,
    aux_num_out: int | None = None,
) -> Wav2Vec2Model:
    """torchaudio's ``wav2vec2_xlsr_300m`` (the architecture of ``wav2vec2_large_lv60k``)."""
    return _preset("wav2vec2_xlsr_300m", locals())


def wav2vec2_xlsr_1b(
    encoder_projection_dropout: float = 0.1,
    encoder_attention_dropout: float = 0.0,
    encoder_ff_interm_dropout: float = 0.0,
    encoder_dropout: float = 0.0,
    encoder_layer_drop: float = 0.0,
    aux_num_out: int | None = None,
) -> Wav2Vec2Model:
    """torchaudio's ``wav2vec2_xlsr_1b``: 1280 wide, 48 layers."""
    return _preset("wav2vec2_xlsr_1b", locals())


def wav2vec2_xlsr_2b(
    encoder_projection_dropout: float = 0.1,
    encoder_attention_dropout: float = 0.0,
    encoder_ff_interm_dropout: float = 0.0,
    encoder_dropout: float = 0.0,
    encoder_layer_drop: float = 0.0,
    aux_num_out: int | None = None,
) -> Wav2Vec2Model:
    """torchaudio's ``wav2vec2_xlsr_2b``: 1920 wide, 48 layers."""
    return _preset("wav2vec2_xlsr_2b", locals())


def hubert_base(
    encoder_projection_dropout: float = 0.1,
    encoder_attention_dropout: float = 0.1,
    encoder_ff_interm_dropout: float = 0.0,
    encoder_dropout: float = 0.1,
    encoder_layer_drop: float = 0.05,
    aux_num_out: int | None = None,
) -> Wav2Vec2Model:
    """torchaudio's ``hubert_base`` (the architecture of ``wav2vec2_base``)."""
    return _preset("hubert_base", locals())


def hubert_large(
    encoder_projection_dropout: float = 0.0,
    encoder_attention_dropout: float = 0.0,
    encoder_ff_interm_dropout: float = 0.0,
    encoder_dropout: float = 0.0,
    encoder_layer_drop: float = 0.0,
    aux_num_out: int | None = None,
) -> Wav2Vec2Model:
    """torchaudio's ``hubert_large``: 1024 wide, 24 layers, layer-norm conv, pre-LN."""
    return _preset("hubert_large", locals())


def hubert_xlarge(
    encoder_projection_dropout: float = 0.0,
    encoder_attention_dropout: float = 0.0,
    encoder_ff_interm_dropout: float = 0.0,
    encoder_dropout: float = 0.0,
    encoder_layer_drop: float = 0.0,
    aux_num_out: int | None = None,
) -> Wav2Vec2Model:
    """torchaudio's ``hubert_xlarge``: 1280 wide, 48 layers, layer-norm conv, pre-LN."""
    return _preset("hubert_xlarge", locals())


def wavlm_base(
    encoder_projection_dropout: float = 0.1,
    encoder_attention_dropout: float = 0.1,
    encoder_ff_interm_dropout: float = 0.1,
    encoder_dropout: float = 0.1,
    encoder_layer_drop: float = 0.1,
    aux_num_out: int | None = None,
) -> Wav2Vec2Model:
    """torchaudio's ``wavlm_base``: 768 wide, 12 layers, 320 relative-position buckets."""
    return _preset("wavlm_base", locals())


def wavlm_large(
    encoder_projection_dropout: float = 0.1,
    encoder_attention_dropout: float = 0.1,
    encoder_ff_interm_dropout: float = 0.0,
    encoder_dropout: float = 0.1,
    encoder_layer_drop: float = 0.1,
    aux_num_out: int | None = None,
) -> Wav2Vec2Model:
    """torchaudio's ``wavlm_large``: 1024 wide, 24 layers, layer-norm conv, pre-LN."""
    return _preset("wavlm_large", locals())


def from_w2v(model: Model) -> Wav2Vec2Model:
    """A w2v model (any checkpoint w2v reads, CTC head included) with torchaudio's face:
    the same module objects and weights, no copy. Its task head, if any, is not used."""
    head = model.lm_head
    out = Wav2Vec2Model(FeatureExtractor(model), Encoder(model), head)
    out.train(model.training)
    return out


PRESET_FACTORIES: dict[str, Any] = {
    "wav2vec2_base": wav2vec2_base,
    "wav2vec2_large": wav2vec2_large,
    "wav2vec2_large_lv60k": wav2vec2_large_lv60k,
    "wav2vec2_xlsr_300m": wav2vec2_xlsr_300m,
    "wav2vec2_xlsr_1b": wav2vec2_xlsr_1b,
    "wav2vec2_xlsr_2b": wav2vec2_xlsr_2b,
    "hubert_base": hubert_base,
    "hubert_large": hubert_large,
    "hubert_xlarge": hubert_xlarge,
    "wavlm_base": wavlm_base,
    "wavlm_large": wavlm_large,
}
"""The presets by name (the names of :data:`w2v.convert.torchaudio.PRESETS`)."""

__all__: Sequence[str] = (
    "Wav2Vec2Model",
    "wav2vec2_model",
    "wavlm_model",
    *PRESET_FACTORIES,
)
