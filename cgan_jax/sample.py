"""Draw the classes you ask for from a trained generator: library and command line.

python -m cgan_jax.sample --workdir=DIR --output=grid.png [--num_per_class=10] [--labels=3,7]
"""

import functools
import os
from typing import Optional, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cgan_jax import checkpoint
from cgan_jax import models


def build_generator(config: ml_collections.ConfigDict, dataset: dict):
  """The generator described by a run's saved config and dataset metadata."""
  return models.create_models(config, dataset['num_classes'], tuple(dataset['image_shape']))[0]


@functools.partial(jax.jit, static_argnums=0)
def generate(generator, params, z, labels):
  """Images in [-1, 1] for noise `z` and integer `labels`."""
  return generator.apply({'params': params}, z, labels, train=False)


def class_samples(generator, params, labels: Sequence[int], num_per_class: int, seed: int,
                  latent_dim: int, num_classes: int):
  """`num_per_class` images of each label: images (N, H, W, C) uint8 and labels (N,).

  Ordered row by row: row r holds the r-th sample of every requested label.
  """
  labels = np.asarray(labels, np.int32)
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if bad.size:
    raise ValueError(f'Label {int(bad[0])} is out of range: this model has {num_classes} '
                     f'classes, 0..{num_classes - 1}.')
  y = np.tile(labels, num_per_class)
  z = jax.random.normal(jax.random.PRNGKey(seed), (len(y), latent_dim))
  x = generate(generator, params, z, jnp.asarray(y))
  return to_uint8(x), y


def to_uint8(images) -> np.ndarray:
  """[-1, 1] floats to uint8 pixels."""
  return np.asarray(jnp.clip(jnp.round((images + 1) * 127.5), 0, 255), np.uint8)


def grid(images: np.ndarray, num_columns: int, *, min_cell: int = 28, pad: int = 2) -> np.ndarray:
  """Tiles (N, H, W, C) uint8 images into one picture, `num_columns` per row.

  Small images are enlarged by an integer factor (nearest neighbour) so every cell is
  at least `min_cell` pixels; cells are separated by `pad` gray pixels.
  """
  n, h, w, c = images.shape
  zoom = max(1, -(-min_cell // h))
  images = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
  h, w = h * zoom, w * zoom
  rows = -(-n // num_columns)
  canvas = np.full((rows * (h + pad) + pad, num_columns * (w + pad) + pad, c), 128, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, num_columns)
    canvas[pad + r * (h + pad):pad + r * (h + pad) + h,
           pad + col * (w + pad):pad + col * (w + pad) + w] = image
  return canvas


def write_png(path: str, picture: np.ndarray):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(path)


def sample_to_file(workdir: str, output: str, *, num_per_class: int = 10,
                   labels: Optional[Sequence[int]] = None, step: Optional[int] = None,
                   seed: int = 0, use_ema: bool = True) -> str:
  """Restores G from `workdir` and writes a class grid (.png) or arrays x, y (.npz)."""
  ext = os.path.splitext(output)[1].lower()
  if ext not in ('.png', '.npz'):
    raise ValueError(f'--output must end in .png (a grid) or .npz (arrays x, y), got {output!r}.')
  params, config, dataset, step = checkpoint.restore_generator(workdir, step, use_ema)
  generator = build_generator(config, dataset)
  labels = range(dataset['num_classes']) if labels is None else labels
  x, y = class_samples(generator, params, labels, num_per_class, seed,
                       config.model.latent_dim, dataset['num_classes'])
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  if ext == '.png':
    write_png(output, grid(x, num_columns=len(list(labels))))
  else:
    np.savez(output, x=x, y=y)
  return f'Wrote {len(y)} samples from step {step} to {output}'


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  labels = None
  if FLAGS.labels:
    try:
      labels = [int(v) for v in FLAGS.labels.split(',')]
    except ValueError:
      raise app.UsageError(f'--labels must be comma-separated integers, got {FLAGS.labels!r}.')
  try:
    print(sample_to_file(FLAGS.workdir, FLAGS.output, num_per_class=FLAGS.num_per_class,
                         labels=labels, step=FLAGS.step, seed=FLAGS.seed, use_ema=FLAGS.ema))
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'Error: {e}') from None


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'Training directory holding checkpoints/.', required=True)
  flags.DEFINE_string('output', None, 'FILE.png for a class grid, FILE.npz for arrays x, y.',
                      required=True)
  flags.DEFINE_integer('num_per_class', 10, 'Samples per requested class.')
  flags.DEFINE_string('labels', None, 'Comma-separated class ids; default: every class.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: the newest.')
  flags.DEFINE_integer('seed', 0, 'Seed of the noise.')
  flags.DEFINE_bool('ema', True, "Sample the EMA of G's weights (the raw weights with --noema).")
  app.run(main)
