"""A look inside a trained run: parameter tables, label embeddings and pictures.

python -m cgan_jax.inspect --workdir=DIR [--output=DIR] [--step=N]

Writes into --output (default DIR/inspect):
  params.txt                 per-layer parameter table of G and D (also printed);
  embeddings/NET_PATH.npy    every nn.Embed table (also printed);
  embedding_cosine.png       cosine similarity between the class embeddings of each table;
  conditioned_input_pca.png  PCA of the input (and output) of G's first layer after
                             conditioning, many noise draws per class;
  interpolation.png          one row per class between the same two noise vectors;
  loss_curves.png            losses, D accuracy and gradient norms from the TensorBoard events.
"""

import dataclasses
import glob
import os
from typing import Callable, Dict, List, Optional, Tuple

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from cgan_jax import checkpoint
from cgan_jax import cli
from cgan_jax import labels as labels_lib
from cgan_jax import models
from cgan_jax import plots
from cgan_jax import sample


def param_table(params, title: str) -> str:
  """A Keras-summary-like table: one row per parameter array, a subtotal per top-level layer."""
  rows, totals = [], {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = [str(getattr(k, 'key', k)) for k in path]
    count = int(np.prod(np.shape(leaf)))
    rows.append(('/'.join(names), str(tuple(np.shape(leaf))), count))
    totals[names[0]] = totals.get(names[0], 0) + count
  width = max([len(r[0]) for r in rows] + [9])
  lines = [title, f'{"parameter":<{width}}  {"shape":<20} {"count":>10}', '-' * (width + 33)]
  layer = None
  for name, shape, count in rows:
    if name.split('/')[0] != layer:
      if layer is not None:
        lines.append(f'{"":<{width}}  {layer + " total":<20} {totals[layer]:>10,}')
      layer = name.split('/')[0]
    lines.append(f'{name:<{width}}  {shape:<20} {count:>10,}')
  lines.append(f'{"":<{width}}  {layer + " total":<20} {totals[layer]:>10,}')
  lines += ['-' * (width + 33), f'{"total":<{width}}  {"":<20} {sum(totals.values()):>10,}']
  return '\n'.join(lines)


def embedding_tables(params, net: str) -> Dict[str, np.ndarray]:
  """Every nn.Embed table in `params` as {'NET_path_to_embed': (num_classes, features)}."""
  tables = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = [str(getattr(k, 'key', k)) for k in path]
    if names[-1] == 'embedding':  # nn.Embed's one parameter.
      tables['_'.join([net] + names[:-1])] = np.asarray(leaf)
  return tables


def cosine_similarity(table: np.ndarray) -> np.ndarray:
  unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
  return unit @ unit.T


def module_io(generator, params, z, labels) -> List[Tuple[str, np.ndarray, np.ndarray]]:
  """Every submodule call inside G with a float input, in call order: [(path, input, output)]."""
  recorded = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if (context.method_name == '__call__' and context.module.path and args and
        jnp.issubdtype(jnp.asarray(args[0]).dtype, jnp.floating)):
      recorded.append(('/'.join(context.module.path), np.asarray(args[0], np.float32),
                       np.asarray(out, np.float32)))
    return out

  with nn.intercept_methods(record):
    generator.apply({'params': params}, z, labels, train=False)
  return recorded


def find_conditioned_input(generator, params, latent_dim: int,
                           labels=(0, 1, 0)) -> Optional[Tuple[int, str]]:
  """(call index, module path) of the first G layer whose input depends on both z and label.

  That is where conditioning has happened, whatever the style: for 'channel' the base map
  with the label map concatenated, for a z-times-embedding style the projection's input.
  None when no layer input depends on the label (G ignores it).
  """
  z = np.asarray(sample.noise(1, 2, latent_dim))
  # Rows: (z_a, 0), (z_a, 1), (z_b, 0).
  calls = module_io(generator, params, jnp.asarray(z[[0, 0, 1]]), jnp.asarray(labels))
  for i, (path, x, _) in enumerate(calls):
    if x.shape[0] == 3 and not np.allclose(x[0], x[1]) and not np.allclose(x[0], x[2]):
      return i, path
  return None


def pca_2d(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Projection of (N, D) features on their top-2 principal axes, and those axes' variance share."""
  centred = features - features.mean(axis=0)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  return centred @ vt[:2].T, (s[:2]**2) / max(np.sum(s**2), 1e-12)


def class_separation(features: np.ndarray, labels: np.ndarray) -> float:
  """Share of the features' variance explained by the class (between-class / total, in [0, 1])."""
  mean = features.mean(axis=0)
  total = np.sum((features - mean)**2)
  between = sum(np.sum(labels == c) * np.sum((features[labels == c].mean(axis=0) - mean)**2)
                for c in np.unique(labels))
  return float(between / max(total, 1e-12))


def read_scalars(workdir: str) -> plots.Curves:
  """Every scalar in the run's TensorBoard event files: {tag: (steps, values)}, last write wins."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cgan_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  input_pipeline.tensorflow_on_host()
  points = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))):
    try:
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
          if value.HasField('simple_value'):
            points.setdefault(value.tag, {})[event.step] = value.simple_value
          elif value.metadata.plugin_data.plugin_name == 'scalars':
            points.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    except tf.errors.DataLossError:  # The record a running job is writing: read up to it.
      pass
  return {tag: (np.array(sorted(p)), np.array([p[s] for s in sorted(p)]))
          for tag, p in points.items()}


def loss_panels(scalars: plots.Curves) -> List[Tuple[str, plots.Curves]]:
  """Scalars grouped into panels; speed and learning rates are left to TensorBoard."""
  groups = [('losses', 'loss'), ('D accuracy (real, fake)', 'd_acc'),
            ('gradient norms', 'grad_norm')]
  panels, used = [], set()
  for title, key in groups:
    series = {t: v for t, v in scalars.items() if key in t}
    used |= set(series)
    if series:
      panels.append((title, series))
  other = {t: v for t, v in scalars.items()
           if t not in used and not t.endswith(('per_sec', 'learning_rate'))}
  if other:
    panels.append(('other metrics', other))
  return panels


@dataclasses.dataclass
class _Run:
  """What every part of an inspection reads: the restored run and where its files go."""
  workdir: str
  output: str
  config: ml_collections.ConfigDict
  generator: nn.Module
  g_params: dict
  d_params: dict
  g_key: str
  num_classes: tuple
  class_names: List[str]
  log: Callable[[str], None]

  def with_others(self, y):
    """Labels of the first attribute, with every other attribute at 0."""
    others = len(self.num_classes) - 1
    return np.stack([y] + [0 * y] * others, 1) if others else y


def _restore(workdir, output, step, use_ema, log) -> Tuple[_Run, int]:
  g_key = 'ema_g_params' if use_ema else 'g_params'
  restored, config, dataset, step = checkpoint.restore_params(workdir, (g_key, 'd_params'), step)
  num_classes = labels_lib.num_classes_from_json(dataset['num_classes'])
  # With several attributes the pictures sweep the first one (the others at 0).
  names = dataset.get('class_names') or []
  names = names if len(num_classes) == 1 else names[0] if names else []
  generator, _ = models.create_models(config, num_classes, tuple(dataset['image_shape']))
  run = _Run(workdir, output, config, generator, restored[g_key], restored['d_params'], g_key,
             num_classes, [str(n) for n in names or range(num_classes[0])], log)
  return run, step


def _write_params(run: _Run, result: dict):
  tables = param_table(run.g_params, f'Generator ({run.g_key})') + '\n\n' + param_table(
      run.d_params, 'Discriminator (d_params)')
  result['files']['params'] = os.path.join(run.output, 'params.txt')
  with open(result['files']['params'], 'w') as f:
    f.write(tables + '\n')
  run.log(tables)


def _write_embeddings(run: _Run, result: dict):
  embeddings = {**embedding_tables(run.g_params, 'G'), **embedding_tables(run.d_params, 'D')}
  result['embeddings'] = embeddings
  for name, table in embeddings.items():
    np.save(os.path.join(run.output, 'embeddings', f'{name}.npy'), table)
    with np.printoptions(precision=3, suppress=True, linewidth=120):
      run.log(f'\n{name}: nn.Embed table {table.shape} (row = class)\n{table}')
  if embeddings:
    result['files']['embedding_cosine'] = plots.heatmaps(
        [(f'{name}: cosine similarity', cosine_similarity(t)) for name, t in embeddings.items()],
        run.class_names, os.path.join(run.output, 'embedding_cosine.png'))
  else:
    result['notes'].append('No nn.Embed in G or D (conditioning "none"): no embedding heatmap.')


def _write_conditioned_pca(run: _Run, result: dict, num_per_class: int, seed: int):
  latent_dim, g_conditioning = run.config.model.latent_dim, run.config.model.g_conditioning
  found = find_conditioned_input(run.generator, run.g_params, latent_dim,
                                 run.with_others(np.array([0, 1, 0])))
  if found is None:
    result['notes'].append(f'No layer input of G depends on the label (g_conditioning='
                           f'{g_conditioning!r}): no conditioned-input PCA.')
    return
  index, layer = found
  labels = np.repeat(np.arange(run.num_classes[0]), num_per_class)
  z = sample.noise(seed, len(labels), latent_dim)
  _, inputs, outputs = module_io(run.generator, run.g_params, z,
                                 jnp.asarray(run.with_others(labels)))[index]
  panels = []
  # The input shows what conditioning hands G; the layer's output shows what G makes of it.
  for where, features in (('input', inputs), ('output', outputs)):
    features = features.reshape(len(labels), -1)
    points, share = pca_2d(features)
    separation = class_separation(features, labels)
    result[f'pca_{where}'] = {'layer': layer, 'points': points, 'labels': labels,
                              'variance': share, 'class_separation': separation}
    run.log(f'\nConditioned G: {where} of {layer!r} ({features.shape[1]} values); the class '
            f'explains {separation:.1%} of its variance.')
    panels.append((points, f'{where} of G/{layer} ({g_conditioning}); '
                   f'class: {separation:.0%} of var.',
                   (f'PC1 ({share[0]:.0%} of variance)', f'PC2 ({share[1]:.0%})')))
  result['files']['conditioned_input_pca'] = plots.scatter_by_class(
      panels, labels, run.class_names, os.path.join(run.output, 'conditioned_input_pca.png'))


def _write_interpolation(run: _Run, result: dict, num_steps: int, seed: int):
  x, _ = sample.interpolation(run.generator, run.g_params,
                              run.with_others(np.arange(run.num_classes[0])), num_steps, seed,
                              run.config.model.latent_dim, run.num_classes)
  result['interpolation'] = x
  result['files']['interpolation'] = os.path.join(run.output, 'interpolation.png')
  plots.write_image(result['files']['interpolation'],
                    plots.grid(x, num_columns=num_steps, min_cell=32))


def _write_loss_curves(run: _Run, result: dict):
  panels = loss_panels(read_scalars(run.workdir))
  if panels:
    result['files']['loss_curves'] = plots.curves(panels,
                                                  os.path.join(run.output, 'loss_curves.png'))
    result['num_panels'] = len(panels)
  else:
    result['notes'].append(f'No TensorBoard scalars in {run.workdir}: no loss curves.')


def inspect_workdir(workdir: str, output: Optional[str] = None, *, step: Optional[int] = None,
                    use_ema: bool = True, num_per_class: int = 100, num_steps: int = 8,
                    seed: int = 0, log=tqdm.tqdm.write) -> dict:
  """Writes every table and picture for the run in `workdir`; returns what it computed."""
  output = output or os.path.join(workdir, 'inspect')
  run, step = _restore(workdir, output, step, use_ema, log)
  # After the restore, so that a mistyped --workdir creates nothing.
  checkpoint.check_writable(output, '--output')
  os.makedirs(os.path.join(output, 'embeddings'), exist_ok=True)
  result = {'step': step, 'output': output, 'files': {}, 'notes': []}
  log(f'Inspecting {workdir} at step {step} into {output}')
  parts = (lambda: _write_params(run, result),
           lambda: _write_embeddings(run, result),
           lambda: _write_conditioned_pca(run, result, num_per_class, seed),
           lambda: _write_interpolation(run, result, num_steps, seed),
           lambda: _write_loss_curves(run, result))
  for part in tqdm.tqdm(parts, desc='inspect', unit='part'):
    part()
  for note in result['notes']:
    log('Note: ' + note)
  log('Wrote ' + ', '.join(sorted(os.path.relpath(p, output) for p in result['files'].values()))
      + f" and {len(result['embeddings'])} embedding table(s) to {output}")
  return result


FLAGS = flags.FLAGS


def main(argv):
  cli.no_arguments(argv)
  with cli.one_line_errors(ValueError, OSError):
    inspect_workdir(FLAGS.workdir, FLAGS.output, step=FLAGS.step, use_ema=FLAGS.ema,
                    num_per_class=FLAGS.num_per_class, num_steps=FLAGS.num_steps, seed=FLAGS.seed)


if __name__ == '__main__':
  cli.define_run_flags('Inspect')
  flags.DEFINE_string('output', None, 'Where tables and pictures go; default WORKDIR/inspect.')
  flags.DEFINE_integer('num_per_class', 100, 'Noise draws per class in the PCA picture.',
                       lower_bound=1)
  flags.DEFINE_integer('num_steps', 8, 'Images per interpolation row.', lower_bound=2)
  cli.run(main, quiet=True)
