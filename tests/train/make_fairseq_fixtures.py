"""Generate ``tests/train/fixtures/``: fairseq's pretraining losses on the committed tiny
fairseq checkpoints (``tests/fixtures/fairseq/``), for masks and negatives drawn by w2v.

Needs fairseq, in an environment of its own (see ``tests/fixtures/make_fairseq_fixtures.py``
for how to build it with ``fairseq-fixed``), and w2v on the path:

    PYTHONPATH=. /tmp/fsenv/bin/python tests/train/make_fairseq_fixtures.py

For wav2vec 2.0 (``wav2vec2_default``, ``wav2vec2_layernorm``) the model runs in eval mode
with the given ``mask_indices`` and, in place of its own negative sampling, the negatives
w2v drew (as rows of fairseq's per-utterance targets); ``Wav2vecCriterion`` (InfoNCE,
``loss_weights=[0.1, 10]``) gives the references. For HuBERT (``hubert``) the mask replaces
``apply_mask``'s draw and ``HubertCriterion`` (masked weight 1, unmasked 0.5, feature
penalty 10) gives them; its logits are stored in class order (fairseq puts the target first
and sets its duplicate to -inf).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # fairseq's loader; our files

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from w2v.config import num_frames  # noqa: E402
from w2v.train import compute_mask_indices, sample_negative_indices  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "tests" / "fixtures" / "fairseq"
OUT = Path(__file__).resolve().parent / "fixtures"
NUM_NEGATIVES = 5


def main() -> None:
    from fairseq import checkpoint_utils

    OUT.mkdir(exist_ok=True)
    inputs = load_file(str(SOURCES / "inputs.safetensors"))
    wave, lengths = inputs["waveform"], inputs["lengths"]
    for name in ("wav2vec2_default", "wav2vec2_layernorm", "hubert"):
        (model,), _, task = checkpoint_utils.load_model_ensemble_and_task(
            [str(SOURCES / f"{name}.pt")]
        )
        model.eval()
        g = torch.Generator().manual_seed(sum(map(ord, name)))
        if name.startswith("wav2vec2"):
            refs = wav2vec2(model, task, wave, lengths, g)
        else:
            refs = hubert(model, task, wave, g)
        save_file(refs, str(OUT / f"{name}.loss.safetensors"))
        print(name, {k: tuple(v.shape) for k, v in refs.items()})


def wav2vec2(model, task, wave, lengths, g) -> dict[str, torch.Tensor]:
    from fairseq.criterions.wav2vec_criterion import Wav2vecCriterion

    frames = [num_frames(int(n)) for n in lengths]
    shape = (len(frames), max(frames))
    mask = compute_mask_indices(
        shape, 0.5, 2, lengths=frames, min_masks=2, generator=g, style="fairseq"
    )
    negatives = sample_negative_indices(shape, NUM_NEGATIVES, mask_time_indices=mask, generator=g)
    per_item = int(mask[0].sum())
    # our flattened frame index → fairseq's row in y.view(B * per_item, C)
    rows = torch.full((mask.numel(),), -1, dtype=torch.long)
    rows[mask.flatten()] = torch.arange(int(mask.sum()))
    fairseq_rows = rows[negatives[mask]].view(len(frames), per_item, NUM_NEGATIVES)

    def sample_negatives(y, num, padding_count=None):
        b, t, c = y.shape
        idx = fairseq_rows.reshape(-1)
        negs = y.reshape(-1, c)[idx].view(b, t, NUM_NEGATIVES, c).permute(2, 0, 1, 3)
        return negs, idx

    model.sample_negatives = sample_negatives
    padding = torch.arange(wave.shape[1])[None] >= lengths[:, None]
    criterion = Wav2vecCriterion(
        task, infonce=True, loss_weights=[0.1, 10.0],
        log_keys=["prob_perplexity", "code_perplexity"],
    )  # fmt: skip
    sample = {
        "net_input": {"source": wave, "padding_mask": padding, "mask_indices": mask},
        "id": torch.arange(len(frames)),
    }
    with torch.no_grad():
        loss, size, log = criterion(model, sample)
        net = model(**sample["net_input"])
    return {
        "mask": mask,
        "negatives": negatives,
        "loss": loss.detach().float(),
        # the criterion logs its terms in order: InfoNCE, then each weighted extra loss
        "contrastive": torch.tensor(log["loss_0"]),
        "diversity_term": torch.tensor(log["loss_1"]),
        "penalty_term": torch.tensor(log["loss_2"]),
        "prob_perplexity": torch.tensor(log["prob_perplexity"]),
        "code_perplexity": torch.tensor(log["code_perplexity"]),
        "sample_size": torch.tensor(size),
        "logits": net["x"].detach(),  # (1 + K, B, per_item)
    }


def hubert(model, task, wave, g) -> dict[str, torch.Tensor]:
    from fairseq.criterions.hubert_criterion import HubertCriterion

    # unpadded (item 0 twice): fairseq's HuBERT counts a frame as padding only when all its
    # samples are, which differs from the conv formula's lengths
    wave = wave[:1].expand(2, -1).clone()
    t = num_frames(wave.shape[1])
    mask = compute_mask_indices((2, t), 0.5, 2, min_masks=2, generator=g)
    classes = model.num_classes[0]
    labels = torch.randint(0, classes, (2, t), generator=g)

    def apply_mask(x, padding_mask, target_list):
        x = x.clone()
        x[mask] = model.mask_emb.to(x.dtype)
        return x, mask

    model.apply_mask = apply_mask
    criterion = HubertCriterion(
        task, pred_masked_weight=1.0, pred_nomask_weight=0.5, loss_weights=[10.0]
    )
    padding = torch.zeros(wave.shape, dtype=torch.bool)
    sample = {
        "net_input": {"source": wave, "padding_mask": padding},
        "target_list": [labels],
        "id": torch.arange(2),
    }
    with torch.no_grad():
        loss, size, log = criterion(model, sample)
        net = model(target_list=[labels], **sample["net_input"])
    out = {
        "mask": mask,
        "labels": labels,
        "loss": loss.detach().float(),
        "masked_loss": torch.tensor(log["loss_m_0"]),
        "unmasked_loss": torch.tensor(log["loss_u_0"]),
        "penalty_term": torch.tensor(log["loss_features_pen"]),
        "sample_size": torch.tensor(size),
    }
    for kind, where in (("masked", mask), ("unmasked", ~mask)):
        logits = net[f"logit_{kind[0]}_list"][0].detach()  # (N, 1 + classes), target first
        target = labels[where]
        by_class = logits[:, 1:].clone()
        by_class[torch.arange(len(target)), target] = logits[:, 0]
        out[f"logits_{kind}"] = by_class.contiguous()
    return out


if __name__ == "__main__":
    sys.exit(main())
