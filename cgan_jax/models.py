"""Conditional generators and discriminators (Flax linen), chosen by name."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from cgan_jax import conditioning
from cgan_jax import layers


def leaky_relu(x):
  return nn.leaky_relu(x, negative_slope=0.2)


class DCGANGenerator(nn.Module):
  """The tutorial cDCGAN generator: Dense to a base map, stride-2 upsamplings, conv + tanh."""
  num_classes: int
  image_shape: Sequence[int]
  latent_dim: int = 100
  embed_dim: int = 50
  width: int = 128
  num_upsamples: int = 2
  out_kernel: int = 7
  conditioning: str = 'channel'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, labels, train: bool = True):
    height, width, channels = self.image_shape
    base_h, base_w = height // 2**self.num_upsamples, width // 2**self.num_upsamples
    x = nn.Dense(self.width * base_h * base_w, dtype=self.dtype, name='project')(z)
    x = leaky_relu(x).reshape(z.shape[0], base_h, base_w, self.width)
    if self.conditioning == 'channel':
      x = conditioning.concat_label_map(
          x, labels, num_classes=self.num_classes, embed_dim=self.embed_dim)
    for i in range(self.num_upsamples):
      x = layers.ConvTransposeSubpixel(self.width, 4, 2, dtype=self.dtype, name=f'up{i}')(x)
      x = leaky_relu(x)
    k = self.out_kernel
    x = nn.Conv(channels, (k, k), padding='SAME', dtype=self.dtype, name='to_image')(x)
    return jnp.tanh(x.astype(jnp.float32))


class DCGANDiscriminator(nn.Module):
  """The tutorial cDCGAN discriminator: label map at input, stride-2 convs, dropout, logit."""
  num_classes: int
  embed_dim: int = 50
  width: int = 128
  num_downsamples: int = 2
  dropout: float = 0.4
  conditioning: str = 'channel'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, labels, train: bool = True):
    x = images.astype(self.dtype)
    if self.conditioning == 'channel':
      x = conditioning.concat_label_map(
          x, labels, num_classes=self.num_classes, embed_dim=self.embed_dim)
    for i in range(self.num_downsamples):
      x = nn.Conv(self.width, (3, 3), strides=(2, 2), padding='SAME', dtype=self.dtype,
                  name=f'down{i}')(x)
      x = leaky_relu(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(1, dtype=self.dtype, name='logit')(x)[:, 0].astype(jnp.float32)


def _dcgan(config: ml_collections.ConfigDict, num_classes: int, image_shape: Sequence[int]):
  m = config.model
  height, width, _ = image_shape
  factor = 2**m.num_upsamples
  if height % factor or width % factor:
    raise ValueError(
        f'Image size {height}x{width} is not divisible by 2**model.num_upsamples={factor}; '
        'set --config.image_size or --config.model.num_upsamples.')
  generator = DCGANGenerator(
      num_classes=num_classes, image_shape=tuple(image_shape), latent_dim=m.latent_dim,
      embed_dim=m.embed_dim, width=m.g_width, num_upsamples=m.num_upsamples,
      out_kernel=m.g_out_kernel, conditioning=m.g_conditioning)
  discriminator = DCGANDiscriminator(
      num_classes=num_classes, embed_dim=m.embed_dim, width=m.d_width,
      num_downsamples=m.num_upsamples, dropout=m.d_dropout, conditioning=m.d_conditioning)
  return generator, discriminator


MODELS = {'dcgan': _dcgan}


def create_models(config: ml_collections.ConfigDict, num_classes: int, image_shape):
  """Builds (generator, discriminator) for `config.model.name`."""
  if config.model.name not in MODELS:
    raise ValueError(f'Unknown model.name {config.model.name!r}; choose one of {sorted(MODELS)}.')
  conditioning.check_conditioning(config.model.g_conditioning, config.model.d_conditioning)
  return MODELS[config.model.name](config, num_classes, image_shape)
