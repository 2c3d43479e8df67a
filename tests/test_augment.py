"""Differentiable augmentation: each transform by value, policies, gradients and device invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgan_jax import augment
from cgan_jax import train_step
from tests.test_conditioning import _batches
from tests.test_conditioning import train_steps


def _image(h=8, w=8, c=1, seed=0):
  return jnp.asarray(np.random.RandomState(seed).uniform(-1, 1, (h, w, c)).astype(np.float32))


def test_translation_is_a_zero_filled_shift_within_the_ratio():
  image = _image()
  for seed in range(20):
    out = np.asarray(augment.translation(image, jax.random.PRNGKey(seed)))
    padded = np.pad(np.asarray(image), ((1, 1), (1, 1), (0, 0)))  # 0.125 of 8 = 1 pixel.
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
              if np.array_equal(out, padded[1 - dy:9 - dy, 1 - dx:9 - dx])]
    assert shifts, f'seed {seed}: not a shift by at most one pixel'


def test_cutout_zeroes_one_square_of_half_the_size():
  image = jnp.ones((8, 8, 1))
  sizes = set()
  for seed in range(30):
    zeroed = np.asarray(augment.cutout(image, jax.random.PRNGKey(seed)))[..., 0] == 0
    rows, cols = np.nonzero(zeroed)
    assert zeroed.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # One rectangle...
    assert np.ptp(rows) + 1 <= 4 and np.ptp(cols) + 1 <= 4  # ...at most half the size a side.
    sizes.add(int(zeroed.sum()))
  assert 16 in sizes  # Whole squares where they do not cross the border.


def test_color_transforms_by_value():
  image = _image(c=3)
  key = jax.random.PRNGKey(3)
  u = float(jax.random.uniform(key))
  np.testing.assert_allclose(augment.brightness(image, key), image + u - 0.5, atol=1e-6)
  mean = image.mean(-1, keepdims=True)
  np.testing.assert_allclose(augment.saturation(image, key), (image - mean) * 2 * u + mean, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(augment.contrast(image, key), (image - image.mean()) * (u + 0.5) +
                             image.mean(), rtol=1e-5, atol=1e-6)


def test_policy_names_and_errors():
  assert augment.parse_policy('') == ()
  assert augment.parse_policy('translation, cutout') == (augment.translation, augment.cutout)
  assert len(augment.parse_policy('color')) == 3
  with pytest.raises(ValueError, match="Unknown augment policy 'flip'"):
    augment.parse_policy('translation,flip')


def test_probability_zero_is_the_identity_and_one_changes_every_image():
  images = jnp.stack([_image(seed=i) for i in range(6)])
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  transforms = augment.parse_policy('color')
  np.testing.assert_array_equal(augment.augment(images, keys, transforms, 0.0), images)
  changed = augment.augment(images, keys, transforms, 1.0)
  assert all(not np.allclose(a, b) for a, b in zip(changed, images))


def test_gradient_flows_through_every_transform():
  images = jnp.stack([_image(seed=i) for i in range(4)])
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  transforms = augment.parse_policy('color,translation,cutout')
  grad = jax.grad(lambda x: jnp.sum(augment.augment(x, keys, transforms) ** 2))(images)
  assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0


@pytest.mark.parametrize('policy,target', [('translation,cutout', 0.0),
                                           ('color,translation,cutout', 0.0),
                                           ('translation,cutout', 0.6)])
def test_augmented_step_eight_devices_match_one(tiny_config, policy, target):
  tiny_config.augment = policy
  tiny_config.r1_gamma = 1.0  # The penalty sees augmented reals too.
  tiny_config.augment_target, tiny_config.augment_ada_images = target, 160  # ADA: 0.1 a step.
  tiny_config.augment_probability = 0.5 if target else 1.0
  batches = _batches()
  _, state8, metrics8 = train_steps(tiny_config, jax.devices()[:8], batches)
  _, state1, metrics1 = train_steps(tiny_config, jax.devices()[:1], batches)
  for a, b in zip(jax.tree.leaves(state8), jax.tree.leaves(state1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  if target:
    assert state1.augment_p != 0.5  # ADA moved the chance, by the same on 8 devices as on 1.
  tiny_config.augment = ''
  _, plain, _ = train_steps(tiny_config, jax.devices()[:1], batches)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(plain.d_params),
                                                    jax.tree.leaves(state1.d_params)))


def test_ada_raises_the_chance_while_d_overfits_and_lowers_it_after(tiny_config):
  tiny_config.batch_size, tiny_config.augment_target, tiny_config.augment_ada_images = 16, 0.6, 160
  adapt = lambda p, acc: float(train_step.adapt_augment_p(jnp.float32(p), acc, tiny_config))
  assert adapt(0.5, 0.95) == pytest.approx(0.6)  # D's mean sign 0.9 > 0.6: more augmentation.
  assert adapt(0.5, 0.7) == pytest.approx(0.4)  # 0.4 < 0.6: less.
  assert adapt(0.95, 1.0) == 1.0 and adapt(0.05, 0.5) == 0.0  # A chance stays one.


@pytest.mark.parametrize('target', [0.0, 0.6])
def test_step_carries_adas_chance_in_the_state(tiny_config, target):
  tiny_config.augment, tiny_config.augment_probability = 'translation,cutout', 0.3
  tiny_config.augment_target, tiny_config.augment_ada_images = target, 160
  _, state, metrics = train_steps(tiny_config, jax.devices()[:1], _batches(steps=1))
  if not target:  # A fixed chance: the config's, and no metric for it.
    assert float(state.augment_p) == pytest.approx(0.3) and 'augment_p' not in metrics
    return
  want = float(train_step.adapt_augment_p(jnp.float32(0.3), metrics['d_acc_real'], tiny_config))
  assert float(state.augment_p) == pytest.approx(want) == pytest.approx(metrics['augment_p'])
  assert want != pytest.approx(0.3)
