"""The parts of a model that only pretraining uses, kept beside the encoder.

* the mask embedding (transformers' ``masked_spec_embed``, fairseq's ``mask_emb``): the
  vector that replaces masked frames of the projected features (wav2vec 2.0, HuBERT, and
  SpecAugment-style time masking while fine-tuning);
* wav2vec 2.0: the Gumbel vector quantizer of the conv features (the targets),
  ``project_q`` (quantized targets → the comparison space) and ``project_hid``
  (transformer output → the comparison space; fairseq's ``final_proj``);
* HuBERT: ``final_proj`` (transformer output → the comparison space) and one learned
  embedding per cluster label (fairseq's ``label_embs_concat``).

:class:`PretrainingConfig` is their architecture; like a task head's config it travels
beside :class:`~w2v.config.Config`, which stays the encoder's alone. The objectives
themselves (masking, negatives, losses) are :mod:`w2v.train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from w2v.config import Config, from_fields, plain_fields
from w2v.errors import quoted

OBJECTIVES = ("wav2vec2", "hubert", "mask")
"""``mask``: the mask embedding alone (SpecAugment while fine-tuning)."""


@dataclass(frozen=True)
class PretrainingConfig:
    """Architecture of the pretraining parts (:class:`Pretraining`).

    * ``objective``: "wav2vec2" (quantizer + contrastive targets), "hubert" (cluster
      labels) or "mask" (only the mask embedding).
    * ``final_dim``: width of the comparison space (HF ``proj_codevector_dim``, fairseq
      ``final_dim``).
    * wav2vec2: ``num_codevector_groups`` G, ``num_codevectors_per_group`` V,
      ``codevector_dim`` (the quantized vector's width, G groups of ``codevector_dim / G``).
    * HuBERT: ``num_classes`` (clusters per label set), ``untie_final_proj`` (one
      projection per label set).
    """

    objective: str = "wav2vec2"
    final_dim: int = 256
    codevector_dim: int = 256
    num_codevector_groups: int = 2
    num_codevectors_per_group: int = 320
    num_classes: tuple[int, ...] = ()
    untie_final_proj: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {quoted(self.objective)}")
        object.__setattr__(self, "num_classes", tuple(self.num_classes))
        for name in (
            "final_dim", "codevector_dim", "num_codevector_groups", "num_codevectors_per_group",
        ):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 20:
                raise ValueError(f"{name} must be an integer from 1 to {1 << 20}, got {quoted(v)}")
        for v in self.num_classes:
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 20:
                raise ValueError(f"num_classes entries must be positive integers, got {quoted(v)}")
        if self.codevector_dim % self.num_codevector_groups:
            raise ValueError(
                f"codevector_dim {self.codevector_dim} is not divisible by "
                f"num_codevector_groups {self.num_codevector_groups}"
            )
        if self.objective == "hubert" and not self.num_classes:
            raise ValueError("a HuBERT objective needs num_classes (clusters per label set)")
        if not isinstance(self.untie_final_proj, bool):
            raise ValueError("untie_final_proj must be true or false")

    @property
    def num_codevectors(self) -> int:
        """G * V: the codebook entries over all groups."""
        return self.num_codevector_groups * self.num_codevectors_per_group

    def to_dict(self) -> dict[str, Any]:
        return plain_fields(self, ("num_classes",))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainingConfig:
        return from_fields(cls, d, "pretraining config")


class GumbelVectorQuantizer(nn.Module):
    """Conv features (B, T, C) → one codevector per group per frame, concatenated.

    ``weight_proj`` gives logits over V codevectors in each of G groups. Train mode picks
    with the straight-through Gumbel-softmax at ``temperature`` (the forward value a hard
    one-hot, the gradient the soft one's); eval mode takes the argmax. Parameters keep
    transformers' names: ``codevectors`` (1, G*V, dim/G), ``weight_proj`` (G*V, C).
    """

    def __init__(self, in_dim: int, groups: int, per_group: int, dim: int):
        super().__init__()
        self.groups = groups
        self.per_group = per_group
        self.codevectors = nn.Parameter(torch.empty(1, groups * per_group, dim // groups))
        self.weight_proj = nn.Linear(in_dim, groups * per_group)
        self.temperature = 2.0  # decayed during training (w2v.train.gumbel_temperature)
        if self.codevectors.device.type != "meta":
            nn.init.uniform_(self.codevectors)
            nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
            nn.init.zeros_(self.weight_proj.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) → (B*T, G, V) codevector logits."""
        return self.weight_proj(x).reshape(-1, self.groups, self.per_group)

    def forward(
        self, x: torch.Tensor, gumbel_noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, C) → (codevectors (B, T, dim), logits (B*T, G, V), one-hot choice (B*T, G, V)).

        ``gumbel_noise`` (B*T*G, V): the Gumbel(0, 1) samples to use in train mode (default:
        drawn from torch's generator, ``-log(Exp(1))``, the draw ``F.gumbel_softmax`` makes).
        """
        b, t, _ = x.shape
        logits = self.logits(x)  # (N, G, V), N = B*T
        if self.training:
            flat = logits.reshape(-1, self.per_group).float()  # (N*G, V)
            if gumbel_noise is None:
                gumbel_noise = -torch.empty_like(flat).exponential_().log()
            soft = torch.softmax((flat + gumbel_noise) / self.temperature, dim=-1)
            hard = F.one_hot(soft.argmax(-1), self.per_group).to(soft.dtype)
            choice = (hard - soft.detach() + soft).to(logits.dtype)  # straight through
        else:
            choice = F.one_hot(logits.argmax(-1), self.per_group).to(logits.dtype)
        choice = choice.reshape(b * t, self.groups, self.per_group)
        # (N, G, V) one-hot @ (G, V, dim/G) codebook → (N, G, dim/G)
        book = self.codevectors.view(self.groups, self.per_group, -1)
        vectors = torch.einsum("ngv,gvd->ngd", choice, book)
        return vectors.reshape(b, t, -1), logits, choice

    def sample_from_codebook(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random codevector combinations, one codevector per group: (vectors (n, dim),
        indices (n, G)). Each group's index is uniform over its V codevectors, independently,
        which is fairseq's draw (uniform over the V**G combinations). ``generator``: the draw
        (default torch's), made on its device."""
        device = generator.device if generator is not None else self.codevectors.device
        size = (n, self.groups)
        indices = torch.randint(0, self.per_group, size, generator=generator, device=device)
        indices = indices.to(self.codevectors.device)
        book = self.codevectors.view(self.groups, self.per_group, -1)  # (G, V, dim/G)
        groups = torch.arange(self.groups, device=indices.device)
        return book[groups, indices].reshape(n, -1), indices  # (n, G, dim/G) → (n, dim)


class Pretraining(nn.Module):
    """The pretraining parts of ``pcfg`` on an encoder of ``config`` (module docstring)."""

    def __init__(self, pcfg: PretrainingConfig, config: Config):
        super().__init__()
        self.pretraining_config = pcfg
        d = config.hidden_size
        self.masked_spec_embed = nn.Parameter(torch.empty(d))
        if self.masked_spec_embed.device.type != "meta":
            nn.init.uniform_(self.masked_spec_embed)
        self.quantizer = self.project_q = self.project_hid = None
        self.final_proj = self.label_embeddings = None
        if pcfg.objective == "wav2vec2":
            self.quantizer = GumbelVectorQuantizer(
                config.conv_dim[-1],
                pcfg.num_codevector_groups,
                pcfg.num_codevectors_per_group,
                pcfg.codevector_dim,
            )
            self.project_q = nn.Linear(pcfg.codevector_dim, pcfg.final_dim)
            self.project_hid = nn.Linear(d, pcfg.final_dim)
        elif pcfg.objective == "hubert":
            sets = len(pcfg.num_classes) if pcfg.untie_final_proj else 1
            self.final_proj = nn.Linear(d, pcfg.final_dim * sets)
            self.label_embeddings = nn.Parameter(torch.empty(sum(pcfg.num_classes), pcfg.final_dim))
            if self.label_embeddings.device.type != "meta":
                nn.init.uniform_(self.label_embeddings)

    def mask(self, x: torch.Tensor, time_mask: torch.Tensor) -> torch.Tensor:
        """Projected features (B, T, D) with the frames where ``time_mask`` (B, T) is True
        replaced by the mask embedding."""
        return torch.where(time_mask[..., None], self.masked_spec_embed.to(x.dtype), x)
