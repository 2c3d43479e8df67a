"""SNGAN with projection on 32x32 RGB CIFAR-10, as published (Miyato & Koyama 2018).

Residual G (256 feature maps, conditional BN) and D (128, spectral norm, projection), hinge
loss, five D steps per G step, Adam(2e-4, 0, 0.9) decayed linearly to 0, batch 64 (128 fakes in
G's update), 50k G steps: pfnet-research/sngan_projection's configs/sn_cifar10.yml. Samples come
from an EMA of G, as PyTorch-StudioGAN and BigGAN-PyTorch report.
"""

from configs import default


def get_config():
  """The SNGAN CIFAR-10 recipe on the residual models."""
  config = default.get_config()
  config.dataset = 'cifar10'
  config.model.name = 'resnet'
  config.model.latent_dim = 128  # SNGAN's noise size.
  config.model.embed_dim = 128  # The class embedding that drives every block's CBN.
  config.model.g_width = 256  # Feature maps in each of G's blocks.
  config.model.d_width = 128  # Feature maps in each of D's blocks.
  config.model.num_upsamples = 3  # 4x4 base map -> 32x32.
  config.model.g_conditioning = 'none'  # The label enters G through conditional batch norm only.
  config.model.g_norm = 'cbn'  # Class-conditional gain and bias in every block.
  config.model.d_conditioning = 'projection'  # logit = psi(phi(x)) + <Embed(y), phi(x)>.
  config.model.d_spectral_norm = True  # Lipschitz control instead of dropout.
  config.model.d_dropout = 0.0  # Spectral norm replaces the tutorial's dropout.
  config.loss = 'hinge'
  config.d_steps = 5  # n_dis = 5.
  config.g_b1 = 0.0  # Adam betas of SNGAN's ResNet setting.
  config.d_b1 = 0.0
  config.g_b2 = 0.9
  config.d_b2 = 0.9
  config.lr_schedule = 'linear'  # Both rates decay to 0 at the last step.
  config.ema_decay = 0.9999  # Sample from the EMA generator.
  config.batch_size = 64  # Real images in each D step.
  config.g_batch_size = 128  # Fakes in G's update (n_gen_samples).
  config.num_train_steps = 50_000  # G updates.
  config.reuse_host_memory = True  # On a CPU: no page faults on the step's large buffers.
  config.steps_per_loop = 50
  config.log_every_steps = 500
  config.sample_every_steps = 5_000
  config.checkpoint_every_steps = 5_000
  return config
