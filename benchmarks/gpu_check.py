"""The GPU check: the trainer on one accelerator, one JSON line per item, in under 8 minutes.

On the GPU machine, from the checkout, with the folder gpu_bundle/ carried along:

    bash benchmarks/gpu_check.sh        # the same as: PYTHONPATH=. python benchmarks/gpu_check.py

Prepare gpu_bundle/ (ignored by git, about 7 MB) first where PyPI and the MNIST PNGs are at hand:

    python benchmarks/gpu_check.py --prepare [--images /path/to/mnist-5k]

It holds ml_collections and PyYAML unpacked for Python 3.12 (used only where they are not
installed) and mnist-5k as one .npz. Items, each in a process of its own with TensorFlow
blocked (the trainer's core runs without it), in this order while `--budget` seconds last:
`environment`; `matmul` (the f32 and bf16 matmul ceilings); `benchmark` of configs/cifar10.py
in bfloat16 (cgan_jax.benchmark.run on synthetic batches at a few batch sizes, with
`fraction_of_bf16_ceiling` beside its own dtype's fraction); `torch` (the tutorial iteration
in PyTorch, eager and torch.compile'd, in windows alternating with the JAX step of
configs/fashion_mnist.py in float32); `train` (configs/mnist.py on the mnist-5k images for
`--train_seconds`, its EMA generator's sample grid written to $OUT, default ./gpu_out);
`benchmark` of configs/cifar10.py in float32 and configs/fashion_mnist.py in both dtypes;
model.name='resnet' on configs/cifar10.py where cgan_jax.models has it; and a `summary`. An
item that cannot run prints {"item": ..., "skipped": why}; one that fails, its one-line error
(its log is in $OUT). --quick shrinks every item to seconds, to test the check on a CPU.
"""

import argparse
import glob
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(REPO, 'gpu_bundle')
SITE = os.path.join(BUNDLE, 'site')  # The wheels, unpacked: importable without pip.
MNIST = os.path.join(BUNDLE, 'mnist-5k.npz')
WHEELS = ('ml_collections==1.1.0', 'PyYAML==6.0.4')  # ml_collections imports yaml.
BLOCKED = ('tensorflow', 'tensorflow_datasets', 'tf_keras', 'keras')
# Batch sizes timed per config and dtype (each compiles the step twice: tens of seconds on a
# GPU); the torch item times configs/fashion_mnist.py at its own batch size in float32.
BATCH_SIZES = {('cifar10', 'bfloat16'): (64, 512), ('cifar10', 'float32'): (64, 512),
               ('fashion_mnist', 'float32'): (512,), ('fashion_mnist', 'bfloat16'): (64, 512),
               ('resnet', 'bfloat16'): (64,), ('resnet', 'float32'): (64,)}


# ---------------------------------------------------------------------------------- preparing

def prepare(images_dir: str):
  """Downloads the wheels, unpacks them into gpu_bundle/site and packs the images as .npz."""
  wheels = os.path.join(BUNDLE, 'wheels')
  os.makedirs(wheels, exist_ok=True)
  subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps',
                  '--only-binary=:all:', '--python-version', '3.12', '--platform',
                  'manylinux2014_x86_64', '--dest', wheels, *WHEELS], check=True)
  shutil.rmtree(SITE, ignore_errors=True)
  for wheel in glob.glob(os.path.join(wheels, '*.whl')):
    with zipfile.ZipFile(wheel) as z:
      z.extractall(SITE)
  arrays = {}
  for split in ('train', 'test'):
    split_images, split_labels = _read_split(os.path.join(images_dir, split))
    arrays[f'{split}_images'], arrays[f'{split}_labels'] = split_images, split_labels
  import numpy as np  # pylint: disable=g-import-not-at-top
  np.savez_compressed(MNIST, **arrays)
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(BUNDLE) for f in fs)
  print(json.dumps({'prepared': BUNDLE, 'bytes': size, 'wheels': sorted(os.listdir(wheels)),
                    'train_images': len(arrays['train_labels']),
                    'test_images': len(arrays['test_labels'])}))


def _read_split(directory: str):
  """(N, H, W) uint8 images and labels from DIGIT/*.png class folders."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  classes = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
  images, labels = [], []
  for label, name in enumerate(classes):
    for path in sorted(glob.glob(os.path.join(directory, name, '*.png'))):
      images.append(np.asarray(Image.open(path).convert('L'), np.uint8))
      labels.append(label)
  if not images:
    raise SystemExit(f'Error: no PNG images in class folders under {directory}.')
  return np.stack(images), np.asarray(labels, np.int32)


# ------------------------------------------------------------------------------- the parent

def items(quick: bool, train_seconds: float) -> list:
  """(name, child arguments, seconds it may take at most, seconds it needs at least), the most
  wanted first."""
  bench = lambda config, dtype, model='', most=130: (
      f'benchmark {model or config} {dtype}', ['benchmark', config, dtype, model], most, 30)
  return [
      ('environment', ['environment'], 60, 5),
      ('matmul', ['matmul'], 60, 10),
      bench('cifar10', 'bfloat16'),
      ('torch', ['torch'], 120, 60),
      ('train', ['train'], (40 if quick else 60) + train_seconds, 30 + train_seconds),
      bench('cifar10', 'float32'),
      bench('fashion_mnist', 'float32', most=50),
      bench('fashion_mnist', 'bfloat16', most=70),
      bench('cifar10', 'bfloat16', 'resnet', most=90),
      bench('cifar10', 'float32', 'resnet', most=90),
  ]


def _emit(line: dict):
  print(json.dumps(line), flush=True)


def run_all(args):
  """Runs every item in a child process of its own while the budget lasts; prints their lines."""
  out = os.path.abspath(os.environ.get('OUT') or 'gpu_out')
  os.makedirs(out, exist_ok=True)
  env = dict(os.environ, OUT=out, GPU_CHECK_QUICK='1' if args.quick else '',
             GPU_CHECK_TRAIN_SECONDS=str(args.train_seconds), TF_CPP_MIN_LOG_LEVEL='2')
  env['PYTHONPATH'] = os.pathsep.join(
      [REPO] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
  start = time.perf_counter()
  lines = []
  for name, child_args, most, least in items(args.quick, args.train_seconds):
    if args.only and not any(name.startswith(o) for o in args.only.split(',')):
      continue
    left = args.budget - (time.perf_counter() - start)
    if left < least:
      lines.append({'item': name, 'skipped': f'{left:.0f} s of the {args.budget} s budget left, '
                                              f'it needs {least} s'})
      _emit(lines[-1])
      continue
    # On a CPU the quick items still compile the step: minutes on a busy machine.
    most *= 10 if args.quick else 1
    lines.extend(_run_child(name, child_args, min(most, left), env, out))
  _emit(summary(lines, time.perf_counter() - start, out))


def _run_child(name, child_args, timeout, env, out) -> list:
  """One item's child: its JSON lines as they come; a line with its error if it fails."""
  log_path = os.path.join(out, name.replace(' ', '_') + '.log')
  lines = []
  with open(log_path, 'w') as log:
    # A session of its own: a timed-out item's processes (its peers too) all end with it.
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--child', *child_args],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                             start_new_session=True)
    start = time.perf_counter()
    deadline = start + timeout
    timer = _Timer(child, timeout)
    for text in child.stdout:
      if text.startswith('{'):
        lines.append({'item': name, **json.loads(text),
                      'item_seconds': round(time.perf_counter() - start, 1)})
        _emit(lines[-1])
    child.wait()
    timer.cancel()
  if child.returncode:
    why = (f'timed out after {timeout:.0f} s' if time.perf_counter() >= deadline else
           _last_error(log_path) or f'exit status {child.returncode}')
    lines.append({'item': name, 'error': why, 'log': log_path})
    _emit(lines[-1])
  return lines


class _Timer:
  """Kills a child that runs past its time."""

  def __init__(self, child, seconds):
    import threading  # pylint: disable=g-import-not-at-top
    self._timer = threading.Timer(seconds, self._kill, (child,))
    self._timer.start()

  @staticmethod
  def _kill(child):
    try:
      os.killpg(child.pid, 9)
    except ProcessLookupError:  # It ended meanwhile.
      pass

  def cancel(self):
    self._timer.cancel()


def _last_error(log_path) -> str:
  with open(log_path) as f:
    lines = [line.strip() for line in f if line.strip()]
  errors = [line for line in lines if 'Error' in line.split(':')[0] or line.startswith('Error')]
  return (errors or lines or [''])[-1][:500]


def summary(lines, seconds, out) -> dict:
  """The targets, from the items' lines: bf16 fraction for cifar10 and the ratio to PyTorch."""
  result = {'item': 'summary', 'seconds': round(seconds, 1), 'out': out}
  cifar = [l for l in lines if l.get('config_dataset') == 'cifar10' and l.get('model') == 'dcgan'
           and 'fraction_of_bf16_ceiling' in l]
  if cifar:
    best = max(cifar, key=lambda l: l['fraction_of_bf16_ceiling'])
    result['cifar10_best_fraction_of_bf16_ceiling'] = best['fraction_of_bf16_ceiling']
    result['cifar10_best_at'] = f"{best['dtype']} batch {best['batch_size']}"
  for line in lines:
    for key in ('ratio_to_torch_eager', 'ratio_to_torch_compile'):
      if key in line:
        result[key] = line[key]
  result['items_failed'] = [l['item'] for l in lines if 'error' in l]
  result['items_skipped'] = [l['item'] for l in lines if 'skipped' in l]
  return result


# -------------------------------------------------------------------------------- children

class _BlockTensorFlow:
  """An import hook: TensorFlow and Keras are absent, as on the GPU machine."""

  def find_spec(self, name, path=None, target=None):
    del path, target
    if name.split('.')[0] in BLOCKED:
      raise ModuleNotFoundError(f'No module named {name!r} (blocked by the GPU check)', name=name)
    return None


def child(argv):
  sys.meta_path.insert(0, _BlockTensorFlow())
  if os.path.isdir(SITE):  # Last on the path: an installed ml_collections or PyYAML wins.
    sys.path.append(SITE)
  quick = bool(os.environ.get('GPU_CHECK_QUICK'))
  {'environment': environment, 'matmul': matmul, 'benchmark': benchmark_item, 'train': train,
   'torch': torch_item}[argv[0]](quick, *argv[1:])


def environment(quick):
  del quick
  import jax  # pylint: disable=g-import-not-at-top
  versions = {}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax.checkpoint', 'numpy', 'absl',
               'ml_collections', 'yaml', 'torch', 'PIL'):
    spec = importlib.util.find_spec(name)
    if spec is None:
      versions[name] = None
      continue
    module = __import__(name, fromlist=['_'])
    versions[name] = getattr(module, '__version__', 'present')
    if name in ('ml_collections', 'yaml') and (spec.origin or '').startswith(SITE):
      versions[name] += ' (gpu_bundle)'
  device = jax.devices()[0]
  _print({'python': sys.version.split()[0], 'versions': versions, 'commit': _commit(),
          'platform': device.platform, 'device_kind': device.device_kind,
          'num_devices': jax.device_count(), 'cpu_count': os.cpu_count()})


def _commit():
  try:
    return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip() or None
  except (OSError, subprocess.CalledProcessError):
    return None


def _print(line: dict):
  print(json.dumps(line), flush=True)


def matmul(quick):
  """The best matmul FLOP/s per dtype and size (f32 at JAX's default and highest precision)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from cgan_jax import benchmark  # pylint: disable=g-import-not-at-top
  sizes = (128, 256) if quick else (2048, 4096, 8192, 16384)
  for dtype, precision in (('bfloat16', 'default'), ('float32', 'default'),
                           ('float32', 'highest')):
    rates = {}
    with jax.default_matmul_precision(precision):
      for n in sizes:
        rates[str(n)] = benchmark.make_matmul_probe(n, repeats=5, dtype=jnp.dtype(dtype))()
    _print({'dtype': dtype, 'precision': precision, 'flops_per_sec_by_size': rates,
            'best_flops_per_sec': max(rates.values()), 'device_kind': jax.devices()[0].device_kind})


def _bf16_ceiling(quick) -> float:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from cgan_jax import benchmark  # pylint: disable=g-import-not-at-top
  return max(benchmark.make_matmul_probe(n, repeats=5, dtype=jnp.bfloat16)()
             for n in ((128,) if quick else (8192, 16384)))


def _config(name: str):
  module = __import__(f'configs.{name}', fromlist=['get_config'])
  return module.get_config()


def _quick_model(config):
  """A narrow model with XLA's own convolutions (the fast CPU layers take minutes to compile)."""
  config.model.conv_impl = 'xla'
  config.model.g_width = config.model.d_width = 16
  config.model.latent_dim, config.model.embed_dim = 16, 8
  return config


def benchmark_item(quick, config_name, dtype, model=''):
  """benchmark.run of one config and dtype at a few batch sizes, with the bf16 fraction."""
  from cgan_jax import benchmark  # pylint: disable=g-import-not-at-top
  from cgan_jax import labels  # pylint: disable=g-import-not-at-top
  from cgan_jax import models  # pylint: disable=g-import-not-at-top
  if model and model not in models.MODELS:
    _print({'skipped': f'cgan_jax.models has no {model!r} (it has {sorted(models.MODELS)})'})
    return
  config = _config(config_name)
  if model:
    config.model.name = model
  config.model.dtype = dtype
  info = labels.DatasetInfo(num_classes=(10,), image_shape={'cifar10': (32, 32, 3)}.get(
      config_name, (28, 28, 1)), num_examples=0, class_names=())
  bf16 = _bf16_ceiling(quick)
  g_ratio = (config.g_batch_size or config.batch_size) // config.batch_size
  if quick:
    _quick_model(config)
  for batch_size in ((16,) if quick else BATCH_SIZES[model or config_name, dtype]):
    config.batch_size, config.g_batch_size = batch_size, g_ratio * batch_size
    result = benchmark.run(config, info, steps=2 if quick else 20, windows=2 if quick else 5,
                           matmul_size=128 if quick else 8192)
    result['bf16_matmul_flops_per_sec'] = bf16
    result['fraction_of_bf16_ceiling'] = result['achieved_flops_per_sec'] / bf16
    _print(result)


def torch_item(quick):
  """The JAX step of configs/fashion_mnist.py beside the PyTorch tutorial, eager and compiled."""
  if importlib.util.find_spec('torch') is None:
    _print({'skipped': 'torch is not installed'})
    return
  from cgan_jax import benchmark  # pylint: disable=g-import-not-at-top
  from cgan_jax import labels  # pylint: disable=g-import-not-at-top
  config = _config('fashion_mnist')
  info = labels.DatasetInfo(num_classes=(10,), image_shape=(28, 28, 1), num_examples=0,
                            class_names=())
  if quick:
    config.batch_size, config.g_batch_size = 8, 16
  peers, failed = [], {}
  shapes = benchmark.peer_shapes(config, info)
  for compiled in (False, True):
    name = 'torch_compile' if compiled else 'torch_eager'
    try:
      peers.append(benchmark.PeerProcess('benchmarks.torch_tutorial',
                                         dict(shapes, compile=compiled), name=name))
    except RuntimeError as e:
      failed[name] = str(e)
  try:
    result = benchmark.run(config, info, steps=1 if quick else 20, windows=2 if quick else 5,
                           matmul_size=128 if quick else 8192, peers=peers)
  finally:
    for peer in peers:
      peer.close()
  import torch  # pylint: disable=g-import-not-at-top
  _print({**benchmark.add_peer_memory(result, peers), 'torch': torch.__version__,
          'torch_device': 'cuda' if torch.cuda.is_available() else 'cpu',
          **{f'{name}_failed': why for name, why in failed.items()}})


def train(quick):
  """configs/mnist.py on the mnist-5k images for a fixed time; its sample grid as a PNG."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cgan_jax import benchmark  # pylint: disable=g-import-not-at-top
  from cgan_jax import plots  # pylint: disable=g-import-not-at-top
  from cgan_jax import sample  # pylint: disable=g-import-not-at-top
  from cgan_jax import sharding  # pylint: disable=g-import-not-at-top
  from cgan_jax import train_step  # pylint: disable=g-import-not-at-top
  if not os.path.exists(MNIST):
    _print({'skipped': f'no {MNIST}: run python benchmarks/gpu_check.py --prepare first'})
    return
  seconds = float(os.environ.get('GPU_CHECK_TRAIN_SECONDS', 120))
  data = np.load(MNIST)
  images = (data['train_images'][..., None].astype(np.float32) / 127.5 - 1)
  labels = data['train_labels'].astype(np.int32)
  config = _config('mnist')
  if quick:
    _quick_model(config)
  steps_per_loop = config.steps_per_loop if quick or jax.default_backend() == 'cpu' else 100
  mesh = sharding.make_mesh()
  num_classes, batch = (10,), config.batch_size
  trainer = train_step.build(config, num_classes, images.shape[1:])
  t = time.perf_counter()
  state = train_step.initial_state(trainer.init_fn, jax.random.PRNGKey(config.seed), config,
                                   sharding.replicated(mesh))
  loop = train_step.make_train_loop(trainer.step_fn, mesh)
  rng = np.random.default_rng(config.seed)
  order, position = rng.permutation(len(labels)), 0

  def next_batches():
    nonlocal order, position
    chosen = []
    for _ in range(steps_per_loop):
      if position + batch > len(order):  # A new epoch, shuffled with the same generator.
        order, position = rng.permutation(len(labels)), 0
      chosen.append(order[position:position + batch])
      position += batch
    chosen = np.stack(chosen)
    return sharding.to_global({'image': images[chosen], 'label': labels[chosen]}, mesh)

  state, metrics = loop(state, next_batches())
  jax.block_until_ready(metrics)
  compile_sec, steps = time.perf_counter() - t, steps_per_loop
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    state, metrics = loop(state, next_batches())
    steps += steps_per_loop
    jax.block_until_ready(metrics)
  train_sec = time.perf_counter() - start
  pictures, _ = sample.class_samples(trainer.generator, state.ema_g_params, list(range(10)),
                                     config.num_samples_per_class, seed=0,
                                     latent_dim=config.model.latent_dim, num_classes=num_classes)
  path = os.path.join(os.environ.get('OUT') or 'gpu_out', 'mnist5k_samples.png')
  picture = plots.grid(pictures, num_columns=10)
  if importlib.util.find_spec('PIL'):
    plots.write_image(path, picture)
  else:
    write_png(path, picture)
  _print({'config': 'configs/mnist.py', 'dataset': 'mnist-5k', 'train_images': len(labels),
          'batch_size': batch, 'steps': int(state.step), 'steps_per_loop': steps_per_loop,
          'compile_sec': compile_sec, 'train_sec': train_sec,
          'images_per_sec': (steps - steps_per_loop) * batch / train_sec,
          'epochs': steps * batch / len(labels),
          **{k: float(metrics[k]) for k in ('g_loss', 'd_loss', 'd_acc_real', 'd_acc_fake')
             if k in metrics},
          'nonfinite_steps_dropped': float(metrics['nonfinite']), 'sample_grid': path,
          'peak_host_memory_bytes': benchmark.peak_host_memory_bytes(),
          **benchmark.device_memory(), 'platform': jax.devices()[0].platform})


def write_png(path: str, picture):
  """A uint8 HxWx1 or HxWx3 picture as a PNG, with zlib alone (where Pillow is absent)."""
  height, width, channels = picture.shape
  rows = b''.join(b'\0' + picture[r].tobytes() for r in range(height))
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
  header = struct.pack('>IIBBBBB', width, height, 8, {1: 0, 3: 2}[channels], 0, 0, 0)
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(rows))
            + chunk(b'IEND', b''))


def main():
  if len(sys.argv) > 1 and sys.argv[1] == '--child':
    child(sys.argv[2:])
    return
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--prepare', action='store_true', help='Build gpu_bundle/ and stop.')
  parser.add_argument('--images', default=os.path.join(REPO, '..', 'shared', 'data', 'mnist-5k'),
                      help='With --prepare: the mnist-5k folder (train/DIGIT/*.png, test/...).')
  parser.add_argument('--quick', action='store_true', help='Every item in seconds (tests).')
  parser.add_argument('--budget', type=float, default=0,
                      help='Seconds for all the items; 0 = 450 (with --quick, 3600).')
  parser.add_argument('--train_seconds', type=float, default=120, help='Training time.')
  parser.add_argument('--only', default='', help='Comma-separated item-name prefixes to run.')
  args = parser.parse_args()
  if args.prepare:
    prepare(os.path.abspath(args.images))
    return
  args.budget = args.budget or (3600 if args.quick else 450)
  if args.quick:
    args.train_seconds = 10
  run_all(args)


if __name__ == '__main__':
  main()
