"""The tutorial cDCGAN on MNIST, with settings that train it reliably on a CPU.

Versus the tutorial (configs/fashion_mnist.py): D takes one joint step on real and generated
images instead of two separate ones, batches are smaller, and samples come from an EMA of G.
"""

from configs import default


def get_config():
  """Tutorial cDCGAN on mnist (or --config.dataset=folder:../shared/data/mnist-5k)."""
  config = default.get_config()
  config.dataset = 'mnist'
  config.d_update = 'joint'  # One D step on real+fake: the tutorial's two steps collapse G to black.
  config.batch_size = 32  # Real images per step; 2000 steps fit a CPU session.
  config.ema_decay = 0.999  # Sample from an average of G's recent weights.
  config.num_train_steps = 2000
  config.reuse_host_memory = True  # On a CPU: no page faults on the step's large buffers.
  config.log_every_steps = 100
  config.sample_every_steps = 250
  config.checkpoint_every_steps = 500
  return config
