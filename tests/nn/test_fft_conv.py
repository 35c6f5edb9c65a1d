"""The long positional convolution through the FFT (w2v/nn/fast/fft_conv.py): the
convolution's numbers (closer to float64 than the direct fp32 convolution), taken only
in CPU fp32 inference for kernels of 64+ taps, its kernel transform kept while the
weights are unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import w2v.nn.fast.fft_conv as fft_conv
from tests.helpers import TINY_W2V
from w2v.config import Config
from w2v.nn.model import Model
from w2v.nn.positional import GroupedConv1d, WeightNormConv


def _conv64(x, weight, bias, padding, groups):
    return F.conv1d(x.double(), weight.double(), bias.double(), padding=padding, groups=groups)


@pytest.mark.parametrize(
    ("batch", "frames", "channels", "groups", "kernel"),
    [
        (2, 499, 768, 16, 128),  # wav2vec2-base's, 10 s
        (1, 5160, 64, 4, 64),  # 40 blocks: several BLOCK_ROWS at a time
        (3, 10, 32, 2, 64),  # shorter than the kernel
        (1, 300, 48, 3, 95),  # odd kernel
    ],
)
def test_fft_conv_equals_the_convolution(batch, frames, channels, groups, kernel):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, frames, channels, generator=g).transpose(1, 2)  # time-major
    weight = (
        torch.randn(channels, channels // groups, kernel, generator=g)
        / (channels // groups * kernel) ** 0.5
    )
    bias = torch.randn(channels, generator=g)
    padding = kernel // 2
    ref = _conv64(x, weight, bias, padding, groups)
    with torch.no_grad():
        ours = fft_conv.conv1d(x, fft_conv.kernel_transform(weight, groups), bias, kernel, padding)
        direct = F.conv1d(x, weight, bias, padding=padding, groups=groups)
    assert ours.shape == ref.shape
    assert ours.transpose(1, 2).is_contiguous()  # time-major memory
    error = (ours.double() - ref).abs().max().item()
    assert error < 1e-5
    # no less accurate than the direct fp32 convolution (up to a rounding step)
    assert error <= (direct.double() - ref).abs().max().item() + 1e-6


def _counting(monkeypatch) -> dict[str, int]:
    calls = {"conv1d": 0, "kernel_transform": 0}
    for name in calls:
        real = getattr(fft_conv, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(fft_conv, name, counted)
    return calls


def _model(**changes) -> Model:
    torch.manual_seed(0)
    return Model(Config(**{**TINY_W2V, "pos_conv_kernel": 64, **changes})).eval()


def test_model_takes_it_batched_and_alone_with_the_direct_numbers(monkeypatch):
    model = _model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 24000, generator=g)
    lengths = torch.tensor([24000, 13000])
    with torch.no_grad():
        monkeypatch.setattr(fft_conv, "MIN_KERNEL", 10**6)
        direct, _ = model.hidden_states(x, lengths)
        monkeypatch.undo()
        calls = _counting(monkeypatch)
        batched, frames = model.hidden_states(x, lengths)
        alone, _ = model.hidden_states(x[1:, :13000])
    assert calls["conv1d"] == 2
    n = int(frames[1])
    for a, b, c in zip(batched, direct, alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)  # the parity tolerance
        torch.testing.assert_close(a[1:, :n], c, atol=2e-5, rtol=0)  # batch-exact's


def test_kernel_transform_is_kept_until_the_weights_change(monkeypatch):
    torch.manual_seed(0)
    conv = WeightNormConv(32, 64, 4)
    x = torch.randn(1, 200, 32).transpose(1, 2)
    calls = _counting(monkeypatch)
    with torch.no_grad():
        first = conv(x)
        assert torch.equal(conv(x), first)
        assert calls == {"conv1d": 2, "kernel_transform": 1}
        conv.weight_v.mul_(2.0)  # g * v / ||v|| is unchanged by scaling v ...
        conv.weight_g.mul_(0.5)  # ... and halved by halving g
        halved = conv(x)
    assert calls == {"conv1d": 3, "kernel_transform": 2}
    torch.testing.assert_close(halved - conv.bias[:, None], (first - conv.bias[:, None]) / 2)


def test_direct_form_where_the_fft_form_does_not_apply(monkeypatch):
    torch.manual_seed(0)
    calls = _counting(monkeypatch)
    x = torch.randn(1, 200, 32).transpose(1, 2)
    conv = WeightNormConv(32, 64, 4)
    out = conv(x)  # gradients are recorded: the direct form
    assert out.grad_fn is not None
    with torch.no_grad():
        torch.testing.assert_close(conv(x), out.detach(), atol=1e-5, rtol=0)
        assert calls["conv1d"] == 1
        assert not fft_conv.applies(x.double(), conv.weight_v.double())
        assert not fft_conv.applies(x.bfloat16(), conv.weight_v.bfloat16())
        GroupedConv1d(32, 19, 4)(x)  # data2vec's kernel-19 stack
        assert calls["conv1d"] == 1
        GroupedConv1d(32, 64, 4)(x)  # HuBERT's batch-norm variant with a long kernel
        assert calls["conv1d"] == 2
    with torch.inference_mode():
        inference = WeightNormConv(32, 64, 4)  # inference-tensor weights: no version counter
        inference(x)
    assert calls["conv1d"] == 2
    assert calls["kernel_transform"] == 2


def test_forms_kept_for_other_weights_are_released():
    """After a change of dtype (or device, or an optimiser step), the next call drops the
    kernel transform kept for the old weights."""
    torch.manual_seed(0)
    conv = WeightNormConv(32, 64, 4)
    x = torch.randn(1, 200, 32).transpose(1, 2)
    with torch.no_grad():
        conv(x)
        assert set(conv._derived) == {"fft"}
        conv.double()
        conv(x.double())  # not float32: the direct form, with its channels-last weight
    assert set(conv._derived) == {True}


def test_moving_the_model_releases_its_derived_weights():
    model = _model()
    with torch.no_grad():
        model(torch.randn(1, 24000))
    kept = [m for m in model.modules() if m.__dict__.get("_derived")]
    assert kept  # the positional conv's transform, the conv layers' channels-last copies
    model.double()
    assert not any(m.__dict__.get("_derived") for m in model.modules())
