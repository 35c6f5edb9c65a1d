"""Fast forms beside the plain modules: the same numbers (up to the order of fp32 sums),
computed faster. Mostly the conv feature encoder's: the numbers of the plain form in
:mod:`w2v.nn.feature_encoder`, computed time-major.

* ``strided_conv``: strided convolutions as products of strided views (off the CPU).
* ``layer0``: conv layer 0 as waveform windows times one matrix, GroupNorm folded in.
* ``layers``: conv layers ≥ 1, time-major, with their weights prepared once: on a CPU
  oneDNN's direct convolution of a channels-last view.
* ``fft_conv``: the positional convolution (kernel 128) through the FFT on a CPU.
* ``linear``, ``attention``, ``rows``: the transformer's products through oneDNN on a
  CPU (Linear layers, attention of long sequences, feed-forward in blocks of rows).
* ``derived``: weights derived from parameters (channels-last, weight-normed), kept
  between inference calls.
* ``conv_stack``: when the fast form applies (the cuDNN TF32 policy), and the whole
  stack, its first layers block by block over time.
* ``graph``: the form traced by torch.export (and so by ``w2v export --onnx``):
  channel-major convolutions, layer 0's GroupNorm folded into its product.
"""

from w2v.nn.fast.conv_stack import applies, forward

__all__ = ["applies", "forward"]
