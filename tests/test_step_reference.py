"""The project's train step against a plain one written here (flax apply, jax.grad, optax).

The reference follows the step's documented recipe: D's update(s) on real images and fakes of
random labels drawn uniformly over all classes, then G's update against the updated D, then the
EMA; its keys are fold_in(rng, step), split in three (real, fake, G), one key per example (its
index in the global batch), each split in three (noise, label, D's dropout). Losses, new
parameters, optimiser states and EMA must agree to float32 tolerance, over several steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cgan_jax import losses
from cgan_jax import models
from cgan_jax import sharding
from cgan_jax import train_step

NUM_CLASSES, SHAPE, BATCH, STEPS = 10, (8, 8, 1), 8, 3


def example_keys(key, n):
  return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n))


def generate(config, generator, g_params, key, n):
  """n fakes of labels uniform over the classes, and D's dropout keys for them."""
  keys = jax.vmap(lambda k: jax.random.split(k, 3))(example_keys(key, n))
  z = jax.vmap(lambda k: jax.random.normal(k, (config.model.latent_dim,)))(keys[:, 0])
  labels = jax.vmap(lambda k: jax.random.randint(k, (), 0, NUM_CLASSES))(keys[:, 1])
  return generator.apply({'params': g_params}, z, labels, train=True), labels, keys[:, 2]


def discriminate(discriminator, d_params, d_stats, images, labels, keys):
  """(logits, class logits or None, new batch_stats)."""
  logits, aux = discriminator.apply({'params': d_params, 'batch_stats': d_stats}, images, labels,
                                    train=True, dropout_keys=keys,
                                    mutable=['batch_stats', 'intermediates'])
  classes = aux['intermediates']['class_logits'][0] if 'intermediates' in aux else None
  return logits, classes, aux.get('batch_stats', {})


def input_grad_norm_sq(discriminator, d_params, d_stats, images, labels, keys):
  """Per-example |d D(x) / dx|^2, D run on each example alone."""
  def one(image, label, key):
    return discriminate(discriminator, d_params, d_stats, image[None], label[None], key[None])[0][0]
  grads = jax.vmap(jax.grad(one))(images, labels, keys)
  return jnp.sum(grads.reshape(len(images), -1)**2, axis=-1)


def d_loss(config, discriminator, params, stats, terms_of, real, fake):
  """D's loss over the terms `terms_of` ('real', 'fake' or both), its terms and new stats."""
  loss = losses.LOSSES[config.loss]
  images, labels, real_keys = real
  fakes, fake_labels, fake_keys = fake
  terms, new_stats = {}, stats
  if 'real' in terms_of:
    logits, classes, new_stats = discriminate(discriminator, params, stats, images, labels,
                                              real_keys)
    terms['d_loss_real'] = jnp.mean(loss.d_real(logits))
    if classes is not None:
      terms['d_loss_class_real'] = config.acgan_weight * jnp.mean(
          -jax.nn.log_softmax(classes)[jnp.arange(len(labels)), labels])
    if config.r1_gamma:
      terms['d_loss_r1'] = 0.5 * config.r1_gamma * jnp.mean(input_grad_norm_sq(
          discriminator, params, stats, images, labels, real_keys))
  if 'fake' in terms_of:
    logits, classes, _ = discriminate(discriminator, params, stats, fakes, fake_labels, fake_keys)
    terms['d_loss_fake'] = jnp.mean(loss.d_fake(logits))
    if classes is not None:
      terms['d_loss_class_fake'] = config.acgan_weight * jnp.mean(
          -jax.nn.log_softmax(classes)[jnp.arange(len(fake_labels)), fake_labels])
    if config.gp_weight:
      t = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1)))(fake_keys)
      mixed = t[:, None, None, None] * images + (1 - t[:, None, None, None]) * fakes
      norm = jnp.sqrt(input_grad_norm_sq(discriminator, params, stats, mixed, fake_labels,
                                         fake_keys) + 1e-12)
      terms['d_loss_gp'] = config.gp_weight * jnp.mean((norm - 1)**2)
  return sum(terms.values()), (terms, new_stats)


def reference_step(config, generator, discriminator, state, batch):
  """One step, plainly: returns (step, g_params, d_params, g_opt, d_opt, ema, d_stats), metrics."""
  g_rate, d_rate = config.g_learning_rate, config.d_learning_rate
  if config.lr_schedule == 'linear':  # Each optimiser's rate reaches 0 at its last update.
    d_updates = config.num_train_steps * config.d_steps * (2 if config.d_update == 'separate' else 1)
    g_rate = optax.linear_schedule(g_rate, 0.0, config.num_train_steps)
    d_rate = optax.linear_schedule(d_rate, 0.0, d_updates)
  g_tx = optax.adam(g_rate, b1=config.g_b1, b2=config.g_b2)
  d_tx = optax.adam(d_rate, b1=config.d_b1, b2=config.d_b2)
  real_key, fake_key, g_key = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
  n = len(batch['label'])
  d_params, d_stats, d_opt = state.d_params, state.d_stats, state.d_opt_state
  metrics = {}
  for i in range(config.d_steps):
    rk = real_key if i == 0 else jax.random.fold_in(real_key, i)
    fk = fake_key if i == 0 else jax.random.fold_in(fake_key, i)
    fakes = generate(config, generator, state.g_params, fk, n)
    real = (batch['image'], batch['label'], example_keys(rk, n))
    phases = [('real', 'fake')] if config.d_update == 'joint' else [('real',), ('fake',)]
    for phase in phases:
      grads, (terms, d_stats) = jax.grad(
          lambda p, phase=phase, stats=d_stats: d_loss(config, discriminator, p, stats, phase,
                                                       real, fakes), has_aux=True)(d_params)
      updates, d_opt = d_tx.update(grads, d_opt, d_params)
      d_params = optax.apply_updates(d_params, updates)
      metrics.update(terms)
      suffix = '' if len(phases) == 1 else '_' + phase[0]
      metrics['d_grad_norm' + suffix] = optax.tree.norm(grads)

  def g_loss(params):
    images, labels, keys = generate(config, generator, params, g_key,
                                    config.g_batch_size or config.batch_size)
    logits, classes, _ = discriminate(discriminator, d_params, d_stats, images, labels, keys)
    terms = {'g_loss_adv': jnp.mean(losses.LOSSES[config.loss].g(logits))}
    if classes is not None:
      terms['g_loss_class'] = config.acgan_weight * jnp.mean(
          -jax.nn.log_softmax(classes)[jnp.arange(len(labels)), labels])
    return sum(terms.values()), terms
  (metrics['g_loss'], g_terms), grads = jax.value_and_grad(g_loss, has_aux=True)(state.g_params)
  if 'g_loss_class' in g_terms:
    metrics.update(g_terms)
  metrics['g_grad_norm'] = optax.tree.norm(grads)
  updates, g_opt = g_tx.update(grads, state.g_opt_state, state.g_params)
  g_params = optax.apply_updates(state.g_params, updates)
  decay = jnp.minimum(config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
  ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema_g_params, g_params)
  metrics['d_loss'] = sum(v for k, v in metrics.items() if k.startswith('d_loss_'))
  new = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                      g_opt_state=g_opt, d_opt_state=d_opt, ema_g_params=ema, d_stats=d_stats)
  return new, metrics


CASES = {
    'non_saturating': dict(loss='non_saturating'),
    'non_saturating-separate': dict(loss='non_saturating', d_update='separate'),
    'hinge-d_steps2': dict(loss='hinge', d_steps=2),
    'hinge-separate-spectral': dict(loss='hinge', d_update='separate', d_spectral_norm=True),
    'wgan-gp': dict(loss='wgan', gp_weight=10.0),
    'wgan-gp-separate-d_steps2': dict(loss='wgan', gp_weight=10.0, d_update='separate',
                                      d_steps=2),
    'least_squares-r1': dict(loss='least_squares', r1_gamma=1.0),
    'least_squares-r1-separate': dict(loss='least_squares', r1_gamma=1.0, d_update='separate'),
    'acgan': dict(d_conditioning='acgan'),
    'hinge-linear_lr-separate-d_steps2': dict(loss='hinge', lr_schedule='linear', d_steps=2,
                                              d_update='separate', num_train_steps=4),
    'acgan-hinge-separate-g_batch': dict(loss='hinge', d_conditioning='acgan',
                                         d_update='separate', g_batch_size=16),
}


def _config(tiny_config, case):
  config = tiny_config
  config.batch_size = BATCH
  config.ema_decay = 0.15  # The warm-up's decay (0.1) at step 0, then this one.
  config.d_learning_rate, config.g_learning_rate = 1e-2, 1e-2  # Steps that move D and G visibly.
  for key, value in CASES[case].items():
    if key in ('d_conditioning', 'd_spectral_norm'):
      config.model[key] = value
    else:
      config[key] = value
  return config


@pytest.mark.parametrize('case', sorted(CASES))
def test_step_matches_the_reference(tiny_config, case):
  config = _config(tiny_config, case)
  generator, discriminator = models.create_models(config, (NUM_CLASSES,), SHAPE)
  _, init, step = train_step.build(config, (NUM_CLASSES,), SHAPE)
  mesh = sharding.make_mesh(jax.devices()[:1])
  state = train_step.initial_state(init, jax.random.PRNGKey(3), config, sharding.replicated(mesh))
  state = jax.device_get(state)
  project = train_step.make_sharded_step(step, mesh)
  reference = jax.jit(lambda s, b: reference_step(config, generator, discriminator, s, b))
  rng = np.random.RandomState(0)
  expected = state
  for i in range(STEPS):
    batch = {'image': rng.uniform(-1, 1, (BATCH, *SHAPE)).astype(np.float32),
             'label': rng.randint(0, NUM_CLASSES, BATCH).astype(np.int32)}
    expected, want = jax.device_get(reference(expected, batch))
    state, got = project(jax.device_put(state, sharding.replicated(mesh)),
                         sharding.to_global(batch, mesh, 0))
    state, got = jax.device_get((state, got))
    assert not got['nonfinite'], f'step {i}: {got}'
    for k, v in want.items():
      np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=f'step {i}: {k}')
    for name in ('step', 'd_params', 'd_opt_state', 'd_stats', 'g_params', 'g_opt_state',
                 'ema_g_params'):
      for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(getattr(state, name)),
                              jax.tree.leaves(getattr(expected, name))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                   err_msg=f'step {i}: {name}{jax.tree_util.keystr(path)}')
  # The steps moved every part of the state, so the comparison above compares something.
  initial = jax.device_get(train_step.initial_state(init, jax.random.PRNGKey(3), config,
                                                    sharding.replicated(mesh)))
  for name in ('d_params', 'g_params', 'ema_g_params'):
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(
        jax.tree.leaves(getattr(state, name)), jax.tree.leaves(getattr(initial, name)))), name
