"""The input pipeline's values: each image keeps its class, resizing and channel conversion."""

import os

import numpy as np
import pytest
from PIL import Image

from cgan_jax import input_pipeline


def _all_examples(config, split='train'):
  ds, info = input_pipeline.create_dataset(config, split, 1, train=False)
  batches = list(input_pipeline.numpy_batches(ds, config))
  return (np.concatenate([b['image'] for b in batches]),
          np.concatenate([b['label'] for b in batches]), info)


def _to_pixels(image):
  return (image + 1.0) * 127.5


@pytest.mark.parametrize('flat', [False, True])
def test_each_image_keeps_its_class_with_unequal_class_counts(tiny_config, tmp_path, flat):
  counts = {'ant': 1, 'bee': 5, 'cow': 2, 'dog': 7}  # Class c's images are all 30 * c + i.
  root = tmp_path / 'train' if not flat else tmp_path
  for c, (name, n) in enumerate(counts.items()):
    os.makedirs(root / name)
    for i in range(n):
      Image.fromarray(np.full((6, 6), 30 * c + i, np.uint8)).save(root / name / f'{i}.png')
  tiny_config.dataset = f'folder:{tmp_path}'
  images, labels, info = _all_examples(tiny_config)
  assert info.class_names == tuple(counts) and info.num_examples == sum(counts.values())
  pixels = np.round(_to_pixels(images)).astype(int)
  assert (pixels == pixels[:, :1, :1]).all()  # Each image is one value.
  values = pixels[:, 0, 0, 0]
  np.testing.assert_array_equal(labels, values // 30)
  assert sorted(values.tolist()) == sorted(30 * c + i for c, n in enumerate(counts.values())
                                           for i in range(n))


def test_resize_by_value(tiny_config, tmp_path):
  # A horizontal ramp, 10 per column: antialiased bilinear resizing preserves a linear ramp away
  # from the borders, so column j of the half-size image is the ramp at 2j + 0.5: 20j + 5.
  ramp = np.tile(10 * np.arange(16, dtype=np.uint8), (16, 1))
  for split in ('train', 'test'):
    os.makedirs(tmp_path / split / 'a')
    Image.fromarray(ramp).save(tmp_path / split / 'a' / '0.png')
  tiny_config.dataset = f'folder:{tmp_path}'
  tiny_config.image_size = 8
  images, _, info = _all_examples(tiny_config)
  assert info.image_shape == (8, 8, 1)
  pixels = _to_pixels(images[0, :, :, 0])
  np.testing.assert_allclose(pixels[:, 1:-1], np.tile(20 * np.arange(1, 7) + 5.0, (8, 1)),
                             atol=1e-3)
  np.testing.assert_allclose(pixels, np.broadcast_to(pixels[:1], pixels.shape), atol=1e-3)
  tiny_config.image_size = 32  # Upsampled: still the ramp, 5 per column, at (j + 0.5) / 2 - 0.5.
  images, _, _ = _all_examples(tiny_config)
  pixels = _to_pixels(images[0, 0, :, 0])
  np.testing.assert_allclose(pixels[2:-2], 10 * ((np.arange(2, 30) + 0.5) / 2 - 0.5), atol=1e-3)


def test_gray_and_rgb_conversion_by_value(tiny_config, tmp_path):
  colours = {'red': (255, 0, 0), 'green': (0, 255, 0), 'blue': (0, 0, 255), 'gray': (90, 90, 90)}
  for split in ('train', 'test'):
    for name, rgb in colours.items():
      os.makedirs(tmp_path / split / name)
      Image.fromarray(np.full((4, 4, 3), rgb, np.uint8)).save(tmp_path / split / name / '0.png')
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / split / 'gray' / '1.png')
  tiny_config.dataset = f'folder:{tmp_path}'
  images, labels, info = _all_examples(tiny_config)
  assert info.image_shape == (4, 4, 3)  # One colour image or more: RGB.
  names = [info.class_names[label] for label in labels]
  got = sorted((name, tuple(np.round(_to_pixels(im[0, 0])).astype(int)))
               for name, im in zip(names, images))
  assert got == sorted([(n, c) for n, c in colours.items()] + [('gray', (200, 200, 200))])
  tiny_config.num_channels = 1  # ITU-R 601 luma, rounded: 0.2989 R + 0.587 G + 0.114 B.
  images, labels, info = _all_examples(tiny_config)
  assert info.image_shape == (4, 4, 1)
  got = sorted((info.class_names[label], int(np.round(_to_pixels(im[0, 0, 0]))))
               for label, im in zip(labels, images))
  assert got == sorted([('red', 76), ('green', 150), ('blue', 29), ('gray', 90), ('gray', 200)])
