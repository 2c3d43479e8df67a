"""The Fashion-MNIST cDCGAN tutorial, exactly: latent 100, n_batch 128, Adam(2e-4, 0.5), BCE."""

from configs import default


def get_config():
  """The tutorial's model and training iteration on fashion_mnist."""
  config = default.get_config()
  config.dataset = 'fashion_mnist'
  config.model.num_upsamples = 2  # 7x7 base map -> 28x28.
  config.model.g_out_kernel = 7  # The tutorial's last convolution.
  config.d_update = 'separate'  # The tutorial trains D on the real half-batch, then on the fake one.
  config.batch_size = 64  # The tutorial's half-batch of real images (n_batch = 128).
  config.g_batch_size = 128  # G trains on a full n_batch of generated images.
  config.num_train_steps = 100 * (60_000 // 128)  # 100 epochs of 468 iterations.
  config.reuse_host_memory = True  # On a CPU: no page faults on the step's large buffers.
  return config
