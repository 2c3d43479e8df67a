"""Times the real train loop on synthetic batches: python -m cgan_jax.benchmark --config=configs/NAME.py.

Prints one JSON line. `images_per_sec` counts real images consumed: config.batch_size per
step (the tutorial's n_batch is twice that for configs/fashion_mnist.py); it is the median
over `--windows` timed windows of `--steps` steps each, after compilation. `model_flops` is a
step's work as direct convolutions (XLA's cost analysis of the step with conv_impl='xla'),
`step_flops` what the compiled step executes (fewer: Winograd; on a GPU XLA's count leaves
out the convolutions it hands to cuDNN, so there it is no measure). `fraction_of_ceiling` is the
median over windows of model FLOP/s over a square matmul's FLOP/s (in the model's compute
dtype) probed right after that window (`executed_fraction_of_ceiling` the same with
step_flops). --keras and --torch time the tutorial iteration in Keras, or in PyTorch eager and
torch.compile'd, each in a process of its own, in windows alternating with these;
`ratio_to_NAME` is the median over adjacent window pairs of the peer's time over JAX time.
`peak_host_memory_bytes` is this process's peak resident memory, `NAME_peak_host_memory_bytes`
a peer's, and `device_peak_bytes` the first device's peak allocation where the platform
reports it (GPU, TPU). --input_pipeline=N times N batches of the config's real input pipeline
alone instead.

The timing functions import without TensorFlow (benchmarks/gpu_check.py calls them where it
is absent); the command line reads the dataset's metadata through the input pipeline.
"""

import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cgan_jax import console
from cgan_jax import host_memory
from cgan_jax import labels as labels_lib
from cgan_jax import sharding
from cgan_jax import train_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_matmul_probe(n: int, repeats: int = 3, dtype=jnp.float32):
  """A function returning the best FLOP/s of `repeats` n x n matmuls on the first device."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
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


def _flops(stage) -> float:
  """FLOPs of a lowered or compiled program; lowered, compiled where the platform (GPU) only
  analyses compiled programs."""
  analysis = stage.cost_analysis()
  if analysis is None and hasattr(stage, 'compile'):
    analysis = stage.compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per program.
    analysis = analysis[0]
  return float((analysis or {}).get('flops', 0.0))


def _model_flops(config, info, state, batch) -> float:
  """FLOPs of one step on the global batch as direct convolutions (XLA's own, conv_impl='xla'):
  the model's work.

  The fast layers compute the same function with fewer multiplications (Winograd), so their
  executed FLOPs (`step_flops`) understate the work a step does. The step is lowered for one
  CPU device and not compiled: XLA counts FLOPs from the program alone there, while a GPU
  analyses only compiled programs (a compile of tens of seconds per batch size).
  """
  config = config.copy_and_resolve_references()
  config.model.conv_impl = 'xla'
  step_fn = train_step.build(config, info.num_classes, info.image_shape).step_fn
  try:
    cpu_mesh = sharding.make_mesh(jax.devices('cpu')[:1])
  except RuntimeError:  # No CPU backend (JAX_PLATFORMS without cpu): counted where it runs.
    mesh = sharding.make_mesh()
    lowered = train_step.make_sharded_step(step_fn, mesh).lower(state, batch)
    return _flops(lowered) * mesh.devices.size
  abstract = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  return _flops(train_step.make_sharded_step(step_fn, cpu_mesh).lower(abstract(state),
                                                                        abstract(batch)))


def _synthetic_batches(config, info, steps: int, mesh):
  """[steps, global_batch, ...] uniform images in [-1, 1] and random labels, on the mesh."""
  rng = np.random.default_rng(config.seed)
  local = sharding.local_batch_size(config.batch_size, mesh)
  batches = {
      'image': rng.uniform(-1, 1, (steps, local, *info.image_shape)).astype(np.float32),
      'label': _random_labels(rng, info.num_classes, (steps, local))}
  return sharding.to_global(batches, mesh)


def _random_labels(rng, num_classes: tuple, shape) -> np.ndarray:
  """Uniform labels of `shape`, with one value per attribute when there are several."""
  labels = rng.integers(0, num_classes, (*shape, len(num_classes)))
  return (labels if len(num_classes) > 1 else labels[..., 0]).astype(np.int32)


def peak_host_memory_bytes(who=resource.RUSAGE_SELF) -> int:
  """Peak resident memory of this process (or of its largest waited-for child), in bytes."""
  return resource.getrusage(who).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)


def device_memory(device=None) -> dict:
  """The device's peak and current allocation in bytes, where the platform reports them."""
  stats = (device or jax.devices()[0]).memory_stats() or {}
  names = {'peak_bytes_in_use': 'device_peak_bytes', 'bytes_in_use': 'device_bytes_in_use',
           'bytes_limit': 'device_bytes_limit'}
  return {name: int(stats[key]) for key, name in names.items() if key in stats}


class PeerProcess:
  """A peer framework's tutorial iteration in a process of its own, timed there, window by window.

  Its own process keeps the peer's thread pools and allocator settings apart from JAX's
  (sharing one process slowed the JAX step 1.7x next to TensorFlow, measured), and each side
  runs as its users run it. The peer module serves `--serve JSON`: 'ready' once traced, then
  the seconds taken for each line of steps read, and its peak memory as JSON at the end.
  """

  def __init__(self, module: str, shapes: dict, env: dict = None, name: str = None):
    self.name = name or module.rsplit('.', 1)[-1]
    self.peak_host_memory_bytes = None
    self._process = subprocess.Popen(
        [sys.executable, '-m', module, '--serve', json.dumps(shapes)],
        cwd=REPO, env=dict(os.environ, **(env or {})), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    if self._process.stdout.readline().strip() != 'ready':
      raise RuntimeError(f'The {self.name} process did not start; see its error above.')

  def __call__(self, steps: int) -> float:
    """Seconds the peer process took for `steps` iterations."""
    self._process.stdin.write(f'{steps}\n')
    self._process.stdin.flush()
    answer = self._process.stdout.readline()
    if not answer:
      raise RuntimeError(f'The {self.name} process ended early; see its error above.')
    return float(answer)

  def close(self):
    self._process.stdin.close()
    last = self._process.stdout.read().strip().splitlines()
    self._process.wait()
    if last and last[-1].startswith('{'):
      self.peak_host_memory_bytes = json.loads(last[-1]).get('peak_host_memory_bytes')


def keras_process(shapes: dict) -> PeerProcess:
  """The Keras tutorial, with oneDNN on: TensorFlow's default on x86 (cgan_jax turns it off for
  its own input pipeline)."""
  return PeerProcess('benchmarks.keras_tutorial', shapes, env={'TF_ENABLE_ONEDNN_OPTS': '1'},
                     name='keras')


def torch_processes(shapes: dict) -> list:
  """The PyTorch tutorial, eager and torch.compile'd, each in its own process."""
  return [PeerProcess('benchmarks.torch_tutorial', dict(shapes, compile=compiled),
                      name='torch_compile' if compiled else 'torch_eager')
          for compiled in (False, True)]


def peer_shapes(config, info) -> dict:
  """What a peer needs to build the tutorial models and batches for `config`."""
  return dict(batch_size=config.batch_size, g_batch_size=config.g_batch_size or config.batch_size,
              image_shape=list(info.image_shape),
              num_classes=labels_lib.num_classes_to_json(info.num_classes),
              latent_dim=config.model.latent_dim)


def _compile_one_step(step_fn, mesh, state, batches) -> Tuple[float, float]:
  """Compile seconds and FLOPs of one step compiled ahead of time (cost analysis does not look
  inside loops); the SPMD program is per device, so its FLOPs scale by the device count."""
  t = time.perf_counter()
  one_batch = jax.tree.map(lambda x: x[0], batches)
  one_step = train_step.make_sharded_step(step_fn, mesh).lower(state, one_batch).compile()
  return time.perf_counter() - t, _flops(one_step) * mesh.devices.size


def _timed_windows(train_loop, state, batches, steps: int, matmul_probe, windows: int, peers):
  """Seconds of the loop per window, the matmul rate beside each, and each peer's seconds."""
  state, metrics = train_loop(state, batches)  # Warm-up (compiles the loop).
  jax.block_until_ready(metrics)
  jax_times, matmul_rates = [], []
  peer_times = {peer.name: [] for peer in peers}
  # The ceiling is probed in every window, beside the step: on a shared machine the
  # matmul rate drifts, and a fraction must compare the two under the same load.
  for _ in range(windows):
    t = time.perf_counter()
    state, metrics = train_loop(state, batches)
    jax.block_until_ready(metrics)
    jax_times.append(time.perf_counter() - t)
    matmul_rates.append(matmul_probe())
    for peer in peers:
      peer_times[peer.name].append(peer(steps))
  return jax_times, matmul_rates, peer_times, metrics


def run(config: ml_collections.ConfigDict, info, *, steps: int = 0, windows: int = 5,
        matmul_size: int = 2048, matmul_dtype=None, peers=()) -> dict:
  """Compiles and times the train loop; each of `peers` (steps -> seconds, with a `name`) is
  timed in the windows between.

  `info` has the dataset's num_classes and image_shape; the ceiling is a matmul in
  `matmul_dtype` (default: config.model.dtype).
  """
  steps = steps or config.steps_per_loop
  matmul_dtype = jnp.dtype(matmul_dtype or config.model.dtype)
  mesh = sharding.make_mesh()
  sharding.local_batch_size(config.g_batch_size or config.batch_size, mesh, 'g_batch_size')
  _, init_fn, step_fn = train_step.build(config, info.num_classes, info.image_shape)
  state = train_step.initial_state(init_fn, jax.random.PRNGKey(config.seed), config,
                                   sharding.replicated(mesh))
  train_loop = train_step.make_train_loop(step_fn, mesh,  # As train.py runs it.
                                          on_compiled=host_memory.release_after_compile(config))
  batches = _synthetic_batches(config, info, steps, mesh)

  compile_sec, step_flops = _compile_one_step(step_fn, mesh, state, batches)
  model_flops = _model_flops(config, info, state, jax.tree.map(lambda x: x[0], batches))
  matmul_probe = make_matmul_probe(matmul_size, dtype=matmul_dtype)
  jax_times, matmul_rates, peer_times, metrics = _timed_windows(
      train_loop, state, batches, steps, matmul_probe, windows, peers)

  matmul = statistics.median(matmul_rates)
  steps_per_sec = steps / statistics.median(jax_times)
  def fraction(flops):  # Median over windows of FLOP/s over the matmul rate of that window.
    return statistics.median(flops * steps / (t * rate * mesh.devices.size)
                             for t, rate in zip(jax_times, matmul_rates))
  device = jax.devices()[0]
  result = {
      'config_dataset': config.dataset,
      'model': config.model.name,
      'dtype': config.model.dtype,
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
      'matmul_dtype': matmul_dtype.name,
      'matmul_size': matmul_size,
      'matmul_flops_per_sec': matmul * mesh.devices.size,
      'fraction_of_ceiling': fraction(model_flops),
      'executed_fraction_of_ceiling': fraction(step_flops),
      'platform': device.platform,
      'device_kind': device.device_kind,
      'num_devices': mesh.devices.size,
      'finite': bool(np.isfinite(float(metrics['g_loss']))),
      'peak_host_memory_bytes': peak_host_memory_bytes(),
      **device_memory(device),
  }
  for name, times in peer_times.items():
    result[f'{name}_images_per_sec'] = steps / statistics.median(times) * config.batch_size
    # Per pair of adjacent windows, like the ceiling: the machine's speed drifts between pairs.
    result[f'ratio_to_{name}'] = statistics.median(p / j for j, p in zip(jax_times, times))
  return result


def add_peer_memory(result: dict, peers) -> dict:
  """The closed peers' peak resident memory, in `result`."""
  for peer in peers:
    if peer.peak_host_memory_bytes:
      result[f'{peer.name}_peak_host_memory_bytes'] = peer.peak_host_memory_bytes
  return result


def time_input_pipeline(config: ml_collections.ConfigDict, num_batches: int) -> dict:
  """Images/s of this host's training input alone: read, decode, convert, shuffle and batch
  (datasets that fit in memory come from tf.data's cache after their first epoch)."""
  from cgan_jax import input_pipeline  # pylint: disable=g-import-not-at-top
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
  # pylint: disable=g-import-not-at-top
  from absl import flags
  from cgan_jax import cli
  from cgan_jax import input_pipeline
  from cgan_jax import train
  # pylint: enable=g-import-not-at-top
  cli.no_arguments(argv)
  args = flags.FLAGS
  config = args.config
  if config.reuse_host_memory:
    host_memory.keep_freed_memory()
  peers = []
  with cli.one_line_errors(ValueError, RuntimeError, FileNotFoundError, ImportError):
    try:
      train.check_config(config)
      if args.input_pipeline:
        console.say(json.dumps(time_input_pipeline(config, args.input_pipeline)))
        return
      info = input_pipeline.get_info(config, prepare=False)
      if args.keras:
        peers.append(keras_process(peer_shapes(config, info)))
      if args.torch:
        if importlib.util.find_spec('torch') is None:
          raise ImportError('--torch times the PyTorch tutorial: install PyTorch first '
                            '(pip install torch); cgan_jax does not need it.')
        peers.extend(torch_processes(peer_shapes(config, info)))
      result = run(config, info, steps=args.steps, windows=args.windows,
                   matmul_size=args.matmul_size, peers=peers)
    finally:
      for peer in peers:
        peer.close()
  console.say(json.dumps(add_peer_memory(result, peers)))


def define_flags():
  """The command line's flags (defined when run as a program, so importing this defines none)."""
  # pylint: disable=g-import-not-at-top
  from absl import flags
  from cgan_jax import cli
  # pylint: enable=g-import-not-at-top
  cli.define_config_flag(os.path.join(cli.CONFIGS_DIR, 'fashion_mnist.py'),
                         'Training configuration file.')
  flags.DEFINE_integer('steps', 0, 'Steps per timed window (one dispatch); 0 = config.steps_per_loop.',
                       lower_bound=0)
  flags.DEFINE_integer('windows', 5, 'Timed windows; images_per_sec is their median.',
                       lower_bound=1)
  flags.DEFINE_integer('matmul_size', 2048, 'Side of the square matmul, in the model dtype, that '
                       'sets the ceiling (probed in every window).', lower_bound=1)
  flags.DEFINE_bool('keras', False, 'Also time the Keras tutorial iteration, interleaved window by window.')
  flags.DEFINE_bool('torch', False, 'Also time the PyTorch tutorial iteration, eager and '
                    'torch.compile, interleaved window by window (needs torch installed).')
  flags.DEFINE_integer('input_pipeline', 0, 'Instead of the step, time this many batches of the '
                       "config's real input pipeline alone (after one), on this host.", lower_bound=0)


if __name__ == '__main__':
  define_flags()
  from cgan_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(main, quiet=True)
