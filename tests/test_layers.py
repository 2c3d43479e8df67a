"""The fast layers compute exactly what nn.ConvTranspose and nn.Conv compute."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from cgan_jax import layers


def _assert_same_function(fast, reference, x, atol=1e-5):
  """Same outputs, weight and input gradients, on parameters drawn away from their init."""
  params = reference.init(jax.random.PRNGKey(1), x)
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
  expected = reference.apply(params, x)
  np.testing.assert_allclose(fast.apply(params, x), expected, atol=atol, rtol=1e-5)

  def grads(module):  # Weight and input gradients (through custom VJPs where there are).
    return jax.grad(lambda p, x: (module.apply(p, x) * expected).sum(), (0, 1))(params, x)
  for got, want in zip(jax.tree.leaves(grads(fast)), jax.tree.leaves(grads(reference))):
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)


_TRANSPOSE_CASES = [(4, 2, (7, 7)), (4, 2, (2, 2)), (2, 2, (5, 5)), (6, 3, (4, 4)), (3, 1, (5, 5)),
                    (4, 2, (6, 3))]


@pytest.mark.parametrize('impl,kernel,stride,size', [
    (impl, *case) for impl in ('matmul', 'conv', 'winograd') for case in _TRANSPOSE_CASES])
def test_subpixel_equals_conv_transpose(kernel, stride, size, impl):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, *size, 3))
  # Winograd's larger tiles interpolate at +-2 and +-1/2: f32 rounding grows to ~1e-5 of O(1) values.
  _assert_same_function(layers.ConvTransposeSubpixel(5, kernel, stride, impl=impl),
                        nn.ConvTranspose(5, (kernel, kernel), (stride, stride), padding='SAME'), x,
                        atol=1e-4 if impl == 'winograd' else 1e-5)


def test_kernel_not_multiple_of_stride_is_an_error():
  with pytest.raises(ValueError, match='multiple of stride'):
    layers.ConvTransposeSubpixel(4, 3, 2).init(jax.random.PRNGKey(0), np.zeros((1, 4, 4, 2)))


def test_winograd_takes_at_most_eight_taps_per_phase():
  with pytest.raises(ValueError, match='at most 8 taps'):
    layers.ConvTransposeSubpixel(4, 9, 1, impl='winograd').init(jax.random.PRNGKey(0),
                                                              np.zeros((1, 4, 4, 2)))


@pytest.mark.parametrize('m,r', [(m, r) for r in (1, 2, 3) for m in range(1, 10 - r)])
def test_winograd_matrices_compute_a_correlation(m, r):
  a_t, g, b_t = layers._winograd_matrices(m, r)
  d, w = np.random.default_rng(0).normal(size=m + r - 1), np.random.default_rng(1).normal(size=r)
  np.testing.assert_allclose(a_t @ ((g @ w) * (b_t @ d)), np.correlate(d, w, 'valid'), atol=1e-9)


@pytest.mark.parametrize('kernel,stride,tiles', [(4, 2, (1, 1)), (4, 2, (3, 5)),
                                                 (6, 2, (6, 4)), (6, 3, (2, 3))])
def test_winograd_any_tiles_same_function(monkeypatch, kernel, stride, tiles):
  monkeypatch.setattr(layers, '_winograd_tiles', lambda *_: tiles)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 3))
  _assert_same_function(layers.ConvTransposeSubpixel(5, kernel, stride, impl='winograd'),
                        nn.ConvTranspose(5, (kernel, kernel), (stride, stride), padding='SAME'), x,
                        atol=1e-4)


def test_winograd_tiles_trade_products_for_matmul_rate():
  offsets = (-1, 0)  # Kernel 4, stride 2: each phase's first input; products have 4F columns.
  assert layers._winograd_tiles((128, 14, 14, 128), offsets, 2, 512) == (5, 5)  # The G update.
  assert layers._winograd_tiles((64, 7, 7, 129), offsets, 2, 512) == (4, 4)
  # At batch 16, 5x5 tiles' products would fall below the threaded size: smaller tiles.
  assert layers._winograd_tiles((16, 14, 14, 128), offsets, 2, 512) == (3, 5)
  assert layers._winograd_tiles((2, 7, 7, 3), offsets, 2, 20) == (4, 4)  # One thread: fewest rows.


@pytest.mark.parametrize('impl', ['patches', 'conv'])
@pytest.mark.parametrize('kernel,stride,size', [(3, 2, 8), (3, 2, 7), (3, 1, 5), (4, 2, 6), (1, 1, 3)])
def test_conv_patches_equals_conv(kernel, stride, size, impl):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 3))
  _assert_same_function(layers.ConvPatches(5, kernel, stride, impl=impl),
                        nn.Conv(5, (kernel, kernel), (stride, stride), padding='SAME'), x)


@pytest.mark.parametrize('impl', ['auto', 'conv'])
@pytest.mark.parametrize('kernel,channels,size', [(7, 1, 6), (3, 3, 5), (4, 2, 4), (1, 1, 3)])
def test_conv_shift_add_equals_conv(kernel, channels, size, impl):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size + 1, 4))
  _assert_same_function(layers.ConvShiftAdd(channels, kernel, impl=impl),
                        nn.Conv(channels, (kernel, kernel), padding='SAME'), x, atol=1e-4)
