"""Conditional generators and discriminators (Flax linen), chosen by name."""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cgan_jax import conditioning
from cgan_jax import layers
from cgan_jax import resnet
from cgan_jax.sharding import DATA_AXIS


@jax.custom_jvp
def leaky_relu(x):
  """Leaky ReLU (slope 0.2), its derivative taken from its output rather than its input."""
  return nn.leaky_relu(x, negative_slope=0.2)


@leaky_relu.defjvp
def _leaky_relu_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  y = leaky_relu(x)
  # y >= 0 exactly where x >= 0. G's next layers keep y for their weight gradients anyway, while
  # XLA rebuilt x from the transposed conv's tiles for autodiff's mask (step 1-2% faster, measured).
  return y, jnp.where(y >= 0, t, 0.2 * t)


class DCGANGenerator(nn.Module):
  """The tutorial cDCGAN generator: Dense to a base map, stride-2 upsamplings, conv + tanh."""
  num_classes: tuple  # Class counts, one per label attribute.
  image_shape: Sequence[int]
  latent_dim: int = 100
  embed_dim: int = 50
  width: int = 128
  num_upsamples: int = 2
  out_kernel: int = 7
  conditioning: str = 'channel'
  condition_at: int = 0  # 'channel': after this many upsamplings (0 = on the base map).
  norm: str = 'none'  # After each upsampling: 'none', 'batch' or 'cbn' (conditional).
  pretrained_embed: bool = False  # Tables named 'pretrained' (model.embed_init_file's).
  dtype: Any = jnp.float32
  layer_impl: str = 'auto'  # The layers' impl: 'auto' (fast per platform) or 'conv' (XLA's).

  @nn.compact
  def __call__(self, z, labels, train: bool = True):
    height, width, channels = self.image_shape
    base_h, base_w = height // 2**self.num_upsamples, width // 2**self.num_upsamples
    z = conditioning.condition_latent(z, labels, style=self.conditioning,
                                      num_classes=self.num_classes, embed_dim=self.embed_dim,
                                      pretrained=self.pretrained_embed)
    x = nn.Dense(self.width * base_h * base_w, dtype=self.dtype, name='project')(z)
    x = leaky_relu(x).reshape(z.shape[0], base_h, base_w, self.width)
    for i in range(self.num_upsamples + 1):
      if self.conditioning == 'channel' and i == self.condition_at:
        x = conditioning.concat_label_map(
            x, labels, num_classes=self.num_classes, embed_dim=self.embed_dim,
            pretrained=self.pretrained_embed)
      if i == self.num_upsamples:
        break
      x = layers.ConvTransposeSubpixel(self.width, 4, 2, dtype=self.dtype,
                                       use_bias=self.norm == 'none', name=f'up{i}',
                                       impl=self.layer_impl)(x)
      if self.norm != 'none':
        # Statistics synced over the data axis in training; sampling runs outside it.
        x = conditioning.BatchNorm(self.num_classes if self.norm == 'cbn' else None,
                                   axis_name=DATA_AXIS if train else None, name=f'norm{i}')(x, labels)
      x = leaky_relu(x)
    k = self.out_kernel
    x = layers.ConvShiftAdd(channels, k, dtype=self.dtype, name='to_image', impl=self.layer_impl)(x)
    return jnp.tanh(x.astype(jnp.float32))


class DCGANDiscriminator(nn.Module):
  """The tutorial cDCGAN discriminator: label map at input, stride-2 convs, dropout, logit.

  With 'acgan' conditioning the class logits are sown as ('intermediates', 'class_logits').
  """
  num_classes: tuple
  embed_dim: int = 50
  width: int = 128
  num_downsamples: int = 2
  dropout: float = 0.4
  conditioning: str = 'channel'
  condition_at: int = 0  # 'channel'/'concat'/'multiply': after this many downsamplings.
  spectral_norm: bool = False  # Every kernel divided by its top singular value (u in batch_stats).
  pretrained_embed: bool = False  # Tables named 'pretrained' (model.embed_init_file's).
  dtype: Any = jnp.float32
  layer_impl: str = 'auto'  # The layers' impl: 'auto' (fast per platform) or 'conv' (XLA's).

  @nn.compact
  def __call__(self, images, labels, train: bool = True, dropout_keys=None):
    """`dropout_keys`: one key per example for its dropout mask (else split from the 'dropout' rng)."""
    x = images.astype(self.dtype)
    for i in range(self.num_downsamples + 1):
      if i == self.condition_at:
        x = conditioning.condition_map(x, labels, self.conditioning, num_classes=self.num_classes,
                                       embed_dim=self.embed_dim, pretrained=self.pretrained_embed)
      if i == self.num_downsamples:
        break
      conv = layers.ConvPatches(self.width, 3, 2, dtype=self.dtype, name=f'down{i}',
                                impl=self.layer_impl)
      x = leaky_relu(conditioning.maybe_spectral_norm(conv, x, self.spectral_norm, train))
    x = x.reshape(x.shape[0], -1)
    return conditioning.discriminator_head(self, x, labels, train=train, dropout_keys=dropout_keys)


def _check_divisible(image_shape: Sequence[int], num_upsamples: int):
  """A one-line error if the image size does not halve `num_upsamples` times."""
  height, width, _ = image_shape
  factor = 2**num_upsamples
  if height % factor or width % factor:
    raise ValueError(
        f'Image size {height}x{width} is not divisible by 2**model.num_upsamples={factor}; '
        'set --config.image_size or --config.model.num_upsamples.')


def _dcgan(config: ml_collections.ConfigDict, num_classes: tuple, image_shape: Sequence[int]):
  m = config.model
  _check_divisible(image_shape, m.num_upsamples)
  for name in ('g_condition_at', 'd_condition_at'):
    if not 0 <= m[name] <= m.num_upsamples:
      raise ValueError(f'model.{name}={m[name]} must be between 0 and model.num_upsamples='
                       f'{m.num_upsamples} (the number of blocks the label can follow).')
  dtype = jnp.dtype(m.dtype)
  layer_impl = {'auto': 'auto', 'xla': 'conv'}[m.conv_impl]
  generator = DCGANGenerator(
      num_classes=num_classes, image_shape=tuple(image_shape), latent_dim=m.latent_dim,
      embed_dim=m.embed_dim, width=m.g_width, num_upsamples=m.num_upsamples,
      out_kernel=m.g_out_kernel, conditioning=m.g_conditioning, condition_at=m.g_condition_at,
      norm=m.g_norm, pretrained_embed=bool(m.embed_init_file), dtype=dtype, layer_impl=layer_impl)
  discriminator = DCGANDiscriminator(
      num_classes=num_classes, embed_dim=m.embed_dim, width=m.d_width,
      num_downsamples=m.num_upsamples, dropout=m.d_dropout, conditioning=m.d_conditioning,
      condition_at=m.d_condition_at, spectral_norm=m.d_spectral_norm,
      pretrained_embed=bool(m.embed_init_file), dtype=dtype, layer_impl=layer_impl)
  return generator, discriminator


def _resnet(config: ml_collections.ConfigDict, num_classes: tuple, image_shape: Sequence[int]):
  m = config.model
  height, width, _ = image_shape
  _check_divisible(image_shape, m.num_upsamples)
  if m.g_norm not in ('batch', 'cbn'):
    raise ValueError(f"model.name='resnet' normalises in every block: set model.g_norm to 'cbn' "
                     f"(class-conditional) or 'batch', not {m.g_norm!r}.")
  num_downsamples = resnet.d_downsamples(min(height, width))
  num_blocks = num_downsamples + 2  # Two blocks at D's smallest size, as SNGAN's CIFAR D.
  if not 0 <= m.g_condition_at <= m.num_upsamples:
    raise ValueError(f'model.g_condition_at={m.g_condition_at} must be between 0 and '
                     f'model.num_upsamples={m.num_upsamples}.')
  if not 0 <= m.d_condition_at < num_blocks:
    raise ValueError(f'model.d_condition_at={m.d_condition_at} must be between 0 and '
                     f"{num_blocks - 1} (the residual D's blocks for {height}x{width} images).")
  dtype = jnp.dtype(m.dtype)
  layer_impl = {'auto': 'auto', 'xla': 'conv'}[m.conv_impl]
  generator = resnet.ResNetGenerator(
      num_classes=num_classes, image_shape=tuple(image_shape), latent_dim=m.latent_dim,
      embed_dim=m.embed_dim, width=m.g_width, num_upsamples=m.num_upsamples,
      conditioning=m.g_conditioning, condition_at=m.g_condition_at, norm=m.g_norm,
      hierarchical_z=m.hierarchical_z, pretrained_embed=bool(m.embed_init_file), dtype=dtype,
      layer_impl=layer_impl)
  discriminator = resnet.ResNetDiscriminator(
      num_classes=num_classes, embed_dim=m.embed_dim, width=m.d_width,
      num_downsamples=num_downsamples, num_blocks=num_blocks, dropout=m.d_dropout,
      conditioning=m.d_conditioning, condition_at=m.d_condition_at,
      spectral_norm=m.d_spectral_norm, pretrained_embed=bool(m.embed_init_file), dtype=dtype,
      layer_impl=layer_impl)
  return generator, discriminator


MODELS = {'dcgan': _dcgan, 'resnet': _resnet}


def check_names(config: ml_collections.ConfigDict):
  """A one-line error for a model, conditioning, layer impl or dtype that does not exist or fit."""
  if config.model.name not in MODELS:
    raise ValueError(f'Unknown model.name {config.model.name!r}; choose one of {sorted(MODELS)}.')
  conditioning.check_conditioning(config.model)
  if config.model.conv_impl not in ('auto', 'xla'):
    raise ValueError(f"Unknown model.conv_impl {config.model.conv_impl!r}; choose 'auto' or 'xla'.")
  if config.model.dtype not in ('float32', 'bfloat16'):
    raise ValueError(f"Unknown model.dtype {config.model.dtype!r}; choose 'float32' or 'bfloat16'.")


def create_models(config: ml_collections.ConfigDict, num_classes: tuple, image_shape):
  """Builds (generator, discriminator) for `config.model.name`; `num_classes` has one class
  count per label attribute, e.g. (10,)."""
  check_names(config)
  if not (isinstance(num_classes, tuple) and num_classes and
          all(isinstance(n, (int, np.integer)) and n > 0 for n in num_classes)):
    raise ValueError(f'num_classes={num_classes!r}: give a tuple of class counts, one per label '
                     'attribute, e.g. (10,) for one label of 10 classes.')
  return MODELS[config.model.name](config, num_classes, image_shape)
