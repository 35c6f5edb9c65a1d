"""The model: one module per stage of the wav2vec 2.0 architecture."""

from w2v.nn.model import Model
from w2v.nn.weighted_sum import WeightedLayerSum

__all__ = ["Model", "WeightedLayerSum"]
