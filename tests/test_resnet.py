"""The residual models: shapes per image size, conditioning styles, and the sharded step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgan_jax import models
from cgan_jax import resnet
from tests.test_conditioning import _batches
from tests.test_conditioning import train_steps


def _resnet(config, **model):
  config.model.update(dict(name='resnet', g_norm='cbn', g_conditioning='none',
                           d_conditioning='projection', d_spectral_norm=True), **model)
  config.model.d_dropout = 0.0
  return config


@pytest.mark.parametrize('size,upsamples,channels,d_blocks', [
    (28, 2, 1, 4), (32, 3, 3, 4), (64, 4, 3, 5)])
def test_sizes(tiny_config, size, upsamples, channels, d_blocks):
  config = _resnet(tiny_config, num_upsamples=upsamples, hierarchical_z=True)
  g, d = models.create_models(config, (10,), (size, size, channels))
  z, y = jnp.ones((2, config.model.latent_dim)), jnp.array([3, 7])
  g_vars = g.init(jax.random.PRNGKey(0), z, y, train=False)
  x = g.apply(g_vars, z, y, train=False)
  assert x.shape == (2, size, size, channels) and float(jnp.abs(x).max()) <= 1
  d_vars = d.init(jax.random.PRNGKey(1), x, y, train=False)
  assert d.apply(d_vars, x, y, train=False).shape == (2,)
  assert len([k for k in d_vars['params'] if k.startswith('block')]) == d_blocks
  assert resnet.d_downsamples(size) == d_blocks - 2


@pytest.mark.parametrize('g,d,norm', [
    ('none', 'projection', 'cbn'), ('concat', 'acgan', 'cbn'), ('channel', 'channel', 'batch'),
    ('multiply', 'concat', 'cbn'), ('none', 'multiply', 'cbn'), ('none', 'none', 'cbn')])
def test_styles_train(tiny_config, g, d, norm):
  config = _resnet(tiny_config, g_conditioning=g, d_conditioning=d, g_norm=norm)
  batches = _batches()
  initial, state, metrics = train_steps(config, jax.devices()[:1], batches)
  assert all(np.isfinite(v).all() for v in metrics.values())
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(initial.g_params),
                                                    jax.tree.leaves(state.g_params)))


def test_eight_devices_match_one(tiny_config):
  config = _resnet(tiny_config, hierarchical_z=True)
  config.augment = 'translation,cutout'
  batches = _batches()
  _, state8, _ = train_steps(config, jax.devices()[:8], batches)
  _, state1, _ = train_steps(config, jax.devices()[:1], batches)
  for name in ('g_params', 'd_params', 'ema_g_params', 'd_stats', 'rng', 'step'):
    for a, b in zip(jax.tree.leaves(getattr(state8, name)), jax.tree.leaves(getattr(state1, name))):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
  # Adam's moments hold raw gradients. Their sums over the batch run in another order on 8
  # devices, and batch norm's backward pass loses digits to cancellation: on some CPUs they
  # differ by about 0.1% of a tensor's largest value (a wrong key or mean would give ~100%).
  for name in ('g_opt_state', 'd_opt_state'):
    for a, b in zip(jax.tree.leaves(getattr(state8, name)), jax.tree.leaves(getattr(state1, name))):
      assert np.abs(np.asarray(a) - b).max() <= 1e-2 * np.abs(b).max() + 1e-6, name


def test_bad_settings_are_one_line_errors(tiny_config):
  with pytest.raises(ValueError, match="g_norm to 'cbn'"):
    models.create_models(_resnet(tiny_config, g_norm='none'), (10,), (8, 8, 1))
  with pytest.raises(ValueError, match='d_condition_at=5'):
    models.create_models(_resnet(tiny_config, d_conditioning='channel', d_condition_at=5), (10,),
                         (8, 8, 1))
