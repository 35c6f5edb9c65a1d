"""Training: masking, quantizer targets, negatives, losses and the training loop."""

from w2v.train.loop import TrainSettings, train
from w2v.train.losses import ctc_loss, hubert_loss, perplexity, wav2vec2_loss
from w2v.train.masking import (
    compute_mask_indices,
    expected_mask_fraction,
    spec_augment,
)
from w2v.train.negatives import sample_negative_indices
from w2v.train.schedule import gumbel_temperature, learning_rate

__all__ = [
    "TrainSettings",
    "compute_mask_indices",
    "ctc_loss",
    "expected_mask_fraction",
    "gumbel_temperature",
    "hubert_loss",
    "learning_rate",
    "perplexity",
    "sample_negative_indices",
    "spec_augment",
    "train",
    "wav2vec2_loss",
]
