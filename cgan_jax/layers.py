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
  is pathologically slow on XLA:CPU; this form is a plain conv whose gradients are
  fast everywhere, and it does no multiplications by inserted zeros.
  """
  features: int
  kernel_size: int = 4
  stride: int = 2
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.stride
    if k % s:
      raise ValueError(f'kernel_size {k} must be a multiple of stride {s}.')
    cin = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (k, k, cin, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    taps, offsets = _phase_taps(k, s)
    # (k, k, cin, f) -> (k/s, k/s, cin, s*s*f): one small kernel per output phase.
    sub = kernel[taps][:, :, taps]  # (ry, my, rx, mx, cin, f)
    sub = sub.transpose(1, 3, 4, 0, 2, 5).reshape(k // s, k // s, cin, s * s * self.features)
    lo, hi = -min(offsets.min(), 0), offsets.max() + k // s - 1
    y = jax.lax.conv_general_dilated(
        x, sub, window_strides=(1, 1), padding=((lo, hi), (lo, hi)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    n_h, n_w = x.shape[1], x.shape[2]
    y = y.reshape(*y.shape[:3], s, s, self.features)
    start = offsets + lo
    rows = jnp.stack([y[:, start[ry]:start[ry] + n_h, :, ry] for ry in range(s)], axis=2)
    phases = jnp.stack([rows[:, :, :, start[rx]:start[rx] + n_w, rx] for rx in range(s)], axis=4)
    # phases: (B, H, ry, W, rx, f) -> interleave into (B, H*s, W*s, f).
    return phases.reshape(x.shape[0], n_h * s, n_w * s, self.features) + bias
