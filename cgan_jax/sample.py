"""Draw the classes you ask for from a trained generator: library and command line.

python -m cgan_jax.sample --workdir=DIR --output=grid.png [--num_per_class=10] [--labels=3,Sandal]
    [--truncation=T] [--interpolate [--num_steps=10]] [--per_class_dir=DIR]

A model trained on several attributes (config.labels) takes one value per attribute,
joined by ':' (--labels=3:1,7:0 for class 3 in style 1 and class 7 in style 0).
"""

import functools
import os
from typing import Optional, Sequence

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from cgan_jax import checkpoint
from cgan_jax import cli
from cgan_jax import conditioning
from cgan_jax import console
from cgan_jax import labels as labels_lib
from cgan_jax import models
from cgan_jax.plots import GRID_EXTENSIONS, grid, write_image  # Used here, and by their old names.


def build_generator(config: ml_collections.ConfigDict, dataset: dict):
  """The generator described by a run's saved config and dataset metadata."""
  num_classes = labels_lib.num_classes_from_json(dataset['num_classes'])
  return models.create_models(config, num_classes, tuple(dataset['image_shape']))[0]


def generate(generator, params, z, labels):
  """Images in [-1, 1] for noise `z` (N, latent_dim) and integer `labels`, or a one-line error."""
  # Checked here: inside jit an out-of-range label silently gives a NaN (or wrapped) embedding.
  labels = check_labels(labels, generator.num_classes)
  if np.ndim(z) != 2 or np.shape(z)[1] != generator.latent_dim:
    raise ValueError(f'z has shape {np.shape(z)}; this model takes noise of shape (N, '
                     f'{generator.latent_dim}), e.g. sample.noise(seed, N, {generator.latent_dim}).')
  if len(z) != len(labels):
    raise ValueError(f'{len(z)} noise vectors for {len(labels)} labels; give one label per row of z.')
  return _generate(generator, params, jnp.asarray(z), labels)


@functools.partial(jax.jit, static_argnums=0)
def _generate(generator, params, z, labels):
  return generator.apply({'params': params}, z, labels, train=False)


def noise(seed: int, n: int, latent_dim: int, truncation: Optional[float] = None):
  """n standard-normal noise vectors; with `truncation` T every |z_i| > T is redrawn.

  Redrawing until inside [-T, T] gives exactly the truncated normal, sampled directly here.
  """
  key = jax.random.PRNGKey(seed)
  if truncation is None:
    return jax.random.normal(key, (n, latent_dim))
  if truncation <= 0:
    raise ValueError(f'--truncation must be > 0 (e.g. 1.0; smaller trades variety for '
                     f'fidelity), got {truncation}.')
  return jax.random.truncated_normal(key, -truncation, truncation, (n, latent_dim))


def parse_labels(text: str, class_names: Sequence = ()) -> np.ndarray:
  """'3,7' or 'Sandal,7' -> [3, 7]; '3:1,7:0' (one value per attribute) -> [[3, 1], [7, 0]].

  A value is one of the dataset's `class_names` (one list per attribute when there are several),
  as named or, where that is unambiguous, in any case with '_' for a space ('ankle_boot'), or
  else a class id.
  """
  rows = [[v.strip() for v in item.split(':')] for item in text.split(',')]
  if len({len(r) for r in rows}) > 1:
    raise ValueError(f'--labels={text!r} gives different numbers of attribute values.')
  names = list(class_names) if len(rows[0]) > 1 else [class_names]
  names += [()] * (len(rows[0]) - len(names))

  def key(name):  # Names with spaces are awkward on a command line: 'ankle_boot' = 'Ankle boot'.
    return ' '.join(str(name).lower().replace('_', ' ').split())

  def value(v, attribute_names):
    # A name first: folders named '1'..'12' sort as '1', '10', '11', '12', '2', ... into ids.
    exact = [i for i, n in enumerate(attribute_names) if str(n) == v]
    loose = [i for i, n in enumerate(attribute_names) if key(n) == key(v)]
    if exact or len(loose) == 1:
      return (exact or loose)[0]
    if loose:
      raise ValueError(f'--labels value {v!r} matches the classes '
                       f'{[attribute_names[i] for i in loose]}; write one exactly as named.')
    if v.lstrip('-').isdigit():
      return int(v)
    known = f" or one of the class names {list(attribute_names)}" if attribute_names else ''
    raise ValueError(f"--labels takes comma-separated class ids{known} (values of several "
                     f"attributes joined by ':', e.g. 3:1,7:0), got {v!r}" +
                     (f' in {text!r}.' if v != text else '.'))
  values = [[value(v, n) for v, n in zip(row, names)] for row in rows]
  return np.array(values if len(rows[0]) > 1 else [r[0] for r in values], np.int32)


def check_labels(labels, num_classes: tuple) -> np.ndarray:
  """Labels as int32 (N,) or (N, attributes), or a one-line error naming what is wrong."""
  values = np.asarray(labels)
  if values.dtype.kind not in 'iub' and not (values.dtype.kind == 'f' and
                                            np.array_equal(values, np.round(values))):
    raise ValueError(f'Labels are class ids (integers), got {values.ravel()[:4].tolist()}.')
  labels = values.astype(np.int32)
  given = labels.shape[1] if labels.ndim == 2 else 1
  if labels.ndim > 2 or given != len(num_classes) or (labels.ndim == 2) != (len(num_classes) > 1):
    raise ValueError(f'This model takes {len(num_classes)} label attribute(s) with '
                     f"{list(num_classes)} classes; give one value per attribute, joined by ':' "
                     f'(got {given}).')
  for attribute, n in enumerate(num_classes):
    values = labels[:, attribute] if labels.ndim == 2 else labels
    bad = values[(values < 0) | (values >= n)]
    if bad.size:
      which = f' of attribute {attribute}' if len(num_classes) > 1 else ''
      raise ValueError(f'Label {int(bad[0])}{which} is out of range: this model has {n} '
                       f'classes, 0..{n - 1}.')
  return labels


def generate_batched(generator, params, z, labels, *, batch_size: int = 500,
                     progress: bool = False) -> np.ndarray:
  """`generate` in chunks (bounded memory) as uint8, with an optional progress bar.

  A G with batch norm normalises each chunk by the chunk's statistics: its last chunk is filled
  up to `batch_size` with images of every class from fixed noise, so that a few images (or one)
  are not normalised by their own statistics alone.
  """
  labels, n = check_labels(labels, generator.num_classes), len(labels)
  if generator.norm != 'none' and n % batch_size:
    fill = batch_size - n % batch_size
    every_class = labels_lib.default_labels(generator.num_classes)
    z = np.concatenate([z, noise(0, fill, np.shape(z)[1])])
    labels = np.concatenate([labels, np.resize(every_class, (fill, *every_class.shape[1:]))])
  starts = range(0, len(labels), batch_size)
  chunks = [to_uint8(generate(generator, params, z[i:i + batch_size], labels[i:i + batch_size]))
            for i in tqdm.tqdm(starts, desc='sampling', unit='batch', disable=not progress)]
  return np.concatenate(chunks)[:n]


def class_samples(generator, params, labels: Sequence[int], num_per_class: int, seed: int,
                  latent_dim: int, num_classes, *, truncation: Optional[float] = None,
                  progress: bool = False):
  """`num_per_class` images of each label: images (N, H, W, C) uint8 and labels (N, ...).

  Ordered row by row: row r holds the r-th sample of every requested label.
  """
  labels = check_labels(labels, num_classes)
  y = np.concatenate([labels] * num_per_class)
  z = noise(seed, len(y), latent_dim, truncation)
  return generate_batched(generator, params, z, y, progress=progress), y


def slerp(z0, z1, num_steps: int) -> np.ndarray:
  """`num_steps` points from z0 to z1 along the great circle (stays where Gaussian noise lives)."""
  z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
  t = np.linspace(0, 1, num_steps)[:, None]
  cos = np.dot(z0, z1) / (np.linalg.norm(z0) * np.linalg.norm(z1))
  omega = np.arccos(np.clip(cos, -1, 1))
  if omega < 1e-6:  # (Anti)parallel endpoints: the straight line is the path.
    return ((1 - t) * z0 + t * z1).astype(np.float32)
  path = (np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)
  return path.astype(np.float32)


def interpolation(generator, params, labels: Sequence[int], num_steps: int, seed: int,
                  latent_dim: int, num_classes, *, truncation: Optional[float] = None):
  """For each label a row of `num_steps` images between the same two noise vectors.

  Returns images (len(labels) * num_steps, H, W, C) uint8, row by row, and their labels.
  """
  if num_steps < 2:
    raise ValueError(f'--num_steps must be at least 2 (the two endpoints), got {num_steps}.')
  labels = check_labels(labels, num_classes)
  z0, z1 = np.asarray(noise(seed, 2, latent_dim, truncation))
  path = slerp(z0, z1, num_steps)
  z = np.tile(path, (len(labels), 1))
  y = np.repeat(labels, num_steps, axis=0)
  return generate_batched(generator, params, z, y), y


def to_uint8(images) -> np.ndarray:
  """[-1, 1] floats to uint8 pixels."""
  return np.asarray(jnp.clip(jnp.round((images + 1) * 127.5), 0, 255), np.uint8)


def class_folder(label, class_names: Sequence) -> str:
  """A folder name for `label`: its class name when it is a safe file name, else the id.

  With several attributes, `label` holds one value each and `class_names` one list each;
  their folder names are joined by '_'.
  """
  if np.ndim(label):
    names = list(class_names) + [()] * len(label)
    return '_'.join(class_folder(int(v), n) for v, n in zip(label, names))
  label = int(label)
  name = class_names[label] if label < len(class_names) else ''
  safe = name and name not in ('.', '..') and not set(name) & set('/\\:\0')
  return name if safe else f'{label:03d}'


def write_per_class(directory: str, images: np.ndarray, labels: np.ndarray,
                    class_names: Sequence[str], *, progress: bool = False):
  """Writes DIRECTORY/<class>/<index>.png (the ImageFolder layout other tools read)."""
  counts = {}
  for image, label in tqdm.tqdm(list(zip(images, labels)), desc='writing', unit='png',
                                disable=not progress):
    folder = os.path.join(directory, class_folder(label, class_names))
    if folder not in counts:
      os.makedirs(folder, exist_ok=True)
    counts[folder] = counts.get(folder, -1) + 1
    write_image(os.path.join(folder, f'{counts[folder]:05d}.png'), image)


def sample_to_file(workdir: str, output: Optional[str] = None, *, num_per_class: int = 10,
                   labels: Optional[Sequence | str] = None, step: Optional[int] = None,
                   seed: int = 0, use_ema: bool = True, truncation: Optional[float] = None,
                   interpolate_steps: int = 0, per_class_dir: Optional[str] = None,
                   progress: bool = False) -> str:
  """Restores G from `workdir` and writes a grid (.png, .jpg), arrays (.npz) and/or PNG folders.

  `labels` may also be --labels text (class ids or names). With `interpolate_steps` > 0 each
  label gets a row of that many images between two fixed noise vectors instead of
  `num_per_class` random samples.
  """
  if output is None and per_class_dir is None:
    raise ValueError('Nothing to write: give --output=FILE.png|FILE.npz and/or --per_class_dir=DIR.')
  ext = output and os.path.splitext(output)[1].lower()
  if output and ext not in (*GRID_EXTENSIONS, '.npz'):
    raise ValueError(f'--output must end in .png or .jpg (a grid) or .npz (arrays x, y), got '
                     f'{output!r}.')
  for directory, flag in ((output and os.path.dirname(os.path.abspath(output)), '--output'),
                          (per_class_dir, '--per_class_dir')):
    if directory:
      checkpoint.check_writable(directory, flag)
  params, config, dataset, step = checkpoint.restore_generator(workdir, step, use_ema)
  generator = build_generator(config, dataset)
  if not conditioning.generator_uses_labels(config.model):
    logging.warning("This run's G is unconditional (model.g_conditioning='none'): its images do "
                    'not depend on the labels, so columns and class folders hold random samples.')
  num_classes = labels_lib.num_classes_from_json(dataset['num_classes'])
  if isinstance(labels, str):
    labels = parse_labels(labels, dataset.get('class_names', ()))
  labels = labels_lib.default_labels(num_classes) if labels is None else labels
  latent_dim = config.model.latent_dim
  if interpolate_steps:
    x, y = interpolation(generator, params, labels, interpolate_steps, seed, latent_dim,
                         num_classes, truncation=truncation)
    num_columns = interpolate_steps  # One row per label.
  else:
    x, y = class_samples(generator, params, labels, num_per_class, seed, latent_dim, num_classes,
                         truncation=truncation, progress=progress)
    num_columns = len(labels)  # One column per label.
  written = []
  if output:
    if ext in GRID_EXTENSIONS:
      write_image(output, grid(x, num_columns=num_columns))
    else:
      np.savez(output, x=x, y=y)
    written.append(output)
  if per_class_dir:
    write_per_class(per_class_dir, x, y, dataset.get('class_names', ()), progress=progress)
    written.append(f'{per_class_dir}/<class>/')
  return f'Wrote {len(y)} samples from step {step} to {" and ".join(written)}'


FLAGS = flags.FLAGS


def main(argv):
  cli.no_arguments(argv)
  with cli.one_line_errors(ValueError, OSError):
    console.say(sample_to_file(FLAGS.workdir, FLAGS.output, num_per_class=FLAGS.num_per_class,
                               labels=FLAGS.labels or None, step=FLAGS.step, seed=FLAGS.seed,
                               use_ema=FLAGS.ema, truncation=FLAGS.truncation,
                               interpolate_steps=FLAGS.num_steps if FLAGS.interpolate else 0,
                               per_class_dir=FLAGS.per_class_dir, progress=True))


if __name__ == '__main__':
  cli.define_run_flags('Sample')
  flags.DEFINE_string('output', None, 'FILE.png or FILE.jpg for a grid, FILE.npz for arrays x, y.')
  flags.DEFINE_integer('num_per_class', 10, 'Samples per requested class.', lower_bound=1)
  flags.DEFINE_string('labels', None, "Comma-separated class ids or names (attribute values "
                      "joined by ':'); default: every class.")
  flags.DEFINE_float('truncation', None, 'Redraw noise entries with |z| above this (e.g. 1.0).')
  flags.DEFINE_bool('interpolate', False,
                    'One row per label between two fixed noise vectors, instead of samples.')
  flags.DEFINE_integer('num_steps', 10, 'Images per interpolation row (with --interpolate).',
                       lower_bound=2)
  flags.DEFINE_string('per_class_dir', None,
                      'Also write DIR/<class>/NNNNN.png, one folder of PNGs per class.')
  cli.run(main, quiet=True)
