"""Two processes joined by jax.distributed train the same model as one process would."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from cgan_jax import checkpoint
from cgan_jax import input_pipeline
from cgan_jax import sample
from cgan_jax import sharding
from cgan_jax import train_step
from configs import digits
from tests import conftest

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2


def _flatten(config, prefix=''):
  for key, value in config.items():
    if hasattr(value, 'items'):
      yield from _flatten(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def _config():
  """The tiny digits config, trained for one loop of two steps."""
  config = conftest.make_tiny_config()
  config.num_train_steps = 2
  return config


def _config_flags(config):
  """--config.FIELD=VALUE for every field where `config` differs from configs/digits.py."""
  base = dict(_flatten(digits.get_config()))
  return [f'--config.{k}={v}' for k, v in _flatten(config) if base[k] != v]


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start_processes(config, workdir):
  """Starts NUM_PROCESSES `cgan_jax.main` processes on simulated CPU devices."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}')
  procs = []
  for i in range(NUM_PROCESSES):
    cmd = [sys.executable, '-m', 'cgan_jax.main', f'--workdir={workdir}',
           f'--coordinator_address=localhost:{port}', f'--num_processes={NUM_PROCESSES}',
           f'--process_id={i}', *_config_flags(config)]
    log = open(os.path.join(os.path.dirname(workdir), f'process_{i}.log'), 'w')
    procs.append((subprocess.Popen(cmd, cwd=conftest.REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT), log))
  return procs


def _wait(procs, timeout=240):
  for proc, log in procs:
    try:
      proc.wait(timeout=timeout)
    finally:
      proc.kill()
      log.close()
  for i, (proc, log) in enumerate(procs):
    if proc.returncode:
      with open(log.name) as f:
        raise AssertionError(f'process {i} exited with {proc.returncode}:\n{f.read()[-3000:]}')


def _process_stream(config, process_index, monkeypatch, local_batch, num_batches, train_mode=True):
  """What input_pipeline gives process `process_index` of NUM_PROCESSES."""
  monkeypatch.setattr(jax, 'process_index', lambda *_: process_index)
  monkeypatch.setattr(jax, 'process_count', lambda *_: NUM_PROCESSES)
  try:
    ds, _ = input_pipeline.create_dataset(config, config.train_split, local_batch,
                                          train=train_mode)
    return list(ds.take(num_batches).as_numpy_iterator())
  finally:
    monkeypatch.undo()


def _reference_state(config, global_batches):
  """One process, all 8 of the test's devices, on the global batches the processes formed."""
  info = input_pipeline.get_info(config)
  _, init, step = train_step.build(config, info.num_classes, info.image_shape)
  mesh = sharding.make_mesh()
  state = jax.jit(init, out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(config.seed))
  state, _ = train_step.make_train_loop(step, mesh)(state, sharding.to_global(global_batches, mesh))
  return jax.device_get(state)


def test_two_processes_match_one(tmp_path, monkeypatch):
  config = _config()
  workdir = str(tmp_path / 'run')
  procs = _start_processes(config, workdir)
  try:
    # While they train: each process's share of the data, and the single-process reference.
    local_batch = config.batch_size // NUM_PROCESSES
    epochs = [_process_stream(config, p, monkeypatch, 10_000, 1, train_mode=False)[0]
              for p in range(NUM_PROCESSES)]
    streams = [_process_stream(config, p, monkeypatch, local_batch, config.num_train_steps)
               for p in range(NUM_PROCESSES)]
    # Global example i of a step lives on device i // (local batch / devices); process 0
    # holds the first devices, so the global batch is the processes' batches in order.
    global_batches = {k: np.stack([np.concatenate([s[t][k] for s in streams])
                                   for t in range(config.num_train_steps)])
                      for k in ('image', 'label')}
    expected = _reference_state(config, global_batches)
  finally:
    _wait(procs)

  # Each process reads its own half of the examples, and together they read all of them.
  sizes = [len(e['label']) for e in epochs]
  assert sum(sizes) == 1500 and min(sizes) == 750
  rows = [{x.tobytes() for x in e['image']} for e in epochs]
  overlap = len(rows[0] & rows[1])
  assert overlap < 0.05 * sizes[0], f'{overlap} of the processes\' examples are shared'

  # The checkpoint the two processes wrote together holds the single-process parameters.
  manager = checkpoint.create_manager(workdir, config)
  assert manager.all_steps() == [config.num_train_steps]
  replicated = sharding.replicated(sharding.make_mesh())
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                          expected)
  got = jax.device_get(checkpoint.restore_state(manager, abstract))
  manager.close()
  assert int(got.step) == config.num_train_steps
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))

  # Only process 0 logged, wrote the sample grid and events; one process can sample the run.
  logs = []
  for i in range(NUM_PROCESSES):
    with open(tmp_path / f'process_{i}.log') as f:
      logs.append(f.read())
  assert 'step 2/2' in logs[0] and 'step 2/2' not in logs[1]
  assert os.path.exists(os.path.join(workdir, 'samples.png'))
  events = [f for f in os.listdir(workdir) if f.startswith('events.out.tfevents')]
  assert len(events) == 1, events
  output = str(tmp_path / 'grid.png')
  assert 'from step 2' in sample.sample_to_file(workdir, output, num_per_class=2)
  assert os.path.getsize(output) > 0


def test_local_batch_is_the_global_batch_split_over_processes(monkeypatch):
  monkeypatch.setattr(jax, 'process_count', lambda *_: 2)
  mesh = sharding.make_mesh(jax.devices()[:4])
  assert sharding.local_batch_size(16, mesh) == 8
  with pytest.raises(ValueError, match='batch_size=6 is not divisible by the 4 devices'):
    sharding.local_batch_size(6, mesh)


def test_folder_examples_split_over_processes(tmp_path, monkeypatch):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for i in range(10):
    path = tmp_path / 'train' / str(i % 2) / f'{i}.png'
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), i * 20, np.uint8)).save(path)
  config = conftest.make_tiny_config()
  config.dataset = f'folder:{tmp_path}'
  pixels = [sorted(e['image'][:, 0, 0, 0].tolist())
            for e in (_process_stream(config, p, monkeypatch, 100, 1, train_mode=False)[0]
                      for p in range(NUM_PROCESSES))]
  assert [len(p) for p in pixels] == [5, 5]
  np.testing.assert_allclose(sorted(pixels[0] + pixels[1]), np.arange(10) * 20 / 127.5 - 1,
                             atol=1e-6)
