"""Layers that XLA compiles well on every platform."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _phase_taps(kernel_size: int, stride: int):
  """For each output phase of a SAME transposed conv: its kernel taps and input offset."""
  pad_lo = int(np.ceil((kernel_size + stride - 2) / 2)) if stride <= kernel_size - 1 else kernel_size - 1
  taps, offsets = [], []
  for r in range(stride):
    first = (pad_lo - r) % stride
    taps.append([first + stride * m for m in range(kernel_size // stride)])
    offsets.append((r + first - pad_lo) // stride)
  return np.array(taps), np.array(offsets)


class ConvTransposeSubpixel(nn.Module):
  """`nn.ConvTranspose(padding='SAME')`, computed as a stride-1 conv and depth-to-space.

  Same parameters, same function. The weight gradient of a strided transposed conv
  is pathologically slow on XLA:CPU; this form is s*s plain convs whose gradients are
  fast everywhere, and it does no multiplications by inserted zeros.
  """
  features: int
  kernel_size: int = 4
  stride: int = 2
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  use_bias: bool = True  # False before a batch norm, which would cancel it.

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.stride
    if k % s:
      raise ValueError(f'kernel_size {k} must be a multiple of stride {s}.')
    cin = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (k, k, cin, self.features))
    bias = (self.param('bias', nn.initializers.zeros, (self.features,)) if self.use_bias
            else jnp.zeros((self.features,)))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    taps, offsets = _phase_taps(k, s)
    # One small stride-1 conv per output phase (ry, rx), padded on one side only: a
    # symmetric padding makes XLA:CPU's weight gradient orders of magnitude slower.
    rows = []
    for ry in range(s):
      cols = []
      for rx in range(s):
        sub = kernel[taps[ry]][:, taps[rx]]  # (k/s, k/s, cin, f)
        pads = [(-int(o), int(o) + k // s - 1) for o in (offsets[ry], offsets[rx])]
        cols.append(jax.lax.conv_general_dilated(
            x, sub, window_strides=(1, 1), padding=pads,
            dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
      rows.append(jnp.stack(cols, axis=3))  # (B, H, W, rx, f)
    phases = jnp.stack(rows, axis=2)  # (B, H, ry, W, rx, f)
    n_h, n_w = x.shape[1], x.shape[2]
    return phases.reshape(x.shape[0], n_h * s, n_w * s, self.features) + bias


class ConvPatches(nn.Module):
  """`nn.Conv(padding='SAME')`, computed as im2col and one matmul.

  Same parameters, same function. A strided conv's gradients are dilated convs,
  which XLA:CPU runs on a slow generic path; here every gradient is a matmul or a
  pad/slice, which compile well everywhere.
  """
  features: int
  kernel_size: int = 3
  stride: int = 1
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.stride
    cin = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (k, k, cin, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    out_h, out_w = -(-x.shape[1] // s), -(-x.shape[2] // s)
    # SAME padding exactly as lax.conv_general_dilated: the extra pixel goes after.
    pad_h = max((out_h - 1) * s + k - x.shape[1], 0)
    pad_w = max((out_w - 1) * s + k - x.shape[2], 0)
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    # Patch features ordered (row tap, column tap, channel), as the kernel flattens.
    patches = jnp.concatenate(
        [x[:, i:i + (out_h - 1) * s + 1:s, j:j + (out_w - 1) * s + 1:s]
         for i in range(k) for j in range(k)], axis=-1)
    return patches @ kernel.reshape(k * k * cin, self.features) + bias
