"""Differentiable augmentation of what D sees (DiffAugment, Zhao et al. 2020).

Real and generated images pass through the same random transforms before D, so D cannot
memorise a small training set and G's gradient flows through the transforms. Each example
draws its transforms from its own key: results do not depend on how a batch is split over
devices. Images are NHWC in [-1, 1].
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def brightness(image, key):
  """Adds one uniform offset in [-0.5, 0.5) to every pixel."""
  return image + (jax.random.uniform(key) - 0.5)


def saturation(image, key):
  """Scales each pixel's distance from its channel mean by a factor in [0, 2)."""
  mean = image.mean(axis=-1, keepdims=True)
  return (image - mean) * (jax.random.uniform(key) * 2) + mean


def contrast(image, key):
  """Scales the distance from the image mean by a factor in [0.5, 1.5)."""
  mean = image.mean()
  return (image - mean) * (jax.random.uniform(key) + 0.5) + mean


def translation(image, key, ratio: float = 0.125):
  """Shifts by up to `ratio` of the size in each direction, filling with zeros."""
  height, width, _ = image.shape
  sy, sx = int(height * ratio + 0.5), int(width * ratio + 0.5)
  ky, kx = jax.random.split(key)
  dy = jax.random.randint(ky, (), -sy, sy + 1)
  dx = jax.random.randint(kx, (), -sx, sx + 1)
  padded = jnp.pad(image, ((sy, sy), (sx, sx), (0, 0)))
  return jax.lax.dynamic_slice(padded, (sy - dy, sx - dx, 0), image.shape)


def cutout(image, key, ratio: float = 0.5):
  """Zeroes one square of `ratio` of the size at a random centre (it may cross the border)."""
  height, width, _ = image.shape
  ch, cw = int(height * ratio + 0.5), int(width * ratio + 0.5)
  ky, kx = jax.random.split(key)
  # Centres as in DiffAugment: the square's corner from -size/2 to the far edge.
  top = jax.random.randint(ky, (), 0, height + (1 - ch % 2)) - ch // 2
  left = jax.random.randint(kx, (), 0, width + (1 - cw % 2)) - cw // 2
  rows = jnp.arange(height)[:, None, None]
  cols = jnp.arange(width)[None, :, None]
  inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
  return jnp.where(inside, jnp.zeros_like(image), image)


# Each policy is a sequence of transforms, applied in order (DiffAugment's 'color,translation,cutout').
POLICIES = {
    'color': (brightness, saturation, contrast),
    'translation': (translation,),
    'cutout': (cutout,),
}


def parse_policy(policy: str) -> tuple:
  """The transforms of a comma-separated policy ('' = none), in order."""
  names = [name.strip() for name in policy.split(',') if name.strip()]
  unknown = [name for name in names if name not in POLICIES]
  if unknown:
    raise ValueError(f'Unknown augment policy {unknown[0]!r} in config.augment={policy!r}; '
                     f"use a comma-separated list of {sorted(POLICIES)}, or '' for none.")
  return tuple(transform for name in names for transform in POLICIES[name])


def augment_one(image, key, transforms: Sequence[Callable], probability=1.0):
  """One image through `transforms`, each applied with `probability` (its own coin)."""
  dtype = image.dtype
  image = image.astype(jnp.float32)
  for i, transform in enumerate(transforms):
    apply_key, coin_key = jax.random.split(jax.random.fold_in(key, i))
    changed = transform(image, apply_key)
    if isinstance(probability, float) and probability >= 1.0:
      image = changed
    else:
      image = jnp.where(jax.random.uniform(coin_key) < probability, changed, image)
  return image.astype(dtype)


def augment(images, keys, transforms: Sequence[Callable], probability=1.0):
  """A batch through `transforms`, each example with its own key (`keys`: one per example)."""
  if not transforms:
    return images
  return jax.vmap(lambda x, k: augment_one(x, k, transforms, probability))(images, keys)

