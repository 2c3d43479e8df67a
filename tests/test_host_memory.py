"""Freed host memory is kept for reuse: a repeated XLA:CPU step stops faulting pages in."""

import os
import subprocess
import sys

import pytest

from cgan_jax import host_memory
from tests import conftest

_COUNT_FAULTS = '''
import os, resource
from cgan_jax import host_memory
if os.environ.get('KEEP') == '1':
  assert host_memory.keep_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.concatenate([x, x + 1], axis=-1) * 2)  # A 128 MB result.
x = jnp.ones((4096, 4096))
faults = []
for _ in range(12):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[2:]))  # Some calls still grow the heap while it settles; the best one tells.
'''


def _fewest_faults_per_call(**env):
  environ = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
  out = subprocess.run([sys.executable, '-c', _COUNT_FAULTS], cwd=conftest.REPO, env={**environ, **env},
                       capture_output=True, text=True, timeout=300, check=True)
  return float(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc only')
def test_repeated_step_reuses_memory():
  kept, system = _fewest_faults_per_call(KEEP='1'), _fewest_faults_per_call()
  # 128 MB is 32768 pages: with glibc's defaults every call faults them in again.
  assert system > 10_000, system
  assert kept < 1_000, kept


def test_users_own_malloc_settings_win(monkeypatch):
  monkeypatch.setenv('MALLOC_ARENA_MAX', '4')
  assert not host_memory.keep_freed_memory()
