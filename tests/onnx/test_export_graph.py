"""The exported graph's rewrite: attention's q, k and v projections as one product."""

from __future__ import annotations

import collections

import pytest
import torch

import w2v
from tests.helpers import TINY_W2V
from w2v.config import Config

onnx = pytest.importorskip("onnx")
from w2v.onnx import save_onnx  # noqa: E402


def test_projections_of_one_input_are_one_product(tmp_path):
    config = Config(**TINY_W2V)
    torch.manual_seed(0)
    graph = onnx.load(save_onnx(w2v.from_config(config).eval(), tmp_path / "m.onnx")).graph
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    products = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    # no value is multiplied by two constant matrices: those products were concatenated
    shared = [v for v, k in collections.Counter(n.input[0] for n in products).items() if k > 1]
    assert not shared
    d = config.hidden_size
    widths = collections.Counter(weights[n.input[1]][1] for n in products)
    assert widths[3 * d] == config.num_layers  # each layer's q, k and v
