"""Model shapes, and that the label changes what G draws and what D says."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgan_jax import conditioning
from cgan_jax import models


@pytest.mark.parametrize('image_shape', [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_shapes_and_label_dependence(tiny_config, image_shape):
  generator, discriminator = models.create_models(tiny_config, (10,), image_shape)
  z = jax.random.normal(jax.random.PRNGKey(0), (4, tiny_config.model.latent_dim))
  labels = jnp.array([0, 1, 2, 3])
  g_params = generator.init(jax.random.PRNGKey(1), z, labels)['params']
  images = generator.apply({'params': g_params}, z, labels)
  assert images.shape == (4, *image_shape)
  assert float(jnp.abs(images).max()) <= 1.0
  other = generator.apply({'params': g_params}, z, labels + 5)
  assert float(jnp.abs(images - other).max()) > 1e-4

  d_params = discriminator.init(jax.random.PRNGKey(2), images, labels, train=False)['params']
  logits = discriminator.apply({'params': d_params}, images, labels, train=False)
  assert logits.shape == (4,)
  other = discriminator.apply({'params': d_params}, images, labels + 5, train=False)
  assert float(jnp.abs(logits - other).max()) > 1e-6


def test_unconditional_generator_ignores_labels(tiny_config):
  tiny_config.model.g_conditioning = 'none'
  generator, _ = models.create_models(tiny_config, (10,), (8, 8, 1))
  z = jnp.ones((2, tiny_config.model.latent_dim))
  params = generator.init(jax.random.PRNGKey(0), z, jnp.array([0, 1]))['params']
  a = generator.apply({'params': params}, z, jnp.array([0, 1]))
  b = generator.apply({'params': params}, z, jnp.array([7, 9]))
  np.testing.assert_array_equal(a, b)


def test_bad_model_settings_are_clear_errors(tiny_config):
  with pytest.raises(ValueError, match='not divisible'):
    models.create_models(tiny_config, (10,), (9, 9, 1))
  tiny_config.model.name = 'nope'
  with pytest.raises(ValueError, match='Unknown model.name'):
    models.create_models(tiny_config, (10,), (8, 8, 1))
  tiny_config.model.name = 'dcgan'
  tiny_config.model.g_conditioning = 'nope'
  with pytest.raises(ValueError, match='g_conditioning'):
    models.create_models(tiny_config, (10,), (8, 8, 1))
  tiny_config.model.g_conditioning = 'channel'
  tiny_config.model.conv_impl = 'cudnn'
  with pytest.raises(ValueError, match="Unknown model.conv_impl 'cudnn'"):
    models.create_models(tiny_config, (10,), (8, 8, 1))


def test_xla_convs_compute_the_same_models(tiny_config):
  """conv_impl='xla' (XLA's own convolutions) and 'auto' share parameters and outputs."""
  z = jax.random.normal(jax.random.PRNGKey(0), (3, tiny_config.model.latent_dim))
  labels = jnp.array([0, 4, 9])
  outputs = []
  for impl in ('auto', 'xla'):
    tiny_config.model.conv_impl = impl
    generator, discriminator = models.create_models(tiny_config, (10,), (28, 28, 1))
    g_params = generator.init(jax.random.PRNGKey(1), z, labels)['params']
    images = generator.apply({'params': g_params}, z, labels)
    d_params = discriminator.init(jax.random.PRNGKey(2), images, labels, train=False)['params']
    outputs.append((images, discriminator.apply({'params': d_params}, images, labels, train=False)))
  for auto, xla in zip(*outputs):
    np.testing.assert_allclose(auto, xla, atol=1e-5, rtol=1e-5)


def test_discriminator_dropout_is_per_example(tiny_config):
  """In training each example's logit depends on its own dropout key alone, not on its batch."""
  tiny_config.model.d_dropout = 0.5
  _, discriminator = models.create_models(tiny_config, (10,), (8, 8, 1))
  images = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1), minval=-1, maxval=1)
  labels = jnp.array([0, 1, 2, 3])
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  variables = discriminator.init(jax.random.PRNGKey(2), images, labels, train=False)
  batch = discriminator.apply(variables, images, labels, dropout_keys=keys)
  alone = [discriminator.apply(variables, images[i:i + 1], labels[i:i + 1], dropout_keys=keys[i:i + 1])
           for i in range(4)]
  np.testing.assert_allclose(batch, jnp.concatenate(alone), rtol=1e-5, atol=1e-6)
  other_keys = discriminator.apply(variables, images, labels, dropout_keys=keys[::-1])
  assert float(jnp.abs(batch - other_keys).max()) > 1e-4
  evaluated = discriminator.apply(variables, images, labels, train=False)
  assert float(jnp.abs(batch - evaluated).max()) > 1e-4
  # Without keys, one per example is split from the 'dropout' rng.
  from_rng = discriminator.apply(variables, images, labels, rngs={'dropout': jax.random.PRNGKey(3)})
  assert from_rng.shape == (4,) and float(jnp.abs(from_rng - evaluated).max()) > 1e-4


def test_per_example_dropout_keeps_one_minus_rate_scaled():
  x = jnp.ones((3, 10_000))
  out = conditioning.per_example_dropout(x, 0.4, jax.random.split(jax.random.PRNGKey(0), 3))
  kept = out != 0
  np.testing.assert_allclose(out[kept], 1 / 0.6, rtol=1e-6)
  np.testing.assert_allclose(kept.mean(axis=1), 0.6, atol=0.02)
  assert float(jnp.abs(out[0] - out[1]).max()) > 0  # Each example its own mask.


def test_leaky_relu_derivatives_match_flax():
  """Forward mode, first and second order reverse (as R1 takes it), zeros included."""
  x = jnp.concatenate([jax.random.normal(jax.random.PRNGKey(0), (64,)), jnp.zeros(4)])
  w = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  flax_leaky = lambda x: jax.nn.leaky_relu(x, negative_slope=0.2)
  for f in (lambda x: jnp.sum(w * x), lambda x: jnp.sum(w * x**2)):
    first = [jax.grad(lambda x, act=act: f(act(x)))(x) for act in (models.leaky_relu, flax_leaky)]
    second = [jax.grad(lambda x, act=act: jnp.sum(jax.grad(lambda x: f(act(x)))(x)**2))(x)
              for act in (models.leaky_relu, flax_leaky)]
    np.testing.assert_allclose(*first, rtol=1e-6)
    np.testing.assert_allclose(*second, rtol=1e-6)
  np.testing.assert_array_equal(models.leaky_relu(x), flax_leaky(x))
  np.testing.assert_array_equal(jax.jvp(models.leaky_relu, (x,), (w,)),
                                jax.jvp(flax_leaky, (x,), (w,)))
