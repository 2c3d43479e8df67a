"""Differentiable augmentation: each transform by value, policies, gradients and device invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgan_jax import augment
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


@pytest.mark.parametrize('policy', ['translation,cutout', 'color,translation,cutout'])
def test_augmented_step_eight_devices_match_one(tiny_config, policy):
  tiny_config.augment = policy
  tiny_config.r1_gamma = 1.0  # The penalty sees augmented reals too.
  batches = _batches()
  _, state8, metrics8 = train_steps(tiny_config, jax.devices()[:8], batches)
  _, state1, metrics1 = train_steps(tiny_config, jax.devices()[:1], batches)
  for a, b in zip(jax.tree.leaves(state8), jax.tree.leaves(state1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  tiny_config.augment = ''
  _, plain, _ = train_steps(tiny_config, jax.devices()[:1], batches)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(plain.d_params),
                                                    jax.tree.leaves(state1.d_params)))
