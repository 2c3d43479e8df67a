"""A conditional DCGAN for 32x32 RGB CIFAR-10: CBN generator, SN projection critic, hinge loss."""

from configs import default


def get_config():
  """DCGAN widths with the SNGAN/cGAN-with-projection recipe (Miyato & Koyama 2018)."""
  config = default.get_config()
  config.dataset = 'cifar10'
  config.model.latent_dim = 128  # SNGAN's noise size.
  config.model.g_width = 256  # Feature maps in each of G's blocks.
  config.model.d_width = 128  # Feature maps in each of D's blocks.
  config.model.num_upsamples = 3  # 4x4 base map -> 32x32.
  config.model.g_out_kernel = 3  # A 3x3 output conv as in DCGAN/SNGAN at 32x32.
  config.model.g_conditioning = 'none'  # The label enters G through conditional batch norm only.
  config.model.g_norm = 'cbn'  # Per-class gain and bias after every upsampling.
  config.model.d_conditioning = 'projection'  # logit = psi(phi(x)) + <Embed(y), phi(x)>.
  config.model.d_spectral_norm = True  # Lipschitz control instead of dropout.
  config.model.d_dropout = 0.0  # Spectral norm replaces the tutorial's dropout.
  config.loss = 'hinge'
  config.g_b1 = 0.5  # Adam betas of SNGAN's standard-CNN setting.
  config.d_b1 = 0.5
  config.ema_decay = 0.999  # Sample from the EMA generator.
  config.batch_size = 64
  config.num_train_steps = 100_000
  config.reuse_host_memory = True  # On a CPU: no page faults on the step's large buffers.
  config.steps_per_loop = 50
  config.log_every_steps = 500
  config.sample_every_steps = 5_000
  config.checkpoint_every_steps = 5_000
  return config
