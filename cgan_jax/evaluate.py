"""Scores a trained generator with the judge classifier, beside the same scores for real images.

python -m cgan_jax.evaluate --workdir=DIR --classifier=CLFDIR [--num_per_class=N] [--step=S] [--noema]
  [--eval_split=NAME] [--bootstrap=200]

Generated images (N per class) and real held-out images (the ceiling) are each compared with
the same number of real training images: FD, precision/recall and density/coverage use the
judge's penultimate features; accuracy and classifier score its logits. Every metric but the
classifier score comes with a 95% bootstrap interval (`NAME_ci` in the JSON line, [lo, hi] in
the table), so that two runs can be told apart: their intervals should not overlap.
"""

import json
import os
from typing import Optional

from absl import flags
from absl import logging
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from cgan_jax import checkpoint
from cgan_jax import cli
from cgan_jax import classifier
from cgan_jax import input_pipeline
from cgan_jax import metrics
from cgan_jax import sample

# Metrics where smaller is better; every other one is better larger.
LOWER_IS_BETTER = ('fd',)
METRICS = ('cond_acc', 'classifier_score', 'fd', 'precision', 'recall', 'density', 'coverage')
DEFAULT_RESAMPLES = 200  # Bootstrap resamples behind each interval of the evaluate command.


def score(logits, features, labels, reference_features, num_classes: int,
          num_resamples: int = 0, seed: int = 0) -> dict:
  """Every metric for one image set against the reference set's features.

  With `num_resamples`, each metric of METRICS but the classifier score also gets a bootstrap
  interval (`NAME_ci`: [lo, hi], the central 95% of the metric over resamples with replacement):
  accuracy, FD, precision and density resample the scored images; recall and coverage, means over
  the reference images, resample those; the k-NN radii are those of the whole sets.
  """
  accuracy, per_class = metrics.conditional_accuracy(logits, labels, num_classes)
  points = metrics.prdc_points(reference_features, features)
  result = {'cond_acc': accuracy,
            'classifier_score': metrics.classifier_score(logits),
            'fd': metrics.frechet_distance(features, reference_features),
            **{name: float(values.mean()) for name, values in points.items()},
            # None for a class absent from the images (a NaN would make the JSON line invalid).
            'cond_acc_per_class': [None if np.isnan(a) else round(float(a), 4) for a in per_class]}
  if num_resamples:
    scored = metrics.resample_indices(len(features), num_resamples, seed)
    reference = metrics.resample_indices(len(reference_features), num_resamples, seed + 1)
    correct = np.asarray(logits).argmax(-1) == np.asarray(labels)
    result['cond_acc_ci'] = metrics.mean_interval(correct, scored)
    result['fd_ci'] = metrics.frechet_distance_interval(features, reference_features, scored)
    for name, values in points.items():
      result[f'{name}_ci'] = metrics.mean_interval(
          values, scored if name in ('precision', 'density') else reference)
  return result


class Evaluator:
  """Holds the judge and the real images' features; scores any generator of the same data.

  With several label attributes the judge classifies the first one (the class); the other
  attributes of generated images are drawn at random.
  """

  def __init__(self, classifier_dir: str, num_classes, image_shape,
               num_per_class: int = 0, data_config: Optional[ml_collections.ConfigDict] = None,
               num_resamples: int = 0):
    self.model, self.params, clf_config, clf_dataset = classifier.load(classifier_dir)
    self.attribute_counts = input_pipeline.attribute_counts(num_classes)
    num_classes = self.attribute_counts[0]
    if clf_dataset['num_classes'] != num_classes or list(clf_dataset['image_shape']) != list(image_shape):
      raise ValueError(
          f"The classifier in {classifier_dir} judges {clf_dataset['num_classes']} classes of "
          f"{clf_dataset['image_shape']} images ({clf_dataset['name']}), the generator draws "
          f'{num_classes} classes of {list(image_shape)}; train a classifier on the same data.')
    if data_config and clf_dataset['name'] != data_config.dataset:
      # Same classes and shape, other data (say a judge of MNIST for digits): its scores mislead.
      logging.warning('The classifier in %s was trained on %r, the run on %r; its scores compare '
                      'the generator with the judge\'s data, not the run\'s.', classifier_dir,
                      clf_dataset['name'], data_config.dataset)
    config = data_config or clf_config
    test_images, test_labels, _ = classifier.load_split(config, config.eval_split)
    test_labels = test_labels[:, 0] if test_labels.ndim == 2 else test_labels
    self.num_classes = num_classes
    self.num_per_class = num_per_class or len(test_labels) // num_classes
    self.n = self.num_per_class * num_classes
    fewest = max(metrics.PRECISION_RECALL_K, metrics.DENSITY_COVERAGE_K) + 1
    if self.n < fewest:
      remedy = ('raise the images per class (--num_per_class; config.eval_num_per_class in '
                'training)' if num_per_class else
                f"{config.eval_split!r} holds {len(test_labels)}: hold out more images")
      raise ValueError(f'{self.n} images of {num_classes} classes to compare ({self.num_per_class} '
                       f'per class) are too few for the k-NN metrics, which need {fewest}; {remedy}.')
    if self.n > len(test_labels):
      raise ValueError(f'--num_per_class={self.num_per_class} asks for {self.n} images but '
                       f'{config.eval_split!r} holds {len(test_labels)}; use at most '
                       f'{len(test_labels) // num_classes} (the real ceiling needs as many real images).')
    # Held-out images are scored like generated ones; training images are the reference.
    ref_images, _, _ = classifier.load_split(config, config.train_split, self.n, seed=1)
    if len(ref_images) < self.n:
      raise ValueError(f'{config.train_split!r} holds {len(ref_images)} images, fewer than the '
                       f'{self.n} compared; lower --num_per_class.')
    _, self.reference = classifier.predict(self.model, self.params, ref_images)
    real_logits, real_features = classifier.predict(self.model, self.params, test_images[:self.n])
    self.num_resamples = num_resamples  # Bootstrap resamples behind each interval; 0 = none.
    self.real = score(real_logits, real_features, test_labels[:self.n], self.reference, num_classes,
                      num_resamples)

  def __call__(self, generator, g_params, latent_dim: int, seed: int = 0) -> dict:
    """Metrics of `num_per_class` generated images of every class."""
    y = np.tile(np.arange(self.num_classes), self.num_per_class)
    rng = np.random.default_rng(seed)
    others = [rng.integers(0, n, len(y)) for n in self.attribute_counts[1:]]
    labels = np.stack([y, *others], axis=1).astype(np.int32) if others else y
    x = sample.generate_batched(generator, g_params, sample.noise(seed, len(y), latent_dim), labels)
    images = x.astype(np.float32) / 127.5 - 1  # The uint8 pixels a user would save, as the judge sees data.
    logits, features = classifier.predict(self.model, self.params, images)
    return score(logits, features, y, self.reference, self.num_classes, self.num_resamples, seed)


def evaluate(workdir: str, classifier_dir: str, *, num_per_class: int = 0,
             step: Optional[int] = None, use_ema: bool = True, seed: int = 0,
             eval_split: Optional[str] = None,
             num_resamples: int = DEFAULT_RESAMPLES) -> dict:
  """Scores the generator in `workdir` and real held-out images (`eval_split`, by default the
  run's config.eval_split), each metric with a bootstrap interval over `num_resamples` resamples
  (0 = none); writes metrics_step_S.json."""
  params, config, dataset, step = checkpoint.restore_generator(workdir, step, use_ema)
  if eval_split:
    config = config.copy_and_resolve_references()
    config.eval_split = eval_split
  evaluator = Evaluator(classifier_dir, dataset['num_classes'], dataset['image_shape'],
                        num_per_class, data_config=config, num_resamples=num_resamples)
  generated = evaluator(sample.build_generator(config, dataset), params,
                        config.model.latent_dim, seed)
  result = {'step': step, 'ema': use_ema, 'num_per_class': evaluator.num_per_class,
            'n': evaluator.n, 'resamples': num_resamples, 'generated': generated, 'real': evaluator.real}
  with open(os.path.join(workdir, f'metrics_step_{step}.json'), 'w') as f:
    json.dump(result, f)
  return result


def check_best_metric(config: ml_collections.ConfigDict) -> str:
  """config.best_metric, or a one-line error if it names no metric."""
  if config.best_metric not in METRICS:
    raise ValueError(f'Unknown best_metric {config.best_metric!r}; choose one of {METRICS}.')
  return config.best_metric


def create_best_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """Keeps the one checkpoint best by `config.best_metric` in WORKDIR/best (a workdir of its own)."""
  metric = check_best_metric(config)
  return checkpoint.create_manager(
      os.path.join(workdir, 'best'), config, max_to_keep=1, best_fn=lambda scores: scores[metric],
      best_mode='min' if metric in LOWER_IS_BETTER else 'max')


def format_table(result: dict) -> str:
  """The metrics as a text table: generated beside real, each with its 95% interval when known."""
  def cell(scores, name):
    value = f'{scores[name]:.4f}'
    if f'{name}_ci' in scores:
      lo, hi = scores[f'{name}_ci']
      value += f' [{lo:.4f}, {hi:.4f}]'
    return value
  cells = [(name, cell(result['generated'], name), cell(result['real'], name)) for name in METRICS]
  width = max(12, *(len(c) + 2 for row in cells for c in row[1:]))
  lines = [f"{'metric':<18}{'generated':>{width}}{'real':>{width}}"]
  lines += [f'{name:<18}{gen:>{width}}{real:>{width}}' for name, gen, real in cells]
  if result.get('resamples'):
    lines.append(f"[lo, hi]: 95% bootstrap interval over {result['resamples']} resamples.")
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def main(argv):
  cli.no_arguments(argv)
  try:
    result = evaluate(FLAGS.workdir, FLAGS.classifier, num_per_class=FLAGS.num_per_class,
                      step=FLAGS.step, use_ema=FLAGS.ema, seed=FLAGS.seed,
                      eval_split=FLAGS.eval_split, num_resamples=FLAGS.bootstrap)
  except (ValueError, FileNotFoundError) as e:
    # The run's config is fixed; here the held-out split is this command's flag.
    raise SystemExit(f"Error: {str(e).replace('--config.eval_split', '--eval_split')}") from None
  print(format_table(result))
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'Training directory holding checkpoints/.', required=True)
  flags.DEFINE_string('classifier', None, 'The judge: a python -m cgan_jax.classifier --workdir.',
                      required=True)
  flags.DEFINE_integer('num_per_class', 0, 'Generated images per class; 0 = held-out size / classes.',
                       lower_bound=0)
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: the newest.')
  flags.DEFINE_integer('seed', 0, 'Seed of the noise.')
  flags.DEFINE_bool('ema', True, "Score the EMA of G's weights (the raw weights with --noema).")
  flags.DEFINE_integer('bootstrap', DEFAULT_RESAMPLES, 'Bootstrap resamples behind the 95% '
                       'interval of each metric; 0 = no intervals.', lower_bound=0)
  flags.DEFINE_string('eval_split', None, "Held-out split of real images; default: the run's "
                      'config.eval_split.')
  cli.run(main, quiet=True)
