"""The core (models, step, checkpoints, sampling) imports and runs without TensorFlow."""

import subprocess
import sys
import textwrap

from tests import conftest

CORE = ('models', 'conditioning', 'layers', 'losses', 'train_step', 'sharding', 'checkpoint',
        'sample', 'labels', 'image_folder', 'plots')

_SCRIPT = textwrap.dedent('''
    import importlib.abc
    import sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
          raise ImportError(f'{name} is blocked')
        return None

    sys.meta_path.insert(0, NoTensorFlow())
    import importlib
    for name in %r:
      importlib.import_module('cgan_jax.' + name)

    import jax
    import numpy as np
    from cgan_jax import sharding, train_step
    from configs import default

    config = default.get_config()
    config.model.update(g_width=8, d_width=8, latent_dim=8, embed_dim=4)
    config.batch_size = 4
    _, init, step = train_step.build(config, (10,), (8, 8, 1))
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = train_step.initial_state(init, jax.random.PRNGKey(0), config,
                                     sharding.replicated(mesh))
    batch = {'image': np.zeros((4, 8, 8, 1), np.float32), 'label': np.arange(4, dtype=np.int32)}
    state, metrics = train_step.make_sharded_step(step, mesh)(state, sharding.to_global(batch, mesh, 0))
    assert int(state.step) == 1 and np.isfinite(float(metrics['g_loss']))
    assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')]
    print('ok')
''') % (CORE,)


def test_the_core_imports_and_steps_without_tensorflow():
  out = subprocess.run([sys.executable, '-c', _SCRIPT], cwd=conftest.REPO, capture_output=True,
                       text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().endswith('ok')
