"""GAN losses, gradient penalties and D steps: the formulas, and a few training steps with each."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cgan_jax import losses
from cgan_jax import models
from tests.test_conditioning import _batches
from tests.test_conditioning import moved
from tests.test_conditioning import train_steps

LOGITS = jnp.linspace(-3.0, 3.0, 13)


def test_losses_push_real_up_and_fake_down():
  between = jnp.linspace(0.0, 1.0, 5)  # Between LSGAN's targets, where every loss is monotone.
  for name, loss in losses.LOSSES.items():
    d_real, d_fake, g = (np.asarray(f(between)) for f in loss)
    # D wants real logits high and fake logits low; G wants its fakes' logits high.
    assert np.all(np.diff(d_real) < 0), name
    assert np.all(np.diff(d_fake) > 0), name
    assert np.all(np.diff(g) < 0), name
  hinge = losses.get_loss('hinge')
  np.testing.assert_allclose(hinge.d_real(LOGITS), np.maximum(0, 1 - np.asarray(LOGITS)))
  np.testing.assert_allclose(losses.get_loss('least_squares').d_fake(LOGITS), LOGITS**2 / 2)
  with pytest.raises(ValueError, match='Unknown loss'):
    losses.get_loss('nope')


def test_penalties_of_a_linear_critic():
  w = jnp.array([[3.0, 0.0], [0.0, 4.0]])  # |w| = 5: the input gradient of <w, x>.
  logit_fn = lambda x, scale: scale * jnp.sum(w * x)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2))
  scale = jnp.array([1.0, 2.0, 0.5])
  np.testing.assert_allclose(losses.r1_penalty(logit_fn, x, scale), 25 * scale**2, rtol=1e-6)
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  np.testing.assert_allclose(losses.gradient_penalty(logit_fn, x, -x, keys, scale),
                             (5 * scale - 1)**2, rtol=1e-5)


def test_class_cross_entropy():
  logits = jax.random.normal(jax.random.PRNGKey(0), (5, 10))
  labels = jnp.array([0, 3, 9, 3, 1])
  np.testing.assert_allclose(losses.class_cross_entropy(logits, labels),
                             optax.softmax_cross_entropy_with_integer_labels(logits, labels),
                             rtol=1e-5)


@pytest.mark.parametrize('loss,extra', [
    ('hinge', {'r1_gamma': 1.0}),
    ('wgan', {'gp_weight': 10.0, 'd_steps': 2}),
    ('least_squares', {'d_update': 'separate', 'r1_gamma': 0.1, 'gp_weight': 1.0}),
])
def test_each_loss_trains(tiny_config, loss, extra):
  tiny_config.loss = loss
  tiny_config.update(extra)
  initial, state, metrics = train_steps(tiny_config, jax.devices()[:2], _batches())
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert moved(initial.g_params, state.g_params) > 0
  assert ('d_loss_r1' in metrics) == bool(tiny_config.r1_gamma)
  assert ('d_loss_gp' in metrics) == bool(tiny_config.gp_weight)
  # d_loss is D's whole objective, penalties included (as g_loss is G's).
  terms = [v for k, v in metrics.items() if k.startswith('d_loss_')]
  assert metrics['d_loss'] == pytest.approx(float(sum(terms)), rel=1e-5)
  # Adam counts its updates: d_steps per step, one more per step for a separate real/fake D.
  updates = 2 * tiny_config.d_steps * (2 if tiny_config.d_update == 'separate' else 1)
  assert int(state.d_opt_state[0].count) == updates


def test_penalty_gradients_through_the_fast_layers_match_xla():
  """R1 differentiates D's input gradient: the custom VJPs must be right to second order."""
  images = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))
  labels = jnp.array([1, 2, 3])
  keys = jax.random.split(jax.random.PRNGKey(5), 3)
  fast, xla = (models.DCGANDiscriminator(num_classes=(10,), width=16, layer_impl=impl)
               for impl in ('auto', 'conv'))
  params = fast.init(jax.random.PRNGKey(1), images, labels, train=False)['params']
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)

  def penalty_grads(discriminator):
    def r1(params):
      logit_fn = lambda image, label, key: discriminator.apply(
          {'params': params}, image[None], label[None], dropout_keys=key[None])[0]
      return losses.r1_penalty(logit_fn, images, labels, keys).mean()
    return jax.grad(r1)(params)
  got, want = penalty_grads(fast), penalty_grads(xla)
  assert float(jnp.abs(want['down1']['kernel']).max()) > 1e-3
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4)
