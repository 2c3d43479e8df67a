"""Trains recipes for fixed step budgets on an image array, saves their samples, and scores them.

Each recipe is a config file plus overrides and the steps it reaches in 5 and 10 minutes of
training on a given CPU (`cpu_steps`, measured there with `speed`); `train` trains it for those
steps on whatever JAX platform is present (no TensorFlow needed), so a fast accelerator gives
the samples a CPU would draw in that wall-clock budget. `score` judges the samples with a
classifier that never saw the GAN's training images.

  python benchmarks/quality_sweep.py pack --folder=PATH/mnist-5k --out=bundle/mnist5k.npz
  python benchmarks/quality_sweep.py speed --data=bundle/mnist5k.npz [--recipes=a,b]
  PYTHONPATH=. python benchmarks/quality_sweep.py train --data=bundle/mnist5k.npz --out=DIR
  python benchmarks/quality_sweep.py score --data=bundle/mnist5k.npz --out=DIR --judge=JUDGE_DIR

`train` uses the first half of the training images (TFDS's 'train[:50%]' of the folder) and
`score` expects a judge trained on the other half ('train[50%:]'), tested on 'test'.
"""

import argparse
import importlib
import json
import os
import sys
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cgan_jax import collapse  # pylint: disable=wrong-import-position
from cgan_jax import sample  # pylint: disable=wrong-import-position
from cgan_jax import sharding  # pylint: disable=wrong-import-position
from cgan_jax import train_step  # pylint: disable=wrong-import-position

# Each recipe is a config file and its overrides, complete over configs/default.py so that a
# change of configs/mnist.py leaves the others as measured. `mnist` is configs/mnist.py as shipped.
_PROJECTION = {'model.num_upsamples': 2, 'model.g_out_kernel': 7,
               'model.d_conditioning': 'projection', 'model.d_spectral_norm': True,
               'model.d_dropout': 0.0, 'loss': 'hinge', 'model.g_norm': 'cbn', 'batch_size': 32,
               'ema_decay': 0.999, 'reuse_host_memory': True}
_W64 = {**_PROJECTION, 'model.g_width': 64, 'model.d_width': 64}
_AUG = {'augment': 'translation,cutout'}
# ADA from no augmentation, at a rate that can reach 1 within a few thousand steps of 32 images.
_ADA = {'augment_probability': 0.0, 'augment_target': 0.6, 'augment_ada_images': 100_000}
_ADAM0 = {'g_b1': 0.0, 'd_b1': 0.0, 'g_b2': 0.9, 'd_b2': 0.9}
_LR2E4 = {'g_learning_rate': 2e-4, 'd_learning_rate': 4e-4}
_RESNET = {**_PROJECTION, 'model.name': 'resnet', 'model.g_conditioning': 'none',
           'model.g_width': 64, 'model.d_width': 64, 'model.latent_dim': 128,
           'model.embed_dim': 128, **_ADAM0}

# name: (config file, overrides).
RECIPES = {
    'mnist': ('configs/mnist.py', {}),
    'w128_aug': ('configs/default.py', {**_PROJECTION, **_AUG}),
    'w64_aug': ('configs/default.py', {**_W64, **_AUG}),
    'w64_translation': ('configs/default.py', {**_W64, 'augment': 'translation'}),
    'w64_aug_p03': ('configs/default.py', {**_W64, **_AUG, 'augment_probability': 0.3}),
    'w64': ('configs/default.py', _W64),
    'w64_adam0': ('configs/default.py', {**_W64, **_ADAM0}),
    'w64_ttur_g1e4': ('configs/default.py', {**_W64, 'd_learning_rate': 4e-4, 'g_learning_rate': 1e-4}),
    'w64_ttur_aug_p02': ('configs/default.py', {**_W64, **_AUG, 'd_learning_rate': 4e-4,
                                                'augment_probability': 0.2}),
    'mnist_lr2e4': ('configs/mnist.py', _LR2E4),
    'mnist_lr2e4_linear': ('configs/mnist.py', {**_LR2E4, 'lr_schedule': 'linear'}),
    'mnist_lr2e4_b64': ('configs/mnist.py', {**_LR2E4, 'batch_size': 64}),
    'mnist_lr3e4': ('configs/mnist.py', {'g_learning_rate': 3e-4, 'd_learning_rate': 6e-4}),
    'mnist_acgan': ('configs/mnist.py', {'model.d_conditioning': 'acgan'}),
    'mnist_d_channel': ('configs/mnist.py', {'model.d_conditioning': 'channel'}),
    'mnist_g_channel': ('configs/mnist.py', {'model.g_norm': 'batch'}),
    'mnist_g_multiply': ('configs/mnist.py', {'model.g_norm': 'batch',
                                              'model.g_conditioning': 'multiply'}),
    'mnist_aug': ('configs/mnist.py', _AUG),
    'mnist_ada': ('configs/mnist.py', {**_AUG, **_ADA}),
    'resnet': ('configs/default.py', _RESNET),
    'resnet_aug': ('configs/default.py', {**_RESNET, **_AUG}),
    'resnet_w32_aug': ('configs/default.py', {**_RESNET, **_AUG, 'model.g_width': 32,
                                              'model.d_width': 32}),
    'resnet_w32': ('configs/default.py', {**_RESNET, 'model.g_width': 32, 'model.d_width': 32}),
    'fashion_tutorial': ('configs/fashion_mnist.py', {}),
}


def load_config(name: str):
  path, overrides = RECIPES[name]
  module = importlib.import_module(path[:-3].replace('/', '.'))
  config = module.get_config()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  config.dataset = 'folder:mnist-5k'
  return config


def pack(folder: str, out: str):
  """The folder's splits, read through the project's input pipeline, as one .npz of uint8."""
  from configs import mnist  # pylint: disable=g-import-not-at-top
  config = mnist.get_config()
  config.dataset = f'folder:{folder}'
  arrays = {}
  for split in ('train[:50%]', 'train[50%:]', 'train', 'test'):
    arrays[split], arrays[split + '_label'] = _read_in_order(config, split)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.savez_compressed(out, **arrays)


def _read_in_order(config, split):
  """A split's uint8 images and labels in the input pipeline's unshuffled order."""
  from cgan_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  ds, _ = input_pipeline.create_dataset(config, split, 500, train=False)
  images, labels = [], []
  for batch in input_pipeline.numpy_batches(ds, config):
    images.append(np.round((batch['image'] + 1) * 127.5).astype(np.uint8))
    labels.append(batch['label'])
  return np.concatenate(images), np.concatenate(labels)


def _batches(images, labels, batch_size, seed):
  """Endless shuffled epochs of (images in [-1, 1], labels)."""
  rng = np.random.default_rng(seed)
  while True:
    order = rng.permutation(len(labels))
    for i in range(0, len(order) - batch_size + 1, batch_size):
      idx = order[i:i + batch_size]
      yield {'image': images[idx].astype(np.float32) / 127.5 - 1, 'label': labels[idx].astype(np.int32)}


def _setup(config, shape):
  trainer = train_step.build(config, (10,), shape)
  mesh = sharding.make_mesh()
  state = train_step.initial_state(trainer.init_fn, jax.random.PRNGKey(config.seed), config,
                                   sharding.replicated(mesh))
  return trainer, mesh, state, train_step.make_train_loop(trainer.step_fn, mesh)


def speed(data, names, seconds: float = 40.0):
  """Steps per second of each recipe's step on this machine (after compiling), JSON lines."""
  images, labels = data['train[:50%]'], data['train[:50%]_label']
  for name in names:
    config = load_config(name)
    trainer, mesh, state, loop = _setup(config, images.shape[1:])
    batches = _batches(images, labels, config.batch_size, 0)
    k = config.steps_per_loop

    def chunk(state):
      stacked = jax.tree.map(lambda *xs: np.stack(xs), *[next(batches) for _ in range(k)])
      state, metrics = loop(state, sharding.to_global(stacked, mesh))
      jax.block_until_ready(metrics)
      return state
    state = chunk(state)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
      state = chunk(state)
      steps += k
    print(json.dumps({'recipe': name, 'steps_per_sec': steps / (time.perf_counter() - start),
                      'platform': jax.default_backend()}), flush=True)


def train(data, names, out: str, steps_per_sec: dict, minutes=(5, 10), num_per_class: int = 100,
          steps=()):
  """Trains each recipe for its budgets' steps (or the given `steps`); saves EMA samples at each."""
  images, labels = data['train[:50%]'], data['train[:50%]_label']
  for name in names:
    config = load_config(name)
    if steps:
      budgets = {f'step{s}': s for s in steps}
      config.num_train_steps = max(steps)  # Where a 'linear' lr_schedule reaches 0.
    else:
      budgets = {m: int(steps_per_sec[name] * 60 * m) // config.steps_per_loop * config.steps_per_loop
                 for m in minutes}
    start = time.time()
    trainer, mesh, state, loop = _setup(config, images.shape[1:])
    batches = _batches(images, labels, config.batch_size, config.seed)
    monitor, log, step = collapse.Monitor(), [], 0
    sums, count = {}, 0
    while step < max(budgets.values()):
      stacked = jax.tree.map(lambda *xs: np.stack(xs), *[next(batches) for _ in range(config.steps_per_loop)])
      state, metrics = loop(state, sharding.to_global(stacked, mesh))
      step += config.steps_per_loop
      for k, v in jax.device_get(metrics).items():
        if not k.startswith('nonfinite'):
          sums[k] = sums.get(k, 0.0) + float(v)
      count += 1
      if step % config.log_every_steps == 0:
        means = {k: v / count for k, v in sums.items()}
        warning = monitor.observe_metrics(step, means)
        log.append({'step': step, **means, **({'collapse': warning} if warning else {})})
        sums, count = {}, 0
      for minute, budget in budgets.items():
        if step == budget:
          params = jax.device_get(state.ema_g_params)
          x, y = sample.class_samples(trainer.generator, params, list(range(10)), num_per_class,
                                      config.seed, config.model.latent_dim, (10,))
          warning = monitor.observe_samples(step, x[:100].astype(np.float32) / 127.5 - 1, y[:100])
          if warning:
            log.append({'step': step, 'collapse': warning})
          os.makedirs(os.path.join(out, name), exist_ok=True)
          np.savez_compressed(os.path.join(out, name, f'samples_{minute if isinstance(minute, str) else f"{minute}min"}.npz'), images=x, labels=y,
                              step=step)
    with open(os.path.join(out, name, 'log.json'), 'w') as f:
      json.dump({'recipe': name, 'budgets': budgets, 'seconds': time.time() - start,
                 'platform': jax.devices()[0].device_kind, 'log': log}, f)
    print(json.dumps({'recipe': name, 'budgets': budgets, 'seconds': round(time.time() - start, 1),
                      'collapse': [e['collapse'] for e in log if 'collapse' in e]}), flush=True)


def score(data, out: str, judge_dir: str, num_bootstrap: int = 200):
  """Judge metrics of every saved sample set, beside real held-out images, as JSON lines."""
  from cgan_jax import classifier  # pylint: disable=g-import-not-at-top
  from cgan_jax import metrics  # pylint: disable=g-import-not-at-top
  model, params, _, _ = classifier.load(judge_dir)

  def features(images):
    return classifier.predict(model, params, images.astype(np.float32) / 127.5 - 1)
  _, reference = features(data['train[:50%]'])
  real_logits, real_features = features(data['test'])
  n = len(real_features)
  fd_real = metrics.frechet_distance(real_features, reference[:n * 2])
  real_acc = float((real_logits.argmax(-1) == data['test_label']).mean())
  print(json.dumps({'recipe': 'real_test', 'cond_acc': real_acc, 'fd': fd_real,
                    **metrics.prdc(reference[:n], real_features)}), flush=True)
  for name in sorted(os.listdir(out)):
    for file in sorted(f for f in os.listdir(os.path.join(out, name)) if f.startswith('samples_')):
      saved = np.load(os.path.join(out, name, file))
      logits, feats = features(saved['images'])
      acc = float((logits.argmax(-1) == saved['labels']).mean())
      rng = np.random.default_rng(0)
      pick = rng.permutation(len(feats))[:n]  # As many as the real images: FD's bias alike.
      fd = metrics.frechet_distance(feats[pick], reference[:n * 2])
      per_class = [float((logits.argmax(-1)[saved['labels'] == c] == c).mean()) for c in range(10)]
      boot = [float((logits.argmax(-1)[i] == saved['labels'][i]).mean())
              for i in (rng.integers(0, len(feats), len(feats)) for _ in range(num_bootstrap))]
      print(json.dumps({'recipe': name, 'budget': file[8:-4], 'step': int(saved['step']),
                        'cond_acc': round(acc, 4),
                        'cond_acc_ci': [round(float(np.percentile(boot, q)), 4) for q in (2.5, 97.5)],
                        'min_class_acc': round(min(per_class), 3), 'fd': round(fd, 3),
                        'fd_ratio': round(fd / fd_real, 3),
                        **{k: round(v, 3) for k, v in metrics.prdc(reference[:n], feats[pick]).items()}}),
            flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('command', choices=['pack', 'speed', 'train', 'score'])
  parser.add_argument('--folder')
  parser.add_argument('--data')
  parser.add_argument('--out')
  parser.add_argument('--recipes', default=','.join(RECIPES))
  parser.add_argument('--cpu_steps', help='JSON file of {recipe: steps_per_sec} from `speed`.')
  parser.add_argument('--judge')
  parser.add_argument('--seconds', type=float, default=40.0)
  parser.add_argument('--steps', default='', help='train: comma-separated step counts to sample at '
                      'instead of the 5- and 10-minute budgets of --cpu_steps.')
  args = parser.parse_args()
  names = [n for n in args.recipes.split(',') if n]
  if args.command == 'pack':
    return pack(args.folder, args.out)
  data = dict(np.load(args.data))
  if args.command == 'speed':
    return speed(data, names, args.seconds)
  if args.command == 'train' and args.steps:
    steps = [int(s) for s in args.steps.split(',')]
    return train(data, names, args.out, {}, steps=steps)
  if args.command == 'train':
    with open(args.cpu_steps) as f:
      rates = {}
      for line in f:
        if line.strip():
          entry = json.loads(line)
          rates[entry['recipe']] = entry['steps_per_sec']
    return train(data, [n for n in names if n in rates], args.out, rates)
  return score(data, args.out, args.judge)


if __name__ == '__main__':
  main()
