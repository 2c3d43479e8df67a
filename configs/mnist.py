"""The best recipe for small grayscale data on a CPU: MNIST, or a folder of a few thousand images.

The tutorial's DCGAN widths (configs/fashion_mnist.py) with the cGAN-with-projection recipe
(Miyato & Koyama 2018): conditional batch norm in G, a spectrally normalised projection D and
the hinge loss, plus differentiable augmentation (Zhao et al. 2020) so that D does not memorise
a small training set, and samples from an EMA of G. Measured in docs/quality.md.
"""

from configs import default


def get_config():
  """The projection cDCGAN with augmentation on mnist (or --config.dataset=folder:PATH)."""
  config = default.get_config()
  config.dataset = 'mnist'
  config.model.g_norm = 'cbn'  # Per-class gain and bias after each of G's upsamplings.
  config.model.d_conditioning = 'projection'  # logit = psi(phi(x)) + <Embed(y), phi(x)>.
  config.model.d_spectral_norm = True  # Lipschitz control instead of dropout.
  config.model.d_dropout = 0.0  # Spectral norm replaces the tutorial's dropout.
  config.loss = 'hinge'
  config.augment = 'translation,cutout'  # The same random shifts and cutouts for real and fake.
  config.batch_size = 32  # Real images per step: more steps in a CPU's minutes.
  config.ema_decay = 0.999  # Sample from an average of G's recent weights.
  config.num_train_steps = 4000
  config.reuse_host_memory = True  # On a CPU: no page faults on the step's large buffers.
  config.log_every_steps = 100
  config.sample_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
