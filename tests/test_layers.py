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
    (impl, *case) for impl in ('matmul', 'conv', 'winograd') for case in _TRANSPOSE_CASES
    if impl != 'winograd' or case[0] == 2 * case[1]])  # Winograd F(2, 2) needs two taps a phase.
def test_subpixel_equals_conv_transpose(kernel, stride, size, impl):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, *size, 3))
  _assert_same_function(layers.ConvTransposeSubpixel(5, kernel, stride, impl=impl),
                        nn.ConvTranspose(5, (kernel, kernel), (stride, stride), padding='SAME'), x)


def test_kernel_not_multiple_of_stride_is_an_error():
  with pytest.raises(ValueError, match='multiple of stride'):
    layers.ConvTransposeSubpixel(4, 3, 2).init(jax.random.PRNGKey(0), np.zeros((1, 4, 4, 2)))


def test_winograd_needs_two_taps_per_phase():
  with pytest.raises(ValueError, match='kernel_size = 2 \\* stride'):
    layers.ConvTransposeSubpixel(4, 3, 1, impl='winograd').init(jax.random.PRNGKey(0),
                                                              np.zeros((1, 4, 4, 2)))


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
