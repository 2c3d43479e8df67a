"""Where the trainer's resident memory goes: RSS after each stage of a benchmark-like run.

python benchmarks/memory_stages.py [--config=configs/fashion_mnist.py] [--tensorflow]
    [--keep_freed_memory] [--release_after_compile] [--conv_impl=auto|xla] [--steps=20]

Prints one JSON line: resident memory now (VmRSS) and at its peak (VmHWM), and glibc's heap
(its size, the part in use, its free top), in MB, after importing JAX and cgan_jax's core,
after importing TensorFlow (with --tensorflow, as train.py's input pipeline does), after
building and initialising the state, after compiling the step, and after `--steps` steps on
synthetic batches (of the config's batch sizes).
"""

import argparse
import ctypes
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _MallInfo2(ctypes.Structure):
  """glibc's struct mallinfo2 (malloc.h, glibc 2.33 on)."""
  _fields_ = [(name, ctypes.c_size_t) for name in (
      'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks',
      'fordblks', 'keepcost')]


def _heap_mb() -> dict:
  """glibc's heap: its size, the bytes in use in it, and the free top it could trim, in MB."""
  try:
    mallinfo2 = ctypes.CDLL('libc.so.6').mallinfo2
  except (OSError, AttributeError):  # Not glibc, or older than 2.33.
    return {}
  mallinfo2.restype = _MallInfo2
  info = mallinfo2()
  return {'heap_mb': round(info.arena / 2**20), 'heap_in_use_mb': round(info.uordblks / 2**20),
          'heap_free_top_mb': round(info.keepcost / 2**20)}


def memory_mb() -> dict:
  """VmRSS and VmHWM of this process (Linux), and glibc's heap, in MB."""
  fields = {}
  with open('/proc/self/status') as f:
    for line in f:
      key, _, value = line.partition(':')
      if key in ('VmRSS', 'VmHWM'):
        fields[key] = round(int(value.split()[0]) / 1024, 1)
  return {'rss_mb': fields['VmRSS'], 'peak_mb': fields['VmHWM'], **_heap_mb()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/fashion_mnist.py')
  parser.add_argument('--tensorflow', action='store_true', help='Import TensorFlow too.')
  parser.add_argument('--keep_freed_memory', action='store_true',
                      help='host_memory.keep_freed_memory() first (config.reuse_host_memory).')
  parser.add_argument('--release_after_compile', action='store_true',
                      help='host_memory.release_freed_memory() once the step is compiled.')
  parser.add_argument('--conv_impl', default='auto')
  parser.add_argument('--steps', type=int, default=20)
  args = parser.parse_args()
  stages = {'start': memory_mb()}
  from cgan_jax import host_memory  # pylint: disable=g-import-not-at-top
  applied = host_memory.keep_freed_memory() if args.keep_freed_memory else False
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from cgan_jax import benchmark, labels, sharding, train_step
  # pylint: enable=g-import-not-at-top
  jax.devices()
  stages['jax_and_core'] = memory_mb()
  if args.tensorflow:
    from cgan_jax import input_pipeline  # pylint: disable=g-import-not-at-top,unused-import
    stages['tensorflow'] = memory_mb()
  name = os.path.splitext(os.path.basename(args.config))[0]
  config = __import__(f'configs.{name}', fromlist=['get_config']).get_config()
  config.model.conv_impl = args.conv_impl
  image_shape = {'cifar10': (32, 32, 3)}.get(config.dataset, (28, 28, 1))
  info = labels.DatasetInfo(num_classes=(10,), image_shape=image_shape, num_examples=0,
                            class_names=())
  mesh = sharding.make_mesh()
  trainer = train_step.build(config, info.num_classes, info.image_shape)
  state = train_step.initial_state(trainer.init_fn, jax.random.PRNGKey(0), config,
                                   sharding.replicated(mesh))
  jax.block_until_ready(state)
  stages['state'] = memory_mb()
  batches = benchmark._synthetic_batches(config, info, 1, mesh)  # pylint: disable=protected-access
  one = jax.tree.map(lambda x: x[0], batches)
  step = train_step.make_sharded_step(trainer.step_fn, mesh)
  t = time.perf_counter()
  compiled = step.lower(state, one).compile()
  stages['compiled'] = {**memory_mb(), 'seconds': round(time.perf_counter() - t, 1)}
  memory = compiled.memory_analysis()
  if args.release_after_compile:
    host_memory.release_freed_memory()
    stages['released'] = memory_mb()
  state, metrics = compiled(state, one)
  jax.block_until_ready(metrics)
  stages['one_step'] = memory_mb()
  t = time.perf_counter()
  for _ in range(args.steps - 1):
    state, metrics = compiled(state, one)
  jax.block_until_ready(metrics)
  steps_per_sec = (args.steps - 1) / (time.perf_counter() - t)
  stages[f'{args.steps}_steps'] = {**memory_mb(), 'steps_per_sec': round(steps_per_sec, 2)}
  params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  result = {'config': args.config, 'tensorflow': args.tensorflow, 'keep_freed_memory': applied,
            'release_after_compile': args.release_after_compile,
            'conv_impl': args.conv_impl, 'batch_size': config.batch_size,
            'g_batch_size': config.g_batch_size or config.batch_size,
            'state_mb': round(params / 2**20, 1), 'stages': stages,
            'finite': bool(np.isfinite(float(metrics['g_loss'])))}
  if memory is not None:  # XLA's plan for the step's buffers.
    result['step_temp_mb'] = round(memory.temp_size_in_bytes / 2**20, 1)
    result['step_argument_mb'] = round(memory.argument_size_in_bytes / 2**20, 1)
    result['step_output_mb'] = round(memory.output_size_in_bytes / 2**20, 1)
    result['step_code_mb'] = round(memory.generated_code_size_in_bytes / 2**20, 1)
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  main()
