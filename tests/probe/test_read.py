"""read_embeddings: a w2v embed directory back as arrays per layer, in manifest order."""

from __future__ import annotations

import numpy as np
import pytest

import w2v
from tests.probe.synthetic import write_embeddings
from w2v.errors import UsageError
from w2v.pipeline.read import FrameLayer


@pytest.mark.parametrize("fmt", ["npy", "safetensors"])
def test_pooled(tmp_path, fmt):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(5)]
    paths = write_embeddings(tmp_path, arrays, [0, 6, 12], fmt=fmt, failed=2)
    emb = w2v.read_embeddings(tmp_path)
    assert emb.paths == paths and emb.layers == [0, 6, 12] and emb.pool == "mean"
    assert emb.skipped == 2 and emb.errors[0][1] == "unreadable"
    for k, layer in enumerate([0, 6, 12]):
        np.testing.assert_array_equal(emb.arrays[layer], np.stack([a[k] for a in arrays]))
    got_paths, layers, got = w2v.read_embeddings(tmp_path, layers="12,0")
    assert layers == [12, 0] and list(got) == [12, 0] and got_paths == paths
    assert w2v.read_embeddings(tmp_path, layers=-1).layers == [12]
    assert w2v.read_embeddings(tmp_path, layers="4-12").layers == [6, 12]
    with pytest.raises(UsageError, match=r"layer 5 is not in .* \(stored: 0, 6, 12\)"):
        w2v.read_embeddings(tmp_path, layers="5")
    with pytest.raises(UsageError, match=r"no layer of 1-5 is in"):
        w2v.read_embeddings(tmp_path, layers="1-5")


@pytest.mark.parametrize("fmt", ["npy", "safetensors"])
def test_frames_are_read_on_demand(tmp_path, fmt):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((2, n, 3)).astype(np.float32) for n in (4, 7)]
    write_embeddings(tmp_path, arrays, [1, 2], pool="none", fmt=fmt)
    emb = w2v.read_embeddings(tmp_path)
    layer = emb.arrays[2]
    assert isinstance(layer, FrameLayer)
    assert layer.lengths.tolist() == [4, 7] and layer.num_frames == 11
    np.testing.assert_array_equal(layer[1], arrays[1][1])
    if fmt == "npy":
        assert isinstance(layer[0].base, np.memmap) or isinstance(layer[0], np.memmap)


def test_no_manifest(tmp_path):
    with pytest.raises(UsageError, match="holds no manifest.jsonl"):
        w2v.read_embeddings(tmp_path)
