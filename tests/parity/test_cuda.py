"""The model on a CUDA GPU: parity with transformers on the same device, per layer.

Skipped where no GPU is visible (CI has none; run these on a GPU machine with
``python -m pytest tests/test_cuda.py``). TF32 is switched off for the fp32
checks, on both sides: with it, cuDNN convolutions and matmuls round their inputs to
10-bit mantissas and neither side would be an fp32 reference.
"""

from __future__ import annotations

import gc
import shutil
import warnings

import pytest
import torch

import w2v
from tests.helpers import assert_layers_close, hf_class, hf_config, perturb_

pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ATOL = 1e-4
LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
STABLE = dict(feat_extract_norm="layer", do_stable_layer_norm=True)
CASES = {
    "wav2vec2-base": ("wav2vec2", {}),
    "wav2vec2-large-lv60": ("wav2vec2", dict(LARGE, **STABLE, conv_bias=True)),
    "wavlm-base": ("wavlm", {}),
    "data2vec-audio-base": ("data2vec-audio", {}),
}
SECONDS = (4.0, 2.5, 1.1)  # a padded batch; item 0 alone is the single-item input


def noise(seconds: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(int(seconds * 16000), generator=g)


ITEMS = [noise(s, i) for i, s in enumerate(SECONDS)]


@pytest.fixture(autouse=True, scope="module")
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    """(name, our fp32 model on the GPU, checkpoint dir, HF hidden states per item on the GPU)."""
    name = request.param
    family, kwargs = CASES[name]
    torch.manual_seed(0)
    hf = perturb_(hf_class(family)(hf_config(family, tiny=False, **kwargs)))
    d = tmp_path_factory.mktemp(name)
    hf.save_pretrained(d)
    hf.cuda()
    with torch.inference_mode():
        refs = [
            [s.cpu() for s in hf(item[None].cuda(), output_hidden_states=True).hidden_states]
            for item in ITEMS
        ]
    del hf
    gc.collect()
    torch.cuda.empty_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = w2v.load(d, device="cuda")
    yield name, model, d, refs
    del model
    shutil.rmtree(d)
    gc.collect()
    torch.cuda.empty_cache()


def padded(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(x) for x in items])
    x = torch.zeros(len(items), int(lengths.max()))
    for j, item in enumerate(items):
        x[j, : len(item)] = item
    return x, lengths


@torch.inference_mode()
def test_every_layer_matches_transformers_on_gpu(case):
    _, model, _, refs = case
    states, _ = model.hidden_states(ITEMS[0][None].cuda())
    assert all(s.is_cuda for s in states)
    assert_layers_close([s.cpu() for s in states], refs[0], ATOL)


@torch.inference_mode()
def test_padded_batch_matches_items_alone_on_gpu(case):
    _, model, _, refs = case
    x, lengths = padded(ITEMS)
    states, frames = model.hidden_states(x.cuda(), lengths.cuda())
    frames = frames.tolist()
    assert frames == [r[0].shape[1] for r in refs]
    for j, n in enumerate(frames):
        mine = [s[j : j + 1, :n].cpu() for s in states]
        assert_layers_close(mine, refs[j], ATOL, what=f"item {j}, layer")


@torch.inference_mode()
def test_extract_features_stops_early_on_gpu(case):
    _, model, _, refs = case
    k = model.config.num_layers // 2
    feats, _ = model.extract_features(ITEMS[1][None].cuda(), num_layers=k)
    assert len(feats) == k
    assert_layers_close([f.cpu() for f in feats], refs[1][1 : k + 1], ATOL, what="element")


@torch.inference_mode()
def test_tf32_default_follows_cudnn_setting(case):
    """With PyTorch's default cuDNN TF32 on, the convolutions run through cuDNN as in
    transformers; the result stays within TF32 rounding of the fp32 one."""
    _, model, _, refs = case
    x = ITEMS[0][None].cuda()
    torch.backends.cudnn.allow_tf32 = True
    try:
        fast, _ = model.hidden_states(x)
        feats, _ = model.feature_extractor(x)
        plain = model.feature_extractor.plain(x)
        torch.testing.assert_close(feats, plain, atol=1e-5, rtol=0)  # the cuDNN path was taken
    finally:
        torch.backends.cudnn.allow_tf32 = False
    for i, (a, b) in enumerate(zip(fast, refs[0], strict=True)):
        cos = torch.nn.functional.cosine_similarity(a.cpu().flatten(), b.flatten(), dim=0)
        assert cos >= 0.9999, f"layer {i}: cosine {cos:.6f}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@torch.inference_mode()
def test_half_precision_every_layer_close_on_gpu(case, dtype):
    """Half models on the GPU: every layer's cosine similarity to fp32 ≥ 0.999."""
    _, model, path, _ = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        half = w2v.load(path, device="cuda", dtype=dtype)
    x, lengths = padded(ITEMS)
    full, frames = model.hidden_states(x.cuda(), lengths.cuda())
    ours, _ = half.hidden_states(x.cuda(), lengths.cuda())
    assert ours[-1].dtype == dtype
    for i, (a, b) in enumerate(zip(ours, full, strict=True)):
        for j, n in enumerate(frames.tolist()):
            cos = torch.nn.functional.cosine_similarity(
                a[j, :n].float().flatten(), b[j, :n].flatten(), dim=0
            )
            assert cos >= 0.999, f"layer {i}, item {j}: cosine {cos:.5f}"
    del half
    torch.cuda.empty_cache()


@torch.inference_mode()
def test_fp32_model_under_autocast_on_gpu(case):
    """transformers-style bf16: the fp32 model under torch.autocast stays close to fp32."""
    _, model, _, refs = case
    with torch.autocast("cuda", dtype=torch.bfloat16):
        states, _ = model.hidden_states(ITEMS[0][None].cuda())
    for i, (a, b) in enumerate(zip(states, refs[0], strict=True)):
        cos = torch.nn.functional.cosine_similarity(a.float().cpu().flatten(), b.flatten(), dim=0)
        assert cos >= 0.999, f"layer {i}: cosine {cos:.5f}"


@torch.inference_mode()
def test_compiled_matches_eager_on_gpu(case):
    name, model, path, _ = case
    if name != "wav2vec2-base":
        pytest.skip("compile runs on one model (it takes a while)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        compiled = w2v.load(path, device="cuda", compile=True)
    for items in (ITEMS, ITEMS[1:]):  # two batch shapes: dynamic=True, no recompile needed
        x, lengths = padded(items)
        want, _ = model(x.cuda(), lengths.cuda())
        got, _ = compiled(x.cuda(), lengths.cuda())
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_embed_files_on_gpu_matches_cpu(case, tmp_path):
    """The whole pipeline (decode, resample, batch, pool) on the GPU writes what the CPU writes."""
    import numpy as np
    import soundfile as sf

    from w2v.pipeline import embed_files
    from w2v.pipeline.outputs import read_manifest, read_output

    name, _, path, _ = case
    if name != "wav2vec2-base":
        pytest.skip("the pipeline runs on one model")
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for i, (rate, seconds) in enumerate([(16000, 3.0), (44100, 1.7), (8000, 5.2), (22050, 0.4)]):
        data = 0.2 * rng.standard_normal(int(rate * seconds)).astype(np.float32)
        sf.write(tmp_path / "in" / f"{i}.wav", data, rate)
    runs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            summary = embed_files(
                [tmp_path / "in"], path, out, layers="0,6,12", pool="mean", device=device
            )
        assert summary.failed == 0
        runs[device] = {k: read_output(out / e["output"]) for k, e in read_manifest(out).items()}
    assert len(runs["cuda"]) == 4 and runs["cuda"].keys() == runs["cpu"].keys()
    for key, got in runs["cuda"].items():
        np.testing.assert_allclose(got, runs["cpu"][key], atol=ATOL, rtol=0, err_msg=key)
