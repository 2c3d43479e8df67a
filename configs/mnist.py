"""The tutorial architecture on MNIST, with settings that train it reliably."""

from configs import default


def get_config():
  """Tutorial cDCGAN on mnist (or `folder:../shared/data/mnist-5k`)."""
  config = default.get_config()
  config.dataset = 'mnist'
  return config
