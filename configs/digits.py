"""The embedded default: scikit-learn's 8x8 digits, trained in a few minutes on a CPU."""

from configs import default


def get_config():
  """configs/mnist.py's projection cDCGAN, sized for 8x8 digits (the data in scikit-learn)."""
  config = default.get_config()
  config.dataset = 'digits'
  config.model.g_width = 64  # Feature maps in every G block.
  config.model.d_width = 64  # As G's.
  config.model.g_norm = 'cbn'  # Per-class gain and bias after G's upsampling.
  config.model.d_conditioning = 'projection'  # logit = psi(phi(x)) + <Embed(y), phi(x)>.
  config.model.d_spectral_norm = True  # Lipschitz control instead of dropout.
  config.model.d_dropout = 0.0  # Spectral norm replaces the tutorial's dropout.
  config.loss = 'hinge'  # The projection D's loss (Miyato & Koyama 2018).
  config.d_learning_rate = 4e-4  # D learns twice as fast as G (TTUR, Heusel et al. 2017).
  config.batch_size = 64  # Real images per step.
  config.num_train_steps = 3000  # About 43 epochs of the 1,500 training digits.
  config.log_every_steps = 250  # Console and TensorBoard losses every this many steps.
  config.sample_every_steps = 1000  # Sample grid every this many steps.
  config.checkpoint_every_steps = 1000  # Checkpoint every this many steps.
  config.ema_decay = 0.999  # Sample from an average of G's recent weights.
  return config
