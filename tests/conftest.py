"""Eight simulated CPU devices for every test, and tiny configs."""

import os
import tempfile

# Tests compile many tiny programs and run them briefly: LLVM's -O0 halves XLA:CPU's compile
# time, and a persistent cache shared by the tests of a worker (and their subprocesses)
# compiles each program once.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8'
                           ' --xla_backend_optimization_level=0').strip()
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='cgan_jax_test_jit_'))
if os.environ.get('PYTEST_XDIST_WORKER'):
  # A folder per xdist worker (they inherit the session's): two processes writing one entry at
  # once could leave a half-written executable for the other to load.
  os.environ['JAX_COMPILATION_CACHE_DIR'] = os.path.join(
      os.environ['JAX_COMPILATION_CACHE_DIR'], os.environ['PYTEST_XDIST_WORKER'])
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import digits  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_5K = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'mnist-5k')


def make_tiny_config():
  """The digits config shrunk so a step compiles and runs in a moment, on the tutorial's model."""
  config = digits.get_config()
  # The tutorial's conditioning and loss, which most tests are written for; the projection
  # recipe that configs/digits.py ships is covered where a test sets it.
  config.model.g_norm = 'none'
  config.model.d_conditioning = 'channel'
  config.model.d_spectral_norm = False
  config.model.d_dropout = 0.2
  config.loss = 'non_saturating'
  config.d_learning_rate = 2e-4
  config.ema_decay = 0.99
  config.model.g_width = 8
  config.model.d_width = 8
  config.model.latent_dim = 8
  config.model.embed_dim = 4
  config.batch_size = 16
  config.num_train_steps = 4
  config.steps_per_loop = 2
  config.log_every_steps = 2
  config.sample_every_steps = 2
  config.checkpoint_every_steps = 2
  config.num_samples_per_class = 2
  config.shuffle_buffer = 64
  return config


@pytest.fixture
def tiny_config():
  return make_tiny_config()
