"""The judge: a small CNN classifier per dataset whose logits and features score a generator.

python -m cgan_jax.classifier --config=configs/NAME.py --workdir=CLFDIR
"""

import functools
import json
import os
import time

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from cgan_jax import checkpoint
from cgan_jax import cli
from cgan_jax import console
from cgan_jax import input_pipeline
from cgan_jax import sharding
from cgan_jax.sharding import DATA_AXIS


class Classifier(nn.Module):
  """Two conv+pool blocks and a dense layer; returns (logits, penultimate features)."""
  num_classes: int
  width: int = 16
  feature_dim: int = 128

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i in range(2):
      x = nn.relu(nn.Conv(self.width * 2**i, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2), padding='SAME')
    x = nn.Dropout(0.25, deterministic=not train)(x.reshape(x.shape[0], -1))
    features = nn.relu(nn.Dense(self.feature_dim)(x))
    logits = nn.Dense(self.num_classes)(nn.Dropout(0.5, deterministic=not train)(features))
    return logits, features


def create_model(clf_config: ml_collections.ConfigDict, num_classes: int) -> Classifier:
  return Classifier(num_classes, width=clf_config.width, feature_dim=clf_config.feature_dim)


def _manager(workdir: str, read_only: bool = False) -> ocp.CheckpointManager:
  options = (checkpoint.read_only_options() if read_only else
             ocp.CheckpointManagerOptions(max_to_keep=1))
  return ocp.CheckpointManager(
      checkpoint.checkpoint_dir(workdir), options=options,
      item_handlers=checkpoint.item_handlers('params'))


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, params, images):
  return model.apply({'params': params}, images)


def predict(model: Classifier, params, images: np.ndarray, batch_size: int = 512):
  """Logits and features for images in [-1, 1], in batches split over all devices."""
  mesh = sharding.make_mesh()
  n_dev = mesh.devices.size
  batch_size = -(-batch_size // n_dev) * n_dev
  data_sharding = NamedSharding(mesh, P(DATA_AXIS))
  params = jax.device_put(params, NamedSharding(mesh, P()))
  logits, features = [], []
  for start in range(0, len(images), batch_size):
    chunk = np.asarray(images[start:start + batch_size], np.float32)
    pad = -len(chunk) % n_dev  # Whole shards; the padding is cut off below.
    chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
    out = _apply(model, params, jax.device_put(chunk, data_sharding))
    logits.append(np.asarray(out[0])[:len(chunk) - pad])
    features.append(np.asarray(out[1])[:len(chunk) - pad])
  return np.concatenate(logits), np.concatenate(features)


def load_split(config: ml_collections.ConfigDict, split: str, max_examples: int = 0,
               seed: int = 0):
  """Images in [-1, 1] and labels of a split, in a fixed shuffled order (`max_examples` > 0 caps)."""
  ds, info = input_pipeline.create_dataset(config, split, 1024, train=False)
  images, labels = [], []
  for batch in input_pipeline.numpy_batches(ds, config):
    images.append(batch['image'])
    labels.append(batch['label'])
  images, labels = np.concatenate(images), np.concatenate(labels)
  order = np.random.default_rng(seed).permutation(len(labels))
  if max_examples:
    order = order[:max_examples]
  return images[order], labels[order], info


def fit_arrays(clf_config: ml_collections.ConfigDict, num_classes: int, images: np.ndarray,
               labels: np.ndarray, seed: int = 0):
  """The judge's architecture and schedule (`clf_config`) trained on in-memory images in [-1, 1]
  (batches drawn at random with replacement): (model, params). CAS trains it on generated images."""
  model = create_model(clf_config, num_classes)
  rng = jax.random.PRNGKey(seed)
  params = model.init(rng, jnp.zeros((1, *images.shape[1:])))['params']
  tx = optax.adamw(optax.cosine_decay_schedule(clf_config.learning_rate, clf_config.num_train_steps),
                   weight_decay=clf_config.weight_decay)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y, key):
    def loss_fn(p):
      logits, _ = model.apply({'params': p}, x, train=True, rngs={'dropout': key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  order = np.random.default_rng(seed)
  batch = min(clf_config.batch_size, len(images))
  for i in range(clf_config.num_train_steps):
    idx = order.integers(0, len(images), batch)
    params, opt_state = step(params, opt_state, np.asarray(images[idx], np.float32),
                             np.asarray(labels[idx], np.int32), jax.random.fold_in(rng, i))
  return model, params


# Smallest value of each numeric field of config.classifier.
_MINIMUM = {'num_train_steps': 1, 'batch_size': 1, 'learning_rate': 0, 'weight_decay': 0,
            'width': 1, 'feature_dim': 1, 'log_every_steps': 1}


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the judge on `config.train_split`, saves it with Orbax, returns its test accuracy."""
  clf = config.classifier
  cli.check_ranges(config, {f'classifier.{name}': minimum for name, minimum in _MINIMUM.items()})
  if os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise ValueError(f'{workdir} already holds checkpoints (of a classifier or a GAN run); '
                     'choose a new --workdir (nothing was deleted).')
  checkpoint.check_writable(workdir)
  info = input_pipeline.get_info(config)
  if len(info.num_classes) > 1:
    first = config.labels.split(',')[0].strip()
    raise ValueError(f'The judge classifies one label, config.labels={config.labels!r} names '
                     f'several; train it with --config.labels={first} (the attribute it judges).')
  model = create_model(clf, info.num_classes[0])
  ds, _ = input_pipeline.create_dataset(config, config.train_split, clf.batch_size,
                                        seed=config.seed)
  batches = input_pipeline.numpy_batches(ds, config)
  rng = jax.random.PRNGKey(config.seed)
  params = model.init(rng, jnp.zeros((1, *info.image_shape)))['params']
  tx = optax.adamw(optax.cosine_decay_schedule(clf.learning_rate, clf.num_train_steps),
                   weight_decay=clf.weight_decay)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, batch, key):
    def loss_fn(p):
      logits, _ = model.apply({'params': p}, batch['image'], train=True, rngs={'dropout': key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  test_images, test_labels, _ = load_split(config, config.eval_split)
  start = time.time()
  for i in range(1, clf.num_train_steps + 1):
    params, opt_state, loss = step(params, opt_state, next(batches), jax.random.fold_in(rng, i))
    if i % clf.log_every_steps == 0 or i == clf.num_train_steps:
      logits, _ = predict(model, params, test_images)
      accuracy = float((logits.argmax(-1) == test_labels).mean())
      console.say(f'classifier step {i}/{clf.num_train_steps}  loss={float(loss):.4f}  '
                  f'{config.eval_split}_accuracy={accuracy:.4f}  {time.time() - start:.0f}s')

  dataset = {'name': config.dataset, 'num_classes': info.num_classes[0],
             'image_shape': list(info.image_shape), 'class_names': list(info.class_names),
             'test_split': config.eval_split, 'test_accuracy': accuracy}
  manager = _manager(workdir)
  manager.save(clf.num_train_steps, args=ocp.args.Composite(
      params=ocp.args.PyTreeSave(params),
      config=ocp.args.JsonSave(json.loads(config.to_json())),
      dataset=ocp.args.JsonSave(dataset)), force=True)
  manager.wait_until_finished()
  manager.close()
  return dataset


def load(workdir: str):
  """Restores a judge: (model, params as host arrays, its training config, dataset metadata)."""
  manager = _manager(workdir, read_only=True) if os.path.isdir(workdir) else None
  step = manager and manager.latest_step()
  if step is None:
    run = checkpoint.run_around(workdir)
    raise FileNotFoundError(f'No classifier in {workdir}; ' + (
        f'it is inside the run {run}: pass {run}.' if run else
        f'train one with python -m cgan_jax.classifier --config=... --workdir={workdir}.'))
  if 'state' in checkpoint.saved_items(manager.directory, step):
    raise ValueError(f'{workdir} holds a GAN run, not a classifier; point at the --workdir of a '
                     'python -m cgan_jax.classifier run.')
  restored = manager.restore(step, args=ocp.args.Composite(
      config=ocp.args.JsonRestore(), dataset=ocp.args.JsonRestore()))
  config, dataset = ml_collections.ConfigDict(restored['config']), restored['dataset']
  metadata = manager.item_metadata(step)['params']
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  params = manager.restore(step, args=ocp.args.Composite(params=ocp.args.PyTreeRestore(
      item=metadata, restore_args=restore_args)))['params']
  manager.close()
  return create_model(config.classifier, dataset['num_classes']), params, config, dataset


FLAGS = flags.FLAGS


def main(argv):
  cli.no_arguments(argv)
  try:
    dataset = train(FLAGS.config, FLAGS.workdir)
  except (ValueError, OSError) as e:
    raise SystemExit(f'Error: {e}') from None
  console.say(f"Saved the classifier to {FLAGS.workdir}: {dataset['test_split']} accuracy "
              f"{dataset['test_accuracy']:.4f} on {dataset['name']}.")


if __name__ == '__main__':
  cli.define_config_flag(None, 'Training config (the data and classifier fields).')
  flags.DEFINE_string('workdir', None, 'Directory for the classifier checkpoint.', required=True)
  flags.mark_flags_as_required(['config'])
  cli.run(main, quiet=True)
