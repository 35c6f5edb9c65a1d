"""The training objectives: wav2vec 2.0's contrastive + diversity loss, HuBERT's masked
prediction, and CTC. Each returns its parts and diagnostics (0-dim tensors) so that a
collapsing codebook, a trivial task or a NaN shows in the logs.

wav2vec 2.0, two styles that differ only where the references differ:

* ``"hf"`` (transformers' ``Wav2Vec2ForPreTraining``): every frame is quantized; the
  codebook perplexity is taken over the masked frames, from the softmax of the logits in
  train mode and from the chosen codevectors in eval mode;
  ``loss = contrastive + diversity_weight * diversity``.
* ``"fairseq"`` (fairseq's ``Wav2Vec2Model`` + ``Wav2vecCriterion``): only masked frames
  are quantized; the diversity term uses the softmax perplexity ("prob_perplexity", with
  fairseq's ``log(p + 1e-7)``) in either mode; the feature penalty, the mean square of
  the conv features, joins the loss:
  ``loss = contrastive + diversity_weight * diversity + feature_penalty_weight * penalty``
  (fairseq's ``loss_weights``, base: 0.1 and 10).

In both, ``diversity = (G*V - perplexity) / (G*V) * M`` and ``feature_penalty`` (fairseq)
``= mean(conv_features ** 2) * M`` for ``M`` masked frames: sums over frames, as the
contrastive loss is, so the weights mean what they mean in the references.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from w2v.config import num_frames
from w2v.nn.encoder import dropout
from w2v.nn.functional import frame_mask
from w2v.nn.heads.ctc import blank_index
from w2v.nn.model import Model
from w2v.nn.pretraining import Pretraining, PretrainingConfig

STYLES = ("hf", "fairseq")
_FAIRSEQ_EPS = 1e-7  # fairseq's perplexities take log(p + 1e-7)


def _parts(model: Model, objective: str) -> Pretraining:
    parts = model.pretraining
    if parts is None or parts.pretraining_config.objective != objective:
        have = "none" if parts is None else parts.pretraining_config.objective
        raise ValueError(
            f"the {objective} loss needs the model's {objective} pretraining parts (model has "
            f"{have}): load a pretraining checkpoint, or add fresh ones with "
            f"model.add_pretraining(PretrainingConfig(objective={objective!r}, ...))"
        )
    return parts


def _mask(mask: torch.Tensor, shape: tuple[int, int], what: str) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.shape != shape:
        raise ValueError(f"{what} must have shape {shape} (batch, frames), got {tuple(mask.shape)}")
    return mask.bool()


def perplexity(probs: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Summed over groups, ``exp(entropy)`` of the mean distribution of ``probs`` (N, G, V):
    from 1 (every frame picks one codevector) to V per group (all used equally).
    ``eps``: fairseq's ``log(p + eps)``; 0 takes ``0 log 0 = 0`` (transformers)."""
    p = probs.mean(0)  # (G, V)
    if eps:
        entropy = -(p * torch.log(p + eps)).sum(-1)
    else:
        entropy = -torch.xlogy(p, p).sum(-1)
    return torch.exp(entropy).sum()


def wav2vec2_loss(
    model: Model,
    waveforms: torch.Tensor,
    lengths: torch.Tensor | Sequence[int] | None = None,
    *,
    mask_time_indices: torch.Tensor,
    sampled_negative_indices: torch.Tensor,
    style: str = "hf",
    contrastive_temperature: float = 0.1,
    diversity_weight: float = 0.1,
    feature_penalty_weight: float = 10.0,
    feature_dropout: float = 0.0,
    gumbel_noise: torch.Tensor | None = None,
    exact: bool = True,
    codebook_negatives: int = 0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """wav2vec 2.0's pretraining loss for waveforms (batch, samples) (see the module
    docstring for ``style``).

    ``mask_time_indices`` (batch, frames) bool: the frames masked and predicted
    (:func:`w2v.train.compute_mask_indices`); ``sampled_negative_indices`` (batch, frames,
    K): distractors as flattened ``batch * frames`` indices
    (:func:`w2v.train.sample_negative_indices`); both in transformers' conventions.
    ``feature_dropout``: dropout on the quantizer's input in train mode (HF
    ``feat_quantizer_dropout``, fairseq ``dropout_features``). ``gumbel_noise``: the
    quantizer's Gumbel samples in train mode (default drawn; hf: (B*T*G, V), fairseq:
    (M*G, V)). ``exact=False``: transformers' batched numbers (padding in the conv
    encoder's statistics).
    ``codebook_negatives`` K (fairseq style only, fairseq's option of that name): K more
    negatives per masked frame, random codevector combinations (one codevector per group,
    :meth:`~w2v.nn.pretraining.GumbelVectorQuantizer.sample_from_codebook`, drawn from
    ``generator``) through ``project_q``, after the sampled ones; K must be below V**G. One
    that is the positive's own combination gets -inf. K=0 draws nothing.

    Returns ``loss``, ``contrastive_loss``, ``diversity_loss``, ``codevector_perplexity``
    (the one in the loss), ``code_perplexity`` (of each frame's most likely codevectors),
    ``prob_perplexity`` (of the softmax), ``feature_penalty`` (0 in the hf style),
    ``accuracy`` (masked frames whose positive scores highest), ``mask_fraction``
    (masked / valid frames), ``num_masked``, ``temperature`` (the Gumbel temperature),
    ``logits`` (M, 1 + negatives): the scores, the positive's first, then each negative's.
    In eval mode the result is deterministic (with codebook negatives: for a seeded
    ``generator``).
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    parts = _parts(model, "wav2vec2")
    pcfg = parts.pretraining_config
    _check_codebook_negatives(codebook_negatives, style, pcfg)
    frames_shape = _frames_shape(model, waveforms)
    mask = _mask(mask_time_indices, frames_shape, "mask_time_indices").to(waveforms.device)
    if not bool(mask.any()):  # nothing to predict: the loss would be an empty sum
        raise ValueError("mask_time_indices masks no frame; the loss needs at least one")
    negatives = torch.as_tensor(sampled_negative_indices).to(waveforms.device).long()
    if negatives.dim() != 3 or negatives.shape[:2] != frames_shape:
        raise ValueError(
            f"sampled_negative_indices must have shape {frames_shape} + (K,), got "
            f"{tuple(negatives.shape)}"
        )
    enc = model.encode(waveforms, lengths, time_mask=mask, exact=exact)
    b, t = frames_shape
    num_masked = mask.sum()
    features = dropout(enc.features, feature_dropout, model.training)
    predicted = parts.project_hid(enc.output[mask])  # (M, P)
    quantizer = parts.quantizer
    if style == "hf":
        vectors, logits, choice = quantizer(features, gumbel_noise)  # all B*T frames
        targets = parts.project_q(vectors.to(parts.project_q.weight.dtype)).flatten(0, 1)
        chosen = mask.flatten()
        positives = targets[chosen]  # (M, P)
        negative = targets[negatives[mask]]  # (M, K, P)
    else:
        vectors, logits, choice = quantizer(features[mask][None], gumbel_noise)  # (1, M, dim)
        targets = parts.project_q(vectors.to(parts.project_q.weight.dtype))[0]  # (M, P)
        # flattened frame index → its row among the masked frames
        row = torch.cumsum(mask.flatten().long(), 0) - 1
        picked = negatives[mask]  # (M, K)
        if not bool(mask.flatten()[picked].all()):
            raise ValueError("in the fairseq style every negative must be a masked frame")
        positives = targets
        negative = targets[row[picked]]
        chosen = torch.ones(len(targets), dtype=torch.bool, device=targets.device)
    # a negative equal to the positive (a collapsed codebook) must not count as a mistake
    same = (positives[None] == negative.transpose(0, 1)).all(-1)  # (K, M)
    if codebook_negatives:
        m, k = len(positives), codebook_negatives
        drawn, codes = quantizer.sample_from_codebook(m * k, generator)  # (M*K, dim), (M*K, G)
        drawn = parts.project_q(drawn.to(parts.project_q.weight.dtype)).view(m, k, pcfg.final_dim)
        negative = torch.cat([negative, drawn], dim=1)  # (M, K_sampled + K, P)
        # the positive's own combination, found by its codes: train mode's straight-through
        # vectors, and products of other shapes, need not be bitwise the drawn ones
        own = choice.detach().argmax(-1)  # (M, G)
        is_own = (codes.view(m, k, quantizer.groups) == own[:, None]).all(-1)  # (M, K)
        same = torch.cat([same, is_own.T], dim=0)
    # (1 + K, M): cosine similarity of the prediction with the positive, then each negative
    candidates = torch.cat([positives[None], negative.transpose(0, 1)], dim=0)
    sims = torch.cosine_similarity(candidates.float(), predicted.float()[None], dim=-1)
    sims = sims.type_as(candidates) / contrastive_temperature
    sims = torch.cat([sims[:1], sims[1:].masked_fill(same, float("-inf"))], dim=0)
    scores = sims.transpose(0, 1).float()  # (M, 1 + K)
    zeros = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
    contrastive = F.cross_entropy(scores, zeros, reduction="sum")

    g, v = pcfg.num_codevector_groups, pcfg.num_codevectors_per_group
    soft = torch.softmax(logits.float(), dim=-1)[chosen]  # (M, G, V)
    # the codes the logits prefer, before any Gumbel draw (fairseq's code_perplexity; in
    # eval mode also the codes chosen, whose perplexity transformers reports)
    hard = F.one_hot(logits.detach().argmax(-1), v).float()[chosen]
    eps = _FAIRSEQ_EPS if style == "fairseq" else 0.0
    prob_ppl = perplexity(soft, eps)
    code_ppl = perplexity(hard, eps)
    if style == "hf":
        ppl = prob_ppl if model.training else code_ppl
    else:
        ppl = prob_ppl
    diversity = (g * v - ppl) / (g * v) * num_masked
    loss = contrastive + diversity_weight * diversity
    penalty = contrastive.new_zeros(())
    if style == "fairseq":
        penalty = enc.conv_features.float().pow(2).mean() * num_masked
        loss = loss + feature_penalty_weight * penalty
    return {
        "loss": loss,
        "contrastive_loss": contrastive,
        "diversity_loss": diversity,
        "codevector_perplexity": ppl,
        "code_perplexity": code_ppl.detach(),
        "prob_perplexity": prob_ppl.detach(),
        "feature_penalty": penalty,
        "accuracy": _accuracy(scores.detach()),
        "mask_fraction": num_masked / _valid(enc.frame_lengths, b, t),
        "num_masked": num_masked,
        "temperature": torch.tensor(float(quantizer.temperature)),
        "logits": scores,
    }


def _check_codebook_negatives(k: int, style: str, pcfg: PretrainingConfig) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"codebook_negatives must be an integer >= 0, got {k!r}")
    if k and style != "fairseq":
        raise ValueError("codebook_negatives is fairseq's option: use style='fairseq'")
    # V**G, its exponent capped: past 64 groups of 2+ it exceeds any K anyway
    combinations = pcfg.num_codevectors_per_group ** min(pcfg.num_codevector_groups, 64)
    if k >= combinations:
        raise ValueError(
            f"codebook_negatives must be below the codebook's {combinations} combinations "
            f"(V**G), got {k}"
        )


def _frames_shape(model: Model, waveforms: torch.Tensor) -> tuple[int, int]:
    w = waveforms if waveforms.dim() == 2 else waveforms[None]
    return int(w.shape[0]), num_frames(w.shape[-1], model.config)


def _valid(frame_lengths: torch.Tensor | None, b: int, t: int) -> torch.Tensor:
    if frame_lengths is None:
        return torch.tensor(float(b * t))
    return frame_lengths.sum().float()


def _accuracy(scores: torch.Tensor) -> torch.Tensor:
    """Fraction of rows of (N, C) scores whose column 0 (the target) is the unique best."""
    if len(scores) == 0:
        return scores.new_zeros(())
    best = scores.argmax(-1) == 0
    tie = scores.argmin(-1) == 0  # every score equal: fairseq counts it as wrong
    return (best & ~tie).float().mean()


def hubert_loss(
    model: Model,
    waveforms: torch.Tensor,
    lengths: torch.Tensor | Sequence[int] | None,
    labels: torch.Tensor | Sequence[torch.Tensor],
    *,
    mask_time_indices: torch.Tensor,
    masked_weight: float = 1.0,
    unmasked_weight: float = 0.0,
    feature_penalty_weight: float = 10.0,
    logit_temperature: float = 0.1,
    exact: bool = True,
) -> dict[str, torch.Tensor]:
    """HuBERT's masked prediction (fairseq's ``HubertModel`` + ``hubert`` criterion).

    ``labels``: (batch, frames) cluster ids per frame (one tensor per label set, as many
    as the model's ``num_classes``), -100 where a frame has no label. The output of each
    valid frame is projected (``final_proj``) and compared by cosine similarity /
    ``logit_temperature`` with every label embedding of the set; cross-entropy summed over
    masked frames (weight ``masked_weight``) and unmasked ones (``unmasked_weight``), plus
    ``feature_penalty_weight * mean(conv_features ** 2) * N``, ``N`` the frames of the terms
    with a weight above 0 (fairseq's sample size).

    Returns ``loss``, ``masked_loss``, ``unmasked_loss``, ``feature_penalty``,
    ``masked_accuracy``, ``unmasked_accuracy``, ``mask_fraction``, ``num_masked`` and
    ``logits_masked`` / ``logits_unmasked`` of the first label set (frames, classes).
    """
    parts = _parts(model, "hubert")
    pcfg = parts.pretraining_config
    label_sets = [labels] if isinstance(labels, torch.Tensor) else list(labels)
    if len(label_sets) != len(pcfg.num_classes):
        raise ValueError(
            f"the model predicts {len(pcfg.num_classes)} label sets, got {len(label_sets)}"
        )
    shape = _frames_shape(model, waveforms)
    mask = _mask(mask_time_indices, shape, "mask_time_indices").to(waveforms.device)
    enc = model.encode(waveforms, lengths, time_mask=mask, exact=exact)
    valid = torch.ones(shape, dtype=torch.bool, device=mask.device)
    if enc.frame_lengths is not None:
        valid = frame_mask(enc.frame_lengths, shape[1])
    proj = parts.final_proj(enc.output)  # (B, T, F * sets)
    projections = proj.chunk(len(pcfg.num_classes), -1) if pcfg.untie_final_proj else None
    embeddings = parts.label_embeddings.split(list(pcfg.num_classes), 0)
    out: dict[str, torch.Tensor] = {}
    total = {k: proj.new_zeros((), dtype=torch.float32) for k in ("masked", "unmasked")}
    accuracy: dict[str, list[torch.Tensor]] = {"masked": [], "unmasked": []}
    for i, (target, emb) in enumerate(zip(label_sets, embeddings, strict=True)):
        target = torch.as_tensor(target, device=proj.device).long()
        if target.shape != shape:
            raise ValueError(
                f"labels must have shape {shape} (batch, frames), got {tuple(target.shape)}"
            )
        if bool((target >= len(emb)).any()):
            raise ValueError(f"label set {i} has ids past its {len(emb)} classes")
        p = proj if projections is None else projections[i]
        for name, where in (("masked", mask & valid), ("unmasked", ~mask & valid)):
            where = where & (target >= 0)
            x = p[where]  # (N, F)
            logits = torch.cosine_similarity(x.float()[:, None], emb.float()[None], dim=-1)
            logits = logits.type_as(x) / logit_temperature  # (N, classes)
            y = target[where]
            total[name] = total[name] + F.cross_entropy(logits.float(), y, reduction="sum")
            if len(y):
                accuracy[name].append((logits.argmax(-1) == y).float().mean())
            if i == 0:
                out[f"logits_{name}"] = logits
    num_masked = (mask & valid).sum()
    # fairseq's sample size: the frames of each term that counts, masked and/or unmasked
    size = num_masked * (masked_weight > 0) + (~mask & valid).sum() * (unmasked_weight > 0)
    penalty = enc.conv_features.float().pow(2).mean() * size
    loss = masked_weight * total["masked"] + unmasked_weight * total["unmasked"]
    loss = loss + feature_penalty_weight * penalty
    b, t = shape
    out.update(
        loss=loss,
        masked_loss=total["masked"],
        unmasked_loss=total["unmasked"],
        feature_penalty=penalty,
        masked_accuracy=_mean(accuracy["masked"]),
        unmasked_accuracy=_mean(accuracy["unmasked"]),
        mask_fraction=num_masked / _valid(enc.frame_lengths, b, t),
        num_masked=num_masked,
    )
    return out


def _mean(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(values).mean() if values else torch.tensor(0.0)


REDUCTIONS = ("mean", "sum")


def ctc_loss(
    model: Model,
    waveforms: torch.Tensor,
    lengths: torch.Tensor | Sequence[int] | None,
    labels: torch.Tensor,
    label_lengths: torch.Tensor | Sequence[int],
    *,
    reduction: str = "mean",
    zero_infinity: bool = False,
    blank: int | None = None,
    final_dropout: float = 0.0,
    time_mask: torch.Tensor | None = None,
    feature_mask: torch.Tensor | None = None,
    exact: bool = True,
) -> torch.Tensor:
    """CTC loss of the model's CTC head (``lm_head``) with transformers' ``Wav2Vec2ForCTC``
    conventions: log-softmax in float32, blank = the vocabulary's pad symbol
    (:func:`w2v.nn.heads.ctc.blank_index`, index 0 without a vocabulary; ``blank``
    overrides), ``"mean"`` divides each item's loss by its label length and then averages
    over the batch, ``"sum"`` adds them; ``zero_infinity`` makes an impossible item (more
    labels than frames allow) contribute 0 and no gradient.

    ``labels`` (batch, max_label_length) ids, each row's first ``label_lengths[b]`` used
    (the rest, e.g. transformers' -100, ignored). ``final_dropout``: dropout before the
    head in train mode (HF ``final_dropout``). ``time_mask`` / ``feature_mask``:
    SpecAugment (see :meth:`w2v.nn.model.Model.encode`).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if model.lm_head is None:
        raise ValueError("the model has no CTC head (config.vocab_size is None)")
    enc = model.encode(
        waveforms, lengths, time_mask=time_mask, feature_mask=feature_mask, exact=exact
    )
    hidden = dropout(enc.output, final_dropout, model.training)
    logits = model.lm_head(hidden)  # (B, T, V)
    b, t, v = logits.shape
    labels = torch.as_tensor(labels, device=logits.device).long()
    label_lengths = torch.as_tensor(label_lengths, device=logits.device).long()
    if labels.dim() != 2 or labels.shape[0] != b or label_lengths.shape != (b,):
        raise ValueError(
            f"labels must be (batch={b}, length) and label_lengths ({b},), got "
            f"{tuple(labels.shape)} and {tuple(label_lengths.shape)}"
        )
    if bool((label_lengths < 0).any()) or bool((label_lengths > labels.shape[1]).any()):
        raise ValueError(f"label_lengths must be in 0..{labels.shape[1]}: {label_lengths.tolist()}")
    used = frame_mask(label_lengths, labels.shape[1])
    targets = labels[used]
    if bool(((targets < 0) | (targets >= v)).any()):
        raise ValueError(f"labels must be ids in 0..{v - 1} within label_lengths")
    if blank is None:
        blank = 0 if model.vocab is None else blank_index(model.vocab)
    frames = enc.frame_lengths if enc.frame_lengths is not None else torch.full((b,), t)
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)  # (T, B, V)
    with torch.backends.cudnn.flags(enabled=False):  # as transformers: cuDNN's differs
        return F.ctc_loss(
            log_probs,
            targets,
            frames.to(logits.device),
            label_lengths,
            blank=blank,
            reduction=reduction,
            zero_infinity=zero_infinity,
        )
