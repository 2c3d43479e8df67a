"""The benchmark CLI runs the real train loop and prints one JSON line of positive numbers."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cgan_jax import benchmark
from cgan_jax import input_pipeline
from tests import conftest

TINY_FLAGS = ['--config.model.g_width=8', '--config.model.d_width=8', '--config.model.latent_dim=8',
              '--config.model.embed_dim=4', '--config.batch_size=16']


def test_benchmark_prints_json_with_positive_numbers():
  command = [sys.executable, '-m', 'cgan_jax.benchmark', '--config=configs/digits.py',
             *TINY_FLAGS, '--steps=2', '--windows=2', '--matmul_size=64']
  out = subprocess.run(command, cwd=conftest.REPO, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ))
  assert out.returncode == 0, out.stderr[-2000:]
  lines = [line for line in out.stdout.splitlines() if line.strip()]
  assert len(lines) == 1, out.stdout
  result = json.loads(lines[0])
  for key in ('images_per_sec', 'steps_per_sec', 'compile_sec', 'step_flops', 'model_flops',
              'matmul_flops_per_sec', 'fraction_of_ceiling', 'executed_fraction_of_ceiling',
              'peak_host_memory_bytes'):
    assert result[key] > 0, (key, result)
  assert result['num_devices'] == 8  # conftest's simulated devices reach the subprocess.
  assert result['images_per_sec'] == result['steps_per_sec'] * 16
  assert result['finite']


def test_bad_steps_is_a_clear_error():
  command = [sys.executable, '-m', 'cgan_jax.benchmark', '--config=configs/digits.py',
             *TINY_FLAGS, '--config.batch_size=12']
  out = subprocess.run(command, cwd=conftest.REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert 'divisible' in out.stderr


def test_keras_side_by_side_runs_in_its_own_process():
  command = [sys.executable, '-m', 'cgan_jax.benchmark', '--config=configs/digits.py',
             *TINY_FLAGS, '--steps=1', '--windows=2', '--matmul_size=64', '--keras']
  out = subprocess.run(command, cwd=conftest.REPO, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ))
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result['keras_images_per_sec'] > 0
  assert result['ratio_to_keras'] > 0
  assert result['keras_peak_host_memory_bytes'] > 0  # Reported by the peer as it ends.


def test_torch_flag_is_a_clear_error_without_torch():
  if importlib.util.find_spec('torch') is not None:
    pytest.skip('torch is installed')
  command = [sys.executable, '-m', 'cgan_jax.benchmark', '--config=configs/digits.py',
             *TINY_FLAGS, '--steps=1', '--windows=1', '--matmul_size=64', '--torch']
  out = subprocess.run(command, cwd=conftest.REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert 'pip install torch' in out.stderr.strip().splitlines()[-1]


def test_device_memory_is_empty_where_the_platform_gives_none():
  assert benchmark.device_memory() == {}  # XLA:CPU reports no allocator statistics.
  assert benchmark.peak_host_memory_bytes() > 0


def test_the_timing_functions_import_without_tensorflow():
  code = ('import sys\n'
          'class Block:\n'
          '  def find_spec(self, name, path=None, target=None):\n'
          '    if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "keras"):\n'
          '      raise ModuleNotFoundError(name)\n'
          'sys.meta_path.insert(0, Block())\n'
          'from cgan_jax import benchmark\n'
          'print(sorted(m for m in sys.modules if m.startswith("tensorflow")))\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=conftest.REPO, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == '[]'


def test_keras_runs_with_tensorflow_defaults(monkeypatch):
  monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', '0')  # As cgan_jax sets it for its own process.
  started = {}

  class FakePopen:
    def __init__(self, command, env, **kwargs):
      del kwargs
      started.update(command=command, env=env)
      self.stdout = type('Out', (), {'readline': lambda self: 'ready\n'})()

  monkeypatch.setattr(benchmark.subprocess, 'Popen', FakePopen)
  benchmark.keras_process({'batch_size': 8})
  assert 'benchmarks.keras_tutorial' in started['command']
  assert started['env']['TF_ENABLE_ONEDNN_OPTS'] == '1'  # oneDNN on, as Keras users run it.


def test_input_pipeline_alone():
  command = [sys.executable, '-m', 'cgan_jax.benchmark', '--config=configs/digits.py',
             '--config.batch_size=16', '--input_pipeline=5']
  out = subprocess.run(command, cwd=conftest.REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result['batches'] == 5 and result['local_batch_size'] == 16  # One process: all of it.
  assert result['input_images_per_sec'] > 0


def test_several_attributes_are_benchmarked_as_configured():
  """config.labels picks the attributes (the model's embeddings), read without any download."""
  config = conftest.make_tiny_config()
  config.dataset, config.labels = 'smallnorb', 'label_category,label_lighting'
  info = input_pipeline.get_info(config, prepare=False)
  assert info.num_classes == (5, 6) and info.image_shape == (96, 96, 1)
  labels = benchmark._random_labels(np.random.default_rng(0), info.num_classes, (3, 400))  # pylint: disable=protected-access
  assert labels.shape == (3, 400, 2) and labels.dtype == np.int32
  assert labels[..., 0].max() == 4 and labels[..., 1].max() == 5 and labels.min() == 0
  config.labels = ''
  assert input_pipeline.get_info(config, prepare=False).num_classes == (5,)
