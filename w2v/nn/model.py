"""The whole encoder: conv features → projection → transformer, plus an optional head: CTC
(``lm_head``) or a task head of :mod:`w2v.nn.heads` (``task_head``)."""

from __future__ import annotations

import dataclasses
import operator
import warnings
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from w2v.config import SAMPLE_RATE, CheckpointInfo, Config, Regularization
from w2v.nn.encoder import Encoder, dropout
from w2v.nn.fast.derived import release
from w2v.nn.fast.linear import linear
from w2v.nn.feature_encoder import FeatureEncoder, scale_grad
from w2v.nn.functional import frame_mask
from w2v.nn.heads import Head, HeadConfig, build_head, run_head
from w2v.nn.norm import LayerNorm
from w2v.nn.pretraining import Pretraining, PretrainingConfig


class FeatureProjection(nn.Module):
    """[LayerNorm(512) →] Linear(512, D)."""

    def __init__(self, config: Config):
        super().__init__()
        c = config.conv_dim[-1]
        self.layer_norm = (
            LayerNorm(c, eps=config.layer_norm_eps) if config.feat_proj_layer_norm else None
        )
        self.projection = nn.Linear(c, config.hidden_size)
        self.dropout = 0.0  # after the projection, in train mode (Regularization)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) conv features → the projection's input (the quantizer's input too)."""
        return x if self.layer_norm is None else self.layer_norm(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Output of :meth:`norm` (B, T, C) → (B, T, D)."""
        return dropout(linear(self.projection, x), self.dropout, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.norm(x))


class Encoded(NamedTuple):
    """What :meth:`Model.encode` returns (the pretraining objectives read all of it).

    * ``output`` (B, T, D): the model output (``forward``'s, before any CTC head);
    * ``conv_features`` (B, T, C): the conv encoder's output (fairseq's feature penalty);
    * ``features`` (B, T, C): the feature projection's input, its LayerNorm applied
      (transformers' ``extract_features``, the quantizer's input);
    * ``frame_lengths`` (B,): valid frames per item, or None without lengths.
    """

    output: torch.Tensor
    conv_features: torch.Tensor
    features: torch.Tensor
    frame_lengths: torch.Tensor | None


class Model(nn.Module):
    """A wav2vec 2.0 family encoder built from a :class:`~w2v.config.Config`.

    Layer indices: 0 is the transformer input (HF ``hidden_states[0]``), k the
    output of transformer layer k, before any final LayerNorm (HF
    ``hidden_states[k]``). ``forward`` returns the model output, which for
    pre-LN models is the encoder LayerNorm of layer N's output.

    ``info`` (:class:`~w2v.config.CheckpointInfo`) is what the checkpoint says beyond
    the architecture; ``normalize``, ``vocab`` and ``family`` read it.

    ``head``: the task head of a fine-tuned checkpoint (:class:`~w2v.nn.heads.HeadConfig`),
    built as ``task_head`` (state-dict keys ``task_head.*``; not ``head``, which is the
    method that runs it). ``unused``: names of the checkpoint's weights outside the backbone
    that w2v keeps but does not run, for messages only. ``pretraining``: the parts only
    pretraining uses (:class:`~w2v.nn.pretraining.PretrainingConfig`: mask embedding,
    quantizer and projections, HuBERT label embeddings), built as ``pretraining``.

    Training: ``regularization`` (:class:`~w2v.config.Regularization`, read back as
    :attr:`regularization`, changed with :meth:`set_regularization`) acts in train mode
    only; so do ``feature_grad_mult`` (the conv features' gradient scale, fairseq's
    option) and ``gradient_checkpointing`` (recompute each transformer layer in the
    backward pass instead of keeping its activations). :meth:`freeze_feature_encoder`
    stops the conv encoder's parameters from training.
    """

    def __init__(
        self,
        config: Config,
        info: CheckpointInfo | None = None,
        head: HeadConfig | None = None,
        *,
        unused: Sequence[str] = (),
        regularization: Regularization | None = None,
        pretraining: PretrainingConfig | None = None,
    ):
        super().__init__()
        self.config = config
        self.info = info or CheckpointInfo()
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config)
        self.encoder = Encoder(config)
        self.lm_head = (
            nn.Linear(config.hidden_size, config.vocab_size) if config.vocab_size else None
        )
        self.task_head: Head | None = None if head is None else build_head(head, config)
        self.unused = tuple(unused)
        self.pretraining: Pretraining | None = None
        if pretraining is not None:
            self.pretraining = Pretraining(pretraining, config)
        self.feature_grad_mult = 1.0
        self.gradient_checkpointing = False
        self.set_regularization(regularization or Regularization())

    # ------------------------------------------------------------------ training
    @property
    def regularization(self) -> Regularization:
        """The train-mode dropouts and layer drop (:class:`~w2v.config.Regularization`)."""
        return self._regularization

    def set_regularization(self, regularization: Regularization) -> Model:
        """Use ``regularization`` from now on (it acts in train mode only). Returns self."""
        if not isinstance(regularization, Regularization):
            raise TypeError(
                f"regularization must be a w2v.config.Regularization, got "
                f"{type(regularization).__name__}"
            )
        r = regularization
        self._regularization = r
        self.feature_projection.dropout = r.feat_proj_dropout
        self.encoder.hidden_dropout = r.hidden_dropout
        for layer in self.encoder.layers:
            layer.hidden_dropout = r.hidden_dropout
            layer.feed_forward.hidden_dropout = r.hidden_dropout
            layer.feed_forward.activation_dropout = r.activation_dropout
            layer.attention.dropout = r.attention_dropout
        return self

    def add_pretraining(self, pretraining: PretrainingConfig) -> Model:
        """Give the model freshly initialised pretraining parts of ``pretraining`` (replacing
        any it has), on its device and in its dtype. Returns self."""
        p = self.feature_projection.projection.weight
        self.pretraining = Pretraining(pretraining, self.config).to(device=p.device, dtype=p.dtype)
        return self

    def freeze_feature_encoder(self) -> Model:
        """Stop training the conv feature encoder (its parameters get no gradient). Returns
        self."""
        for p in self.feature_extractor.parameters():
            p.requires_grad_(False)
        return self

    def _skip_layer(self) -> bool:
        """One layer-drop draw: whether to skip the next layer (train mode only).

        One ``torch.rand([])`` from the default CPU generator per layer, drawn before the
        layer runs, as transformers and torchaudio do, so that with one seed they skip the
        same layers and their dropout masks stay aligned. (transformers' WavLM alone never
        draws for its first layer; torchaudio's does, as w2v does.)
        """
        p = self._regularization.layerdrop
        return self.training and p > 0 and bool(torch.rand([]) < p)

    # ------------------------------------------------------------------ checkpoint info
    @property
    def normalize(self) -> bool:
        """Whether inputs should be normalised per utterance (zero mean, unit variance)."""
        return self.info.normalize

    @normalize.setter
    def normalize(self, value: bool) -> None:
        # for checkpoints that do not say (no preprocessor_config.json)
        self.info = dataclasses.replace(self.info, normalize=bool(value))

    @property
    def vocab(self) -> list[str] | None:
        """The CTC head's output symbols, when the checkpoint names them."""
        return None if self.info.vocab is None else list(self.info.vocab)

    @property
    def family(self) -> str:
        return self.info.family

    # ------------------------------------------------------------------ heads
    @property
    def head_kind(self) -> str | None:
        """The head :meth:`head` runs: a :data:`w2v.nn.heads.KINDS` name, ``"ctc"``, or None."""
        if self.task_head is not None:
            return self.task_head.head_config.kind
        return "ctc" if self.lm_head is not None else None

    @property
    def id2label(self) -> dict[int, str] | None:
        """Label id → name of the task head's classes, when the checkpoint names them."""
        return None if self.task_head is None else self.task_head.head_config.id2label

    def head(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """The head's outputs for (batch, samples) at 16 kHz with ``lengths`` (batch,) valid
        samples: ``"logits"`` (batch, labels), or per frame (batch, frames, labels) for
        frame classification and CTC (vocab), plus ``"embeddings"`` (batch, dim) for
        x-vector. See :func:`w2v.nn.heads.run_head`; ValueError when there is no head."""
        return run_head(self, self.task_head, waveforms, lengths)

    # ------------------------------------------------------------------ inputs
    def _check_input(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not isinstance(waveforms, torch.Tensor):
            raise TypeError(
                f"waveforms must be a torch.Tensor (batch, samples), got {type(waveforms).__name__}"
            )
        if waveforms.is_complex():  # casting would drop the imaginary part without a word
            raise TypeError(f"waveforms must be real, got {waveforms.dtype}")
        if waveforms.dim() == 1:
            waveforms = waveforms[None]
        if waveforms.dim() != 2:
            raise ValueError(
                f"waveforms must be (batch, samples), got shape {tuple(waveforms.shape)}"
            )
        if not waveforms.is_floating_point():
            raise ValueError(f"waveforms must be floating point, got {waveforms.dtype}")
        if waveforms.shape[0] == 0:
            raise ValueError("waveforms holds no items (batch size 0); give at least one")
        minimum = self.config.receptive_field
        if waveforms.shape[-1] < minimum:
            raise ValueError(
                f"input has {waveforms.shape[-1]} samples; the model needs at least {minimum} "
                f"({minimum / SAMPLE_RATE * 1000:.0f} ms at 16 kHz)"
            )
        if lengths is None:
            return waveforms, None
        lengths = torch.as_tensor(lengths, device=waveforms.device)
        if lengths.shape != waveforms.shape[:1]:
            raise ValueError(
                f"lengths must have shape ({waveforms.shape[0]},), got {tuple(lengths.shape)}"
            )
        if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
            # .long() would truncate 1599.7 to 1599 and read True as 1
            raise TypeError(f"lengths must be integers (samples per item), got {lengths.dtype}")
        lengths = lengths.long()
        # value checks are skipped while tracing so that forward stays exportable
        if not torch.compiler.is_compiling():
            short = (lengths < minimum).nonzero().flatten().tolist()
            if short:
                raise ValueError(
                    f"batch items {short} are shorter than {minimum} samples, the minimum input "
                    f"({minimum / SAMPLE_RATE * 1000:.0f} ms at 16 kHz)"
                )
            if bool((lengths > waveforms.shape[-1]).any()):
                raise ValueError(
                    f"lengths exceed the padded length {waveforms.shape[-1]}: {lengths.tolist()}"
                )
        return waveforms, lengths

    # ------------------------------------------------------------------ stages
    def _features(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None, exact: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """→ layer-1 input (B, T, D), valid frames (B,), key mask (B, 1, 1, T)."""
        x, frame_lengths, key_mask, _, _ = self._stem(waveforms, lengths, exact)
        return x, frame_lengths, key_mask

    def _stem(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None,
        exact: bool,
        time_mask: torch.Tensor | None = None,
        feature_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """:meth:`_features`, and the conv features (B, T, C) and their normed form (B, T, C).

        ``time_mask`` (B, T) bool: frames replaced by the mask embedding after the projection
        (and its dropout); ``feature_mask`` (B, D) bool: channels set to 0 on every frame
        (SpecAugment's feature masking), both as transformers applies them.
        """
        conv, frame_lengths = self._conv_features(waveforms, lengths, exact)  # (B, T, C)
        normed = self.feature_projection.norm(conv)
        x = self.feature_projection.project(normed)  # (B, T, D)
        if time_mask is not None:
            if self.pretraining is None:
                raise ValueError(
                    "time masking needs a mask embedding, and this model has none; give it "
                    "one with model.add_pretraining(PretrainingConfig(objective='mask'))"
                )
            x = self.pretraining.mask(x, time_mask)
        if feature_mask is not None:
            x = x.masked_fill(feature_mask[:, None, :], 0.0)
        valid = key_mask = None
        if frame_lengths is not None:
            valid = frame_mask(frame_lengths, x.shape[1])  # (B, T)
            key_mask = valid[:, None, None, :]
        x = self.encoder.embed(x, valid, exact)
        return x, frame_lengths, key_mask, conv, normed

    def _conv_features(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None, exact: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Conv features (B, T, C), their gradient scaled by ``feature_grad_mult`` in train
        mode (0: computed without a graph, as fairseq does)."""
        mult = self.feature_grad_mult if self.training else 1.0
        if mult == 0.0:
            with torch.no_grad():
                return self.feature_extractor(waveforms, lengths, exact)
        feats, frame_lengths = self.feature_extractor(waveforms, lengths, exact)
        return scale_grad(feats, mult), frame_lengths

    def _layer(
        self,
        layer: nn.Module,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """One transformer layer, recomputed in the backward pass under gradient
        checkpointing (its random numbers replayed, so the gradients are unchanged)."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, x, key_mask, bias, use_reentrant=False)
        return layer(x, key_mask, bias)

    def _run(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None,
        depth: int,
        keep: set[int],
        exact: bool,
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """Run layers 1..depth; return the states whose index is in ``keep`` and the last one."""
        waveforms, lengths = self._check_input(waveforms, lengths)
        return self._layers(waveforms, lengths, depth, frozenset(keep), exact)

    def _layers(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None,
        depth: int,
        keep: frozenset[int],
        exact: bool,
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        # the part that :meth:`compile` hands to torch.compile; input checks stay eager
        x, frame_lengths, key_mask = self._features(waveforms, lengths, exact)
        states, x = self._transformer(x, key_mask, depth, keep)
        return states, x, frame_lengths

    def _transformer(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, depth: int, keep: frozenset[int]
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Layers 1..depth on the layer-1 input x (B, T, D): the states whose index is in
        ``keep``, and the last one."""
        states = {0: x} if 0 in keep else {}
        bias = self.encoder.position_bias(x.shape[1]) if depth > 0 else None
        for i, layer in enumerate(self.encoder.layers[:depth], start=1):
            # a layer skipped by layer drop (train mode) passes its input on: state i is
            # then state i - 1, so every index asked for is returned
            if not self._skip_layer():
                x = self._layer(layer, x, key_mask, bias)
            if i in keep:
                states[i] = x
        return states, x

    # ------------------------------------------------------------------ public
    def encode(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None = None,
        *,
        time_mask: torch.Tensor | None = None,
        feature_mask: torch.Tensor | None = None,
        exact: bool = True,
    ) -> Encoded:
        """The whole model with masking, for training objectives (:class:`Encoded`).

        ``time_mask`` (batch, frames) bool: frames replaced by the mask embedding (needs
        pretraining parts, see :meth:`add_pretraining`); ``feature_mask`` (batch, dim)
        bool: channels zeroed on every frame. Without masks, ``output`` equals
        :meth:`forward`'s output before any CTC head.
        """
        waveforms, lengths = self._check_input(waveforms, lengths)
        x, frame_lengths, key_mask, conv, normed = self._stem(
            waveforms, lengths, exact, time_mask, feature_mask
        )
        _, x = self._transformer(x, key_mask, self.config.num_layers, frozenset())
        return Encoded(self.encoder.finish(x), conv, normed, frame_lengths)

    def _apply(self, fn, recurse=True):
        # .to(), .cuda(), .double() and the like: the forms derived from the old weights
        # (w2v.nn.fast.derived) are dropped before the weights move
        for module in self.modules():
            release(module)
        return super()._apply(fn, recurse)

    def compile(self, **kwargs) -> Model:
        """Compile the computation with :func:`torch.compile` (``dynamic=True`` by default,
        so new input lengths do not recompile); input checks stay eager. Returns self.

        On a CPU this warns: the CPU fast paths (:mod:`w2v.nn.fast`) run eagerly only, so
        the compiled model computes the plain forms, which on our benchmark CPU made
        wav2vec2-base 0.6x as fast as eager in fp32 and no faster in bf16
        (bench/RESULTS.md). Compiling pays on a GPU."""
        if any(p.device.type == "cpu" for p in self.parameters()):
            warnings.warn(
                "torch.compile on a CPU is slower than w2v's eager fast paths (wav2vec2-base:"
                " 0.6x in fp32, 1.0x in bf16); leave compile off on a CPU",
                UserWarning,
                stacklevel=2,
            )
        kwargs.setdefault("dynamic", True)
        self._layers = torch.compile(self._layers, **kwargs)
        return self

    def resolve_layers(self, layers: Sequence[int] | None) -> list[int]:
        """Layer indices in 0..N with negatives counted from the end (-1 = N); see
        :func:`layer_indices`."""
        return layer_indices(layers, self.config.num_layers)

    def hidden_states(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None = None,
        layers: Sequence[int] | None = None,
        *,
        exact: bool = True,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """States at the requested layer indices, computing no layer past the deepest.

        waveforms: (batch, samples) float at 16 kHz, right-padded; lengths:
        (batch,) valid samples per item. layers: indices in 0..N (0 = transformer
        input, k = output of layer k; negatives count from the end), default all.
        Returns a list of (batch, frames, dim) in the order asked, and valid
        frames per item (None without ``lengths``). ``exact=False`` reproduces
        the reference implementations' batched numbers (padding leaks into the
        statistics) instead of matching each item run alone.
        """
        idx = self.resolve_layers(layers)
        states, _, frame_lengths = self._run(
            waveforms, lengths, max(idx, default=0), set(idx), exact
        )
        return [states[i] for i in idx], frame_lengths

    def extract_features(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None = None,
        num_layers: int | None = None,
        *,
        exact: bool = True,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Outputs of transformer layers 1..num_layers (default all), each (batch, frames, dim).

        Element i equals transformers' ``hidden_states[i + 1]`` and torchaudio's
        ``extract_features()[0][i]``; no layer past ``num_layers`` is computed.
        Returns them and the valid frames per item (None without ``lengths``).
        """
        n = self.config.num_layers if num_layers is None else layer_index(num_layers, "num_layers")
        if not 1 <= n <= self.config.num_layers:
            raise ValueError(f"num_layers must be in 1..{self.config.num_layers}, got {num_layers}")
        return self.hidden_states(waveforms, lengths, range(1, n + 1), exact=exact)

    def forward(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None = None,
        *,
        exact: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(batch, samples) → model output (batch, frames, dim), or CTC logits
        (batch, frames, vocab) when the model has a CTC head; and valid frames per item.

        The output equals transformers' ``last_hidden_state`` (or ``logits``).
        """
        _, x, frame_lengths = self._run(waveforms, lengths, self.config.num_layers, set(), exact)
        x = self.encoder.finish(x)
        if self.lm_head is not None:
            x = self.lm_head(x)
        return x, frame_lengths


def layer_indices(layers: Sequence[int] | None, num_layers: int) -> list[int]:
    """The rule behind :meth:`Model.resolve_layers` for a model of ``num_layers`` layers:
    indices in ``0..num_layers`` (0 = transformer input, k = output of layer k), negatives
    counted from the end (-1 = the last layer), in the order given; None means all.

    Raises ValueError naming the valid range for an index out of range, and TypeError when
    ``layers`` is not a sequence of integers (a string, a float, a bool).
    """
    n = num_layers
    if layers is None:
        return list(range(n + 1))
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        # "12" would otherwise be read as layers 1 and 2
        raise TypeError(
            f"layers must be a sequence of integer indices or None, got {type(layers).__name__} "
            f"{layers!r:.40}"
        )
    out = []
    for i in layers:
        i = layer_index(i)
        j = i + (n + 1 if i < 0 else 0)
        if not 0 <= j <= n:
            raise ValueError(
                f"layer {i} is out of range for this {n}-layer model; valid layers are 0..{n} "
                f"(0 = transformer input, {n} = last layer; -{n + 1}..-1 count from the end)"
            )
        out.append(j)
    return out


def layer_index(i: object, what: str = "layer index") -> int:
    """``i`` as an int: a Python or numpy integer, or an integer 0-d tensor. TypeError for
    anything else, floats and bools included (``int(1.7)`` would quietly give layer 1)."""
    if isinstance(i, bool) or (isinstance(i, torch.Tensor) and i.dtype == torch.bool):
        raise TypeError(f"{what} must be an integer, got a bool ({i!r})")
    try:
        return operator.index(i)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {type(i).__name__} {i!r:.40}") from None
