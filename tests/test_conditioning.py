"""Every conditioning style: builds, uses the label, trains, and is rebuilt for sampling."""

import functools
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgan_jax import checkpoint
from cgan_jax import conditioning
from cgan_jax import models
from cgan_jax import sample
from cgan_jax import sharding
from cgan_jax import train
from cgan_jax import train_step
from configs import cifar10

LABELS = jnp.array([0, 1, 2, 3])


def train_steps(config, devices, batches, scan=None):
  """(initial state, state after the batches, mean metrics) on a mesh of `devices`."""
  _, init, step = train_step.build(config, (10,), (8, 8, 1))
  mesh = sharding.make_mesh(devices)
  state = train_step.initial_state(init, jax.random.PRNGKey(0), config, sharding.replicated(mesh))
  initial = jax.device_get(state)
  loop = train_step.make_train_loop(step, mesh, scan=scan)
  state, metrics = loop(state, sharding.to_global(batches, mesh))
  return initial, jax.device_get(state), jax.device_get(metrics)


def moved(a, b):
  return max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _batches(steps=2):
  rng = np.random.RandomState(0)
  return {'image': rng.uniform(-1, 1, (steps, 16, 8, 8, 1)).astype(np.float32),
          'label': rng.randint(0, 10, (steps, 16)).astype(np.int32)}


def _configure(config, g, d, norm='none', **model):
  config.model.g_conditioning, config.model.d_conditioning, config.model.g_norm = g, d, norm
  config.model.update(model)
  return config


def test_every_style_builds_and_uses_the_label(tiny_config):
  z = jax.random.normal(jax.random.PRNGKey(0), (4, tiny_config.model.latent_dim))
  for g, norm in itertools.product(conditioning.G_CONDITIONINGS, conditioning.G_NORMS):
    generator, _ = models.create_models(_configure(tiny_config, g, 'none', norm), (10,), (8, 8, 1))
    g_vars = generator.init(jax.random.PRNGKey(1), z, LABELS, train=False)
    # CBN starts as plain BN (gain 1, bias 0): move every parameter off its initial value.
    leaves, tree = jax.tree.flatten(g_vars)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    g_vars = jax.tree.unflatten(tree, [p + 0.1 * jax.random.normal(k, p.shape)
                                       for p, k in zip(leaves, keys)])
    images = generator.apply(g_vars, z, LABELS, train=False)
    assert images.shape == (4, 8, 8, 1)
    moved = float(jnp.abs(images - generator.apply(g_vars, z, LABELS + 5, train=False)).max())
    assert (moved > 1e-5) == conditioning.generator_uses_labels(tiny_config.model), (g, norm, moved)

  for style in conditioning.D_CONDITIONINGS:
    _, discriminator = models.create_models(_configure(tiny_config, 'none', style), (10,), (8, 8, 1))
    d_vars = discriminator.init(jax.random.PRNGKey(2), images, LABELS, train=False)
    apply = functools.partial(discriminator.apply, d_vars, images, train=False,
                              mutable='intermediates')
    (a, aux), (b, _) = apply(LABELS), apply(LABELS + 5)
    assert a.shape == (4,)
    changed = float(jnp.abs(a - b).max()) > 1e-6
    assert changed == (style not in ('none', 'acgan')), style
    if style == 'acgan':
      assert aux['intermediates']['class_logits'][0].shape == (4, 10)


def test_where_the_condition_enters(tiny_config):
  tiny_config.model.num_upsamples = 2
  tiny_config.model.g_condition_at = 2
  tiny_config.model.d_condition_at = 1
  generator, discriminator = models.create_models(tiny_config, (10,), (8, 8, 1))
  z = jnp.ones((4, tiny_config.model.latent_dim))
  g_params = generator.init(jax.random.PRNGKey(0), z, LABELS, train=False)['params']
  # The label map sits on the 8x8 output of the second upsampling: Dense(embed -> 64).
  assert g_params['label_map']['dense']['kernel'].shape == (tiny_config.model.embed_dim, 64)
  d_params = discriminator.init(jax.random.PRNGKey(0), jnp.ones((4, 8, 8, 1)), LABELS,
                                train=False)['params']
  assert d_params['label_map']['dense']['kernel'].shape == (tiny_config.model.embed_dim, 16)
  tiny_config.model.d_condition_at = 3
  with pytest.raises(ValueError, match='d_condition_at=3'):
    models.create_models(tiny_config, (10,), (8, 8, 1))


# Every G style, every D style, every G normalisation, spectral norm and bfloat16 train.
TRAINED = [
    ('none', 'projection', 'cbn', True, 'float32'),
    ('channel', 'channel', 'none', False, 'float32'),
    ('multiply', 'multiply', 'batch', False, 'bfloat16'),
    ('concat', 'concat', 'none', True, 'float32'),
    ('channel', 'acgan', 'cbn', False, 'float32'),
    ('concat', 'none', 'none', False, 'float32'),
]


@pytest.mark.parametrize('g,d,norm,sn,dtype', TRAINED)
def test_trains_two_steps(tiny_config, g, d, norm, sn, dtype):
  _configure(tiny_config, g, d, norm, d_spectral_norm=sn, dtype=dtype)
  initial, state, metrics = train_steps(tiny_config, jax.devices()[:2], _batches())
  assert int(state.step) == 2
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert moved(initial.g_params, state.g_params) > 0
  assert moved(initial.d_params, state.d_params) > 0
  assert {a.dtype for a in jax.tree.leaves(state.g_params)} == {np.dtype(np.float32)}
  # Spectral norm's power iteration advanced u (kept in d_stats).
  assert (bool(jax.tree.leaves(state.d_stats)) and moved(initial.d_stats, state.d_stats) > 0) == sn
  if d == 'acgan':
    assert 'd_loss_class_real' in metrics and 'g_loss_class' in metrics


def test_batch_norm_and_spectral_norm_do_not_depend_on_device_count(tiny_config):
  _configure(tiny_config, 'channel', 'projection', 'cbn', d_spectral_norm=True)
  tiny_config.r1_gamma = 1.0
  _, state8, metrics8 = train_steps(tiny_config, jax.devices()[:8], _batches())
  _, state1, metrics1 = train_steps(tiny_config, jax.devices()[:1], _batches())
  for a, b in zip(jax.tree.leaves(state8), jax.tree.leaves(state1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for k in metrics1:
    np.testing.assert_allclose(metrics8[k], metrics1[k], rtol=1e-4, atol=1e-5)


def test_saved_config_rebuilds_the_model_for_sampling(tiny_config, tmp_path):
  _configure(tiny_config, 'multiply', 'projection', 'cbn', d_spectral_norm=True,
             num_upsamples=2)
  tiny_config.loss = 'hinge'
  tiny_config.num_train_steps = 2
  state = train.train_and_evaluate(tiny_config, str(tmp_path))
  params, config, dataset, _ = checkpoint.restore_generator(str(tmp_path))
  assert config.model.to_dict() == tiny_config.model.to_dict()
  generator = sample.build_generator(config, dataset)
  trained, _ = models.create_models(tiny_config, (10,), (8, 8, 1))
  z = jax.random.normal(jax.random.PRNGKey(0), (4, config.model.latent_dim))
  # Compiled (sample) and op-by-op (here), the Winograd transforms round differently: ~1e-6.
  np.testing.assert_allclose(
      sample.generate(generator, params, z, LABELS),
      trained.apply({'params': jax.device_get(state.ema_g_params)}, z, LABELS, train=False),
      atol=1e-5)


def test_embeddings_from_file_and_frozen(tiny_config, tmp_path):
  table = np.random.RandomState(0).normal(size=(10, tiny_config.model.embed_dim)).astype(np.float32)
  path = str(tmp_path / 'embed.npy')
  np.save(path, table)
  _configure(tiny_config, 'channel', 'concat', embed_init_file=path, freeze_embed=True)
  initial, state, _ = train_steps(tiny_config, jax.devices()[:1], _batches())
  # The tables feed the losses, so only the freezing keeps them equal to the file.
  for params in (state.g_params['label_map']['label'], state.d_params['label_concat']):
    np.testing.assert_array_equal(params['pretrained']['embedding'], table)
  assert moved(initial.g_params['label_map']['dense'], state.g_params['label_map']['dense']) > 0

  # The file's checks, made when a fresh run loads it.
  np.save(path, table[:, :2])
  with pytest.raises(ValueError, match=r'has shape \(10, 2\).*needs \(10, 4\)'):
    conditioning.load_pretrained_tables(initial.g_params, path)
  with pytest.raises(FileNotFoundError, match='does not exist'):
    conditioning.load_pretrained_tables(initial.g_params, str(tmp_path / 'missing.npy'))
  (tmp_path / 'embed.txt').write_text('0.1 0.2\n')
  np.savez(tmp_path / 'embed.npz', table=table)
  for name, message in (('embed.txt', r'is not a \.npy file; write the table with numpy\.save'),
                        ('embed.npz', 'does not hold one numeric array')):
    with pytest.raises(ValueError, match=message):
      conditioning.load_pretrained_tables(initial.d_params, str(tmp_path / name))


def test_run_from_an_embedding_file_outlives_the_file(tiny_config, tmp_path):
  """The checkpoint holds the table: sampling and resuming need the file no more."""
  table = np.random.RandomState(0).normal(size=(10, tiny_config.model.embed_dim)).astype(np.float32)
  path, workdir = tmp_path / 'embed.npy', str(tmp_path / 'run')
  np.save(path, table)
  tiny_config.model.embed_init_file, tiny_config.model.freeze_embed = str(path), True
  tiny_config.num_train_steps = 2
  train.train_and_evaluate(tiny_config, workdir)
  os.rename(path, tmp_path / 'moved.npy')
  params, config, dataset, _ = checkpoint.restore_generator(workdir, use_ema=False)
  np.testing.assert_array_equal(params['label_map']['label']['pretrained']['embedding'], table)
  images = sample.generate(sample.build_generator(config, dataset), params,
                           np.zeros((2, config.model.latent_dim)), [3, 7])
  assert np.isfinite(images).all()
  tiny_config.num_train_steps = 4  # The same command, the file gone.
  assert int(train.train_and_evaluate(tiny_config, workdir).step) == 4
  tiny_config.model.embed_init_file, tiny_config.num_train_steps = str(tmp_path / 'moved.npy'), 6
  assert int(train.train_and_evaluate(tiny_config, workdir).step) == 6
  tiny_config.model.embed_init_file = None  # Without a table from a file: another model.
  tiny_config.model.freeze_embed = False
  with pytest.raises(ValueError, match=r"different model \(model.embed_init_file: '.*' -> None, "):
    train.train_and_evaluate(tiny_config, workdir)
  tiny_config.model.embed_init_file, tiny_config.model.freeze_embed = str(path), True
  # A fresh run still needs its file.
  with pytest.raises(FileNotFoundError, match='embed.npy does not exist'):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'fresh'))


def test_embedding_file_needs_a_style_that_reads_it(tiny_config, tmp_path):
  tiny_config.model.embed_init_file = str(tmp_path / 'embed.npy')
  tiny_config.model.g_conditioning, tiny_config.model.d_conditioning = 'multiply', 'projection'
  with pytest.raises(ValueError, match=r"^model.embed_init_file starts the tables of the 'channel' "
                     r"and 'concat' styles; g_conditioning='multiply' and d_conditioning="):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_condition_at_needs_a_style_that_uses_it(tiny_config, tmp_path):
  """It was silently ignored by the styles that do not place a label map."""
  tiny_config.model.d_conditioning, tiny_config.model.d_condition_at = 'projection', 1
  with pytest.raises(ValueError, match=r"^model.d_condition_at places the label of "
                     r"channel/concat/multiply; d_conditioning='projection' does not use it"):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  tiny_config.model.d_conditioning = 'concat'  # Uses it.
  tiny_config.num_train_steps = 1
  assert int(train.train_and_evaluate(tiny_config, str(tmp_path / 'run')).step) == 1


def test_unknown_styles_are_clear_errors(tiny_config):
  for field in ('g_conditioning', 'd_conditioning', 'g_norm', 'dtype'):
    tiny_config.model[field] = 'nope'
    with pytest.raises(ValueError, match=field):
      models.create_models(tiny_config, (10,), (8, 8, 1))
    tiny_config.model[field] = {'dtype': 'float32', 'g_norm': 'none'}.get(field, 'channel')


def test_cifar10_config_builds():
  config = cifar10.get_config()
  generator, discriminator = models.create_models(config, (10,), (32, 32, 3))
  z, labels = jnp.zeros((2, config.model.latent_dim)), jnp.array([0, 9])
  g_vars = jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), z, labels, train=False))
  images = jax.eval_shape(functools.partial(generator.apply, train=False), g_vars, z, labels)
  assert images.shape == (2, 32, 32, 3)
  d_vars = jax.eval_shape(functools.partial(discriminator.init, train=False),
                          jax.random.PRNGKey(0), images, labels)
  assert 'projection' in d_vars['params'] and d_vars['batch_stats']


def test_several_attributes_each_change_the_output(tiny_config):
  counts = (10, 3)  # E.g. class and style: one embedding table each, summed.
  labels = jnp.array([[0, 0], [1, 2], [2, 1], [3, 0]])
  z = jax.random.normal(jax.random.PRNGKey(0), (4, tiny_config.model.latent_dim))
  for g, d, norm in (('channel', 'projection', 'none'), ('multiply', 'concat', 'cbn'),
                     ('concat', 'multiply', 'none')):
    generator, discriminator = models.create_models(_configure(tiny_config, g, d, norm), counts,
                                                    (8, 8, 1))
    g_vars = generator.init(jax.random.PRNGKey(1), z, labels, train=False)
    images = generator.apply(g_vars, z, labels, train=False)
    d_vars = discriminator.init(jax.random.PRNGKey(2), images, labels, train=False)
    logits = discriminator.apply(d_vars, images, labels, train=False)
    for attribute in range(2):
      other = labels.at[:, attribute].set((labels[:, attribute] + 1) % counts[attribute])
      if norm == 'none':  # CBN starts label-independent (gain 1, bias 0).
        assert float(jnp.abs(generator.apply(g_vars, z, other, train=False) - images).max()) > 0
      assert float(jnp.abs(discriminator.apply(d_vars, images, other, train=False) - logits).max()) > 0


def test_batch_norm_statistics_in_float32_for_bfloat16():
  x = (100.0 + jax.random.normal(jax.random.PRNGKey(0), (16, 4, 4, 8))).astype(jnp.bfloat16)
  norm = conditioning.BatchNorm()
  y = norm.apply(norm.init(jax.random.PRNGKey(1), x), x).astype(jnp.float32)
  np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, atol=0.05)  # Failed with bf16 sums.
