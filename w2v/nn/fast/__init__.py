"""The fast form of the conv feature encoder: the numbers of the plain form in
:mod:`w2v.nn.feature_encoder`, computed time-major as matrix products.

* ``strided_conv``: strided convolutions as products of strided views, and
  Winograd's F(3, 2) for kernel 3 / stride 2.
* ``layer0``: conv layer 0 as waveform windows times one matrix, GroupNorm folded in.
* ``layers``: conv layers ≥ 1, time-major, with their weights prepared once.
* ``conv_stack``: when the fast form applies (the cuDNN TF32 policy), and the whole
  stack, its first layers block by block over time.
* ``graph``: the form traced by torch.export (and so by ``w2v export --onnx``):
  channel-major convolutions, layer 0's GroupNorm folded into its product.
"""

from w2v.nn.fast.conv_stack import applies, forward

__all__ = ["applies", "forward"]
