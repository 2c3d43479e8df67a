"""Freed host memory is kept for reuse: a repeated XLA:CPU step stops faulting pages in."""

import os
import subprocess
import sys

import pytest

from tests import conftest

_COUNT_FAULTS = '''
import resource
import cgan_jax  # Tunes malloc on import.
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.concatenate([x, x + 1], axis=-1) * 2)  # A 128 MB result.
x = jnp.ones((4096, 4096))
for _ in range(3):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  f(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
'''


def _faults_per_call(**env):
  environ = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
  out = subprocess.run([sys.executable, '-c', _COUNT_FAULTS], cwd=conftest.REPO, env={**environ, **env},
                       capture_output=True, text=True, timeout=300, check=True)
  return float(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc only')
def test_repeated_step_reuses_memory():
  kept, system = _faults_per_call(), _faults_per_call(CGAN_JAX_SYSTEM_MALLOC='1')
  # 128 MB is 32768 pages: with the system default each call faults most of them in again.
  assert system > 10_000, system
  assert kept < 1_000, kept
