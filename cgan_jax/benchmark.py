"""Times the real train loop on synthetic batches: python -m cgan_jax.benchmark --config=configs/NAME.py.

Prints one JSON line. `images_per_sec` counts real images consumed: config.batch_size per
step (the tutorial's n_batch is twice that for configs/fashion_mnist.py); it is the median
over `--windows` timed windows of `--steps` steps each, after compilation. `model_flops` is a
step's work as direct convolutions (XLA's cost analysis of the step with conv_impl='xla'),
`step_flops` what the compiled step executes (fewer: Winograd). `fraction_of_ceiling` is the
median over windows of model FLOP/s over a square matmul's FLOP/s probed right after that
window (`executed_fraction_of_ceiling` the same with step_flops). --keras times the Keras
tutorial iteration in a process of its own, in windows alternating with these;
`ratio_to_keras` is the median over adjacent window pairs of Keras time over JAX time.
--input_pipeline=N times N batches of the config's real input pipeline alone instead.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cgan_jax import cli
from cgan_jax import host_memory
from cgan_jax import input_pipeline
from cgan_jax import sharding
from cgan_jax import train
from cgan_jax import train_step

FLAGS = flags.FLAGS
cli.define_config_flag(os.path.join(cli.CONFIGS_DIR, 'fashion_mnist.py'),
                       'Training configuration file.')
flags.DEFINE_integer('steps', 0, 'Steps per timed window (one dispatch); 0 = config.steps_per_loop.',
                     lower_bound=0)
flags.DEFINE_integer('windows', 5, 'Timed windows; images_per_sec is their median.',
                     lower_bound=1)
flags.DEFINE_integer('matmul_size', 2048,
                     'Side of the square f32 matmul that sets the ceiling (probed in every window).',
                     lower_bound=1)
flags.DEFINE_bool('keras', False, 'Also time the Keras tutorial iteration, interleaved window by window.')
flags.DEFINE_integer('input_pipeline', 0, 'Instead of the step, time this many batches of the '
                     "config's real input pipeline alone (after one), on this host.", lower_bound=0)


def make_matmul_probe(n: int, repeats: int = 3):
  """A function returning the best FLOP/s of `repeats` n x n f32 matmuls on the first device."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()

  def probe() -> float:
    best = float('inf')
    for _ in range(repeats):
      t = time.perf_counter()
      f(a).block_until_ready()
      best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best
  return probe


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per program.
    analysis = analysis[0]
  return float(analysis.get('flops', 0.0))


def _model_flops(config, info, state, batch, mesh) -> float:
  """FLOPs of one step as direct convolutions (XLA's own, conv_impl='xla'): the model's work.

  The fast layers compute the same function with fewer multiplications (Winograd), so their
  executed FLOPs (`step_flops`) understate the work a step does.
  """
  config = config.copy_and_resolve_references()
  config.model.conv_impl = 'xla'
  step_fn = train_step.build(config, info.num_classes, info.image_shape).step_fn
  return _flops(train_step.make_sharded_step(step_fn, mesh).lower(state, batch))


def _synthetic_batches(config, info, steps: int, mesh):
  """[steps, global_batch, ...] uniform images in [-1, 1] and random labels, on the mesh."""
  rng = np.random.default_rng(config.seed)
  local = sharding.local_batch_size(config.batch_size, mesh)
  batches = {
      'image': rng.uniform(-1, 1, (steps, local, *info.image_shape)).astype(np.float32),
      'label': _random_labels(rng, info.num_classes, (steps, local))}
  return sharding.to_global(batches, mesh)


def _random_labels(rng, num_classes, shape) -> np.ndarray:
  """Uniform labels of `shape`, with one value per attribute when there are several."""
  counts = input_pipeline.attribute_counts(num_classes)
  labels = rng.integers(0, counts, (*shape, len(counts)))
  return (labels if len(counts) > 1 else labels[..., 0]).astype(np.int32)


class KerasProcess:
  """The Keras tutorial iteration in a process of its own, timed there, window by window.

  Its own process keeps TensorFlow's thread pools and allocator settings apart from JAX's
  (sharing one process slowed the JAX step 1.7x, measured), and each side runs as its users run it.
  """

  def __init__(self, shapes: dict):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # oneDNN on, TensorFlow's default on x86 (cgan_jax turns it off for its own input pipeline).
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='1')
    self._process = subprocess.Popen(
        [sys.executable, '-m', 'benchmarks.keras_tutorial', '--serve', json.dumps(shapes)],
        cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if self._process.stdout.readline().strip() != 'ready':
      raise RuntimeError('The Keras tutorial process did not start; see its error above.')

  def __call__(self, steps: int) -> float:
    """Seconds the Keras process took for `steps` iterations."""
    self._process.stdin.write(f'{steps}\n')
    self._process.stdin.flush()
    answer = self._process.stdout.readline()
    if not answer:
      raise RuntimeError('The Keras tutorial process ended early; see its error above.')
    return float(answer)

  def close(self):
    self._process.stdin.close()
    self._process.wait()


def run(config: ml_collections.ConfigDict, *, steps: int = 0, windows: int = 5,
        matmul_size: int = 2048, keras_iteration=None) -> dict:
  """Compiles and times the train loop; with `keras_iteration` (steps -> seconds), times it in
  alternate windows."""
  steps = steps or config.steps_per_loop
  mesh = sharding.make_mesh()
  sharding.local_batch_size(config.g_batch_size or config.batch_size, mesh, 'g_batch_size')
  info = input_pipeline.get_info(config, prepare=False)
  _, init_fn, step_fn = train_step.build(config, info.num_classes, info.image_shape)
  state = train_step.initial_state(init_fn, jax.random.PRNGKey(config.seed), config,
                                   sharding.replicated(mesh))
  train_loop = train_step.make_train_loop(step_fn, mesh)
  batches = _synthetic_batches(config, info, steps, mesh)

  # One step compiled ahead of time: its compile time and FLOPs (cost analysis does not
  # look inside loops); the SPMD program is per device, so scale by the device count.
  t = time.perf_counter()
  one_batch = jax.tree.map(lambda x: x[0], batches)
  one_step = train_step.make_sharded_step(step_fn, mesh).lower(state, one_batch).compile()
  compile_sec = time.perf_counter() - t
  step_flops = _flops(one_step) * mesh.devices.size
  model_flops = _model_flops(config, info, state, one_batch, mesh) * mesh.devices.size

  state, metrics = train_loop(state, batches)  # Warm-up (compiles the loop).
  jax.block_until_ready(metrics)
  matmul_probe = make_matmul_probe(matmul_size)
  jax_times, keras_times, matmul_rates = [], [], []
  # The ceiling is probed in every window, beside the step: on a shared machine the
  # matmul rate drifts, and a fraction must compare the two under the same load.
  for _ in range(windows):
    t = time.perf_counter()
    state, metrics = train_loop(state, batches)
    jax.block_until_ready(metrics)
    jax_times.append(time.perf_counter() - t)
    matmul_rates.append(matmul_probe())
    if keras_iteration is not None:
      keras_times.append(keras_iteration(steps))

  matmul = statistics.median(matmul_rates)
  steps_per_sec = steps / statistics.median(jax_times)
  def fraction(flops):  # Median over windows of FLOP/s over the matmul rate of that window.
    return statistics.median(flops * steps / (t * rate * mesh.devices.size)
                             for t, rate in zip(jax_times, matmul_rates))
  device = jax.devices()[0]
  result = {
      'config_dataset': config.dataset,
      'batch_size': config.batch_size,
      'g_batch_size': config.g_batch_size or config.batch_size,
      'd_update': config.d_update,
      'steps_per_window': steps,
      'windows': windows,
      'steps_per_sec': steps_per_sec,
      'images_per_sec': steps_per_sec * config.batch_size,
      'compile_sec': compile_sec,
      'step_flops': step_flops,
      'model_flops': model_flops,
      'achieved_flops_per_sec': model_flops * steps_per_sec,
      'matmul_flops_per_sec': matmul * mesh.devices.size,
      'fraction_of_ceiling': fraction(model_flops),
      'executed_fraction_of_ceiling': fraction(step_flops),
      'platform': device.platform,
      'device_kind': device.device_kind,
      'num_devices': mesh.devices.size,
      'finite': bool(np.isfinite(float(metrics['g_loss']))),
  }
  if keras_iteration is not None:
    keras_steps_per_sec = steps / statistics.median(keras_times)
    result['keras_images_per_sec'] = keras_steps_per_sec * config.batch_size
    # Per pair of adjacent windows, like the ceiling: the machine's speed drifts between pairs.
    result['ratio_to_keras'] = statistics.median(k / j for j, k in zip(jax_times, keras_times))
  return result


def time_input_pipeline(config: ml_collections.ConfigDict, num_batches: int) -> dict:
  """Images/s of this host's training input alone: read, decode, convert, shuffle and batch
  (datasets that fit in memory come from tf.data's cache after their first epoch)."""
  local_batch = sharding.local_batch_size(config.batch_size, sharding.make_mesh())
  ds, _ = input_pipeline.create_dataset(config, config.train_split, local_batch)
  batches = input_pipeline.numpy_batches(ds, config)
  next(batches)  # Builds the pipeline and fills tf.data's prefetch buffers.
  start = time.perf_counter()
  for _ in range(num_batches):
    next(batches)
  seconds = time.perf_counter() - start
  return {'config_dataset': config.dataset, 'local_batch_size': local_batch,
          'batches': num_batches, 'input_images_per_sec': num_batches * local_batch / seconds}


def main(argv):
  cli.no_arguments(argv)
  config = FLAGS.config
  if config.reuse_host_memory:
    host_memory.keep_freed_memory()
  keras = None
  with cli.one_line_errors(ValueError, RuntimeError, FileNotFoundError):
    try:
      train.check_config(config)
      if FLAGS.input_pipeline:
        print(json.dumps(time_input_pipeline(config, FLAGS.input_pipeline)), flush=True)
        return
      if FLAGS.keras:
        info = input_pipeline.get_info(config, prepare=False)
        keras = KerasProcess(dict(
            batch_size=config.batch_size, g_batch_size=config.g_batch_size or config.batch_size,
            image_shape=list(info.image_shape), num_classes=info.num_classes,
            latent_dim=config.model.latent_dim))
      result = run(config, steps=FLAGS.steps, windows=FLAGS.windows,
                   matmul_size=FLAGS.matmul_size, keras_iteration=keras)
    finally:
      if keras:
        keras.close()
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  cli.run(main, quiet=True)
