"""The best recipe for small grayscale data on a CPU: MNIST, or a folder of a few thousand images.

The cGAN-with-projection recipe (Miyato & Koyama 2018) on DCGAN blocks of 64 feature maps:
conditional batch norm in G, a spectrally normalised projection D with twice G's learning rate
(4e-4 for G), the hinge loss, and samples from an EMA of G. Sized to train in about 10 minutes
on 2 CPU cores; the alternatives measured against it (widths, augmentation, learning rates) are
in docs/quality.md.
"""

from configs import default


def get_config():
  """The projection cDCGAN on mnist (or --config.dataset=folder:PATH)."""
  config = default.get_config()
  config.dataset = 'mnist'
  config.model.num_upsamples = 2  # 7x7 base map -> 28x28 (8x8 -> 32x32).
  config.model.g_out_kernel = 7  # The tutorial's last convolution.
  config.model.g_width = 64  # Half the tutorial's width: twice the steps in the same minutes.
  config.model.d_width = 64  # As G's.
  config.model.g_norm = 'cbn'  # Per-class gain and bias after each of G's upsamplings.
  config.model.d_conditioning = 'projection'  # logit = psi(phi(x)) + <Embed(y), phi(x)>.
  config.model.d_spectral_norm = True  # Lipschitz control instead of dropout.
  config.model.d_dropout = 0.0  # Spectral norm replaces the tutorial's dropout.
  config.loss = 'hinge'
  config.g_learning_rate = 4e-4  # Twice the tutorial's: better samples at every budget measured.
  config.d_learning_rate = 8e-4  # D learns twice as fast as G (TTUR, Heusel et al. 2017).
  config.batch_size = 32  # Real images per step: more steps in a CPU's minutes.
  config.ema_decay = 0.999  # Sample from an average of G's recent weights.
  config.num_train_steps = 6600  # 4.5 (AMD Zen 5) to 9 (Zen 4) minutes on 2 cores (docs/quality.md).
  config.reuse_host_memory = True  # On a CPU: no page faults on the step's large buffers.
  config.log_every_steps = 100
  config.sample_every_steps = 600
  config.checkpoint_every_steps = 600
  return config
