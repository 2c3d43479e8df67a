"""The GPU check's parts that run anywhere: its PNG writer, the TensorFlow block, its budget,
its summary, and an item run in a process of its own. The PyTorch peer where torch exists."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import gpu_check
from tests import conftest


@pytest.mark.parametrize('channels', [1, 3])
def test_png_without_pillow_reads_back(tmp_path, channels):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  picture = np.random.default_rng(0).integers(0, 256, (13, 17, channels), dtype=np.uint8)
  gpu_check.write_png(str(tmp_path / 'p.png'), picture)
  assert np.array_equal(np.asarray(Image.open(tmp_path / 'p.png')).reshape(picture.shape), picture)


def test_children_cannot_import_tensorflow():
  code = ('import sys; sys.path.insert(0, "benchmarks"); import gpu_check\n'
          'sys.meta_path.insert(0, gpu_check._BlockTensorFlow())\n'
          'try:\n  import tensorflow\nexcept ModuleNotFoundError as e:\n  print("blocked", e.name)\n'
          'from cgan_jax import train_step, sample, benchmark\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=conftest.REPO, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ['blocked', 'tensorflow']


def _check(*args, env=None):
  out = subprocess.run([sys.executable, 'benchmarks/gpu_check.py', *args], cwd=conftest.REPO,
                       capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
  assert out.returncode == 0, out.stderr[-2000:]
  return [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]


def test_items_past_the_budget_are_skipped_with_a_reason(tmp_path):
  lines = _check('--budget', '1', env={'OUT': str(tmp_path)})
  names = [line['item'] for line in lines]
  assert names[-1] == 'summary' and 'train' in names and 'torch' in names
  assert all('budget' in line['skipped'] for line in lines[:-1])
  assert lines[-1]['items_skipped'] == names[:-1]


def test_environment_item_runs_in_its_own_process(tmp_path):
  lines = _check('--only', 'environment', '--quick', env={'OUT': str(tmp_path)})
  assert [line['item'] for line in lines] == ['environment', 'summary']
  assert lines[0]['platform'] == 'cpu' and lines[0]['versions']['jax']
  assert lines[-1]['items_failed'] == []


def test_summary_picks_the_best_cifar10_fraction_and_the_torch_ratios():
  lines = [
      {'item': 'b', 'config_dataset': 'cifar10', 'model': 'dcgan', 'dtype': 'float32',
       'batch_size': 64, 'fraction_of_bf16_ceiling': 0.1},
      {'item': 'b', 'config_dataset': 'cifar10', 'model': 'dcgan', 'dtype': 'bfloat16',
       'batch_size': 1024, 'fraction_of_bf16_ceiling': 0.3},
      {'item': 'torch', 'ratio_to_torch_eager': 3.0, 'ratio_to_torch_compile': 2.0},
      {'item': 'train', 'error': 'timed out after 9 s'}]
  result = gpu_check.summary(lines, 12.0, '/out')
  assert result['cifar10_best_fraction_of_bf16_ceiling'] == 0.3
  assert result['cifar10_best_at'] == 'bfloat16 batch 1024'
  assert result['ratio_to_torch_eager'] == 3.0 and result['items_failed'] == ['train']


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='torch is not installed')
def test_torch_peer_trains_the_tutorial_models():
  from benchmarks import torch_tutorial  # pylint: disable=g-import-not-at-top
  run = torch_tutorial.make_iteration(4, 8, (28, 28, 1), 10, 100)
  assert np.isfinite(run(1))
  g = torch_tutorial.Generator((28, 28, 1), 10, 100)
  import torch  # pylint: disable=g-import-not-at-top
  assert g(torch.zeros(3, 100), torch.zeros(3, dtype=torch.long)).shape == (3, 1, 28, 28)
