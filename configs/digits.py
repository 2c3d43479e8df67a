"""The embedded default: scikit-learn's 8x8 digits, trained in a few minutes on a CPU."""

from configs import default


def get_config():
  """Small cDCGAN on `digits`, the data that ships with scikit-learn."""
  config = default.get_config()
  config.dataset = 'digits'
  config.model.g_width = 64
  config.model.d_width = 64
  config.model.num_upsamples = 1  # 4x4 base map: a 2x2 one drops the label on 8x8 images.
  config.model.g_out_kernel = 3
  config.model.d_dropout = 0.2
  config.batch_size = 64
  config.num_train_steps = 3000
  config.log_every_steps = 250
  config.sample_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.ema_decay = 0.99
  return config
