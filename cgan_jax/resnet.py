"""Residual conditional G and D in the style of SNGAN (Miyato & Koyama 2018) and BigGAN (Brock et al. 2019).

G: Dense to a base map, upsampling residual blocks with batch norm whose gain and bias come
from a class embedding shared by all blocks (and, with hierarchical z, a chunk of the noise).
D: residual blocks with average-pool downsampling, ReLU, a sum over positions, and a linear
logit plus the projection <Embed(y), phi(x)>; spectral norm on every layer when asked.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from cgan_jax import conditioning
from cgan_jax import layers
from cgan_jax.sharding import DATA_AXIS


def _upsample(x):
  """Nearest-neighbour 2x upsampling."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _downsample(x):
  """2x2 average pooling."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def d_downsamples(image_size: int) -> int:
  """D's downsampling blocks: halve until at most 8 pixels (32 -> 8, 28 -> 7, 64 -> 8)."""
  return max(int(np.ceil(np.log2(image_size / 8))), 0)


class GBlock(nn.Module):
  """BN(cond) -> ReLU -> up -> conv3 -> BN(cond) -> ReLU -> conv3, plus up -> conv1."""
  features: int
  norm: str  # 'cbn': gain and bias from the condition vector; 'batch': learned, unconditional.
  train: bool
  out_bias: bool = True  # False when only a batch norm follows (it would cancel the biases).
  dtype: Any = jnp.float32
  layer_impl: str = 'auto'

  def _norm(self, x, cond, name):
    axis_name = DATA_AXIS if self.train else None  # Statistics synced over devices in training.
    if self.norm == 'cbn':
      return conditioning.VectorBatchNorm(axis_name=axis_name, name=name)(x, cond)
    return conditioning.BatchNorm(axis_name=axis_name, name=name)(x)

  @nn.compact
  def __call__(self, x, cond):
    # Biases that a batch norm cancels get no gradient but Adam's normalised noise: left out.
    conv = lambda k, name, bias: layers.ConvPatches(self.features, k, dtype=self.dtype, name=name,
                                                    use_bias=bias, impl=self.layer_impl)
    h = _upsample(nn.relu(self._norm(x, cond, 'norm1')))
    h = conv(3, 'conv1', False)(h)
    h = conv(3, 'conv2', self.out_bias)(nn.relu(self._norm(h, cond, 'norm2')))
    return h + conv(1, 'shortcut', self.out_bias)(_upsample(x))


class ResNetGenerator(nn.Module):
  """Residual conditional generator: base map, `num_upsamples` GBlocks, BN-ReLU-conv3-tanh."""
  num_classes: tuple  # Class counts, one per label attribute.
  image_shape: Sequence[int]
  latent_dim: int = 128
  embed_dim: int = 128
  width: int = 256
  num_upsamples: int = 3
  conditioning: str = 'none'  # How z meets the label besides the norms: see conditioning.py.
  condition_at: int = 0  # 'channel': label map after this many blocks.
  norm: str = 'cbn'  # 'cbn' (shared class embedding) or 'batch'.
  hierarchical_z: bool = False  # A chunk of z to each block's norms (BigGAN).
  pretrained_embed: bool = False
  dtype: Any = jnp.float32
  layer_impl: str = 'auto'

  @nn.compact
  def __call__(self, z, labels, train: bool = True):
    height, width, channels = self.image_shape
    base_h, base_w = height // 2**self.num_upsamples, width // 2**self.num_upsamples
    chunks = [z]
    if self.hierarchical_z:
      chunks = jnp.split(z, np.cumsum(_chunk_sizes(z.shape[-1], self.num_upsamples + 1))[:-1], -1)
    shared = None
    if self.norm == 'cbn':
      shared = conditioning.LabelEmbed(self.num_classes, self.embed_dim, name='shared')(labels)
    x = conditioning.condition_latent(chunks[0], labels, style=self.conditioning,
                                      num_classes=self.num_classes, embed_dim=self.embed_dim,
                                      pretrained=self.pretrained_embed)
    x = nn.Dense(self.width * base_h * base_w, dtype=self.dtype, name='project')(x)
    x = x.reshape(z.shape[0], base_h, base_w, self.width)
    for i in range(self.num_upsamples):
      if self.conditioning == 'channel' and i == self.condition_at:
        x = conditioning.concat_label_map(x, labels, num_classes=self.num_classes,
                                          embed_dim=self.embed_dim, pretrained=self.pretrained_embed)
      cond = shared
      if shared is not None and self.hierarchical_z:
        cond = jnp.concatenate([shared, chunks[i + 1].astype(shared.dtype)], axis=-1)
      # The last block feeds only the output batch norm unless a label map comes between.
      last_to_norm = i == self.num_upsamples - 1 and not (
          self.conditioning == 'channel' and self.condition_at == self.num_upsamples)
      x = GBlock(self.width, self.norm, train, not last_to_norm, self.dtype, self.layer_impl,
                 name=f'block{i}')(x, cond)
    if self.conditioning == 'channel' and self.condition_at == self.num_upsamples:
      x = conditioning.concat_label_map(x, labels, num_classes=self.num_classes,
                                        embed_dim=self.embed_dim, pretrained=self.pretrained_embed)
    x = conditioning.BatchNorm(axis_name=DATA_AXIS if train else None, name='out_norm')(x)
    x = layers.ConvShiftAdd(channels, 3, dtype=self.dtype, name='to_image',
                            impl=self.layer_impl)(nn.relu(x))
    return jnp.tanh(x.astype(jnp.float32))


def _chunk_sizes(size: int, parts: int) -> list:
  """`size` split into `parts` near-equal chunk sizes, larger ones first."""
  return [size // parts + (i < size % parts) for i in range(parts)]


class DBlock(nn.Module):
  """(ReLU) -> conv3 -> ReLU -> conv3 (-> pool), plus the shortcut conv1 (pooled)."""
  features: int
  downsample: bool
  first: bool  # The first block sees the image: no ReLU before it, pool before its shortcut conv.
  spectral_norm: bool
  train: bool
  dtype: Any = jnp.float32
  layer_impl: str = 'auto'

  def wrap(self, layer, x):
    """`layer(x)`, spectrally normalised if asked; power iteration advances in training."""
    return conditioning.maybe_spectral_norm(layer, x, self.spectral_norm, self.train)

  @nn.compact
  def __call__(self, x):
    conv = lambda k, name: layers.ConvPatches(self.features, k, dtype=self.dtype, name=name,
                                              impl=self.layer_impl)
    h = x if self.first else nn.relu(x)
    h = self.wrap(conv(3, 'conv1'), h)
    h = self.wrap(conv(3, 'conv2'), nn.relu(h))
    if self.downsample:
      h = _downsample(h)
    shortcut = x
    if self.first and self.downsample:
      shortcut = self.wrap(conv(1, 'shortcut'), _downsample(x))
    elif self.downsample or x.shape[-1] != self.features:
      shortcut = self.wrap(conv(1, 'shortcut'), x)
      shortcut = _downsample(shortcut) if self.downsample else shortcut
    return h + shortcut


class ResNetDiscriminator(nn.Module):
  """Residual conditional discriminator: DBlocks, ReLU, sum over positions, logit (+ projection).

  With 'acgan' conditioning the class logits are sown as ('intermediates', 'class_logits').
  """
  num_classes: tuple  # Class counts, one per label attribute.
  embed_dim: int = 128
  width: int = 128
  num_downsamples: int = 2
  num_blocks: int = 4
  dropout: float = 0.0
  conditioning: str = 'projection'
  condition_at: int = 0
  spectral_norm: bool = True
  pretrained_embed: bool = False
  dtype: Any = jnp.float32
  layer_impl: str = 'auto'

  @nn.compact
  def __call__(self, images, labels, train: bool = True, dropout_keys=None):
    """`dropout_keys`: one key per example for its dropout mask (else split from the 'dropout' rng)."""
    x = images.astype(self.dtype)
    for i in range(self.num_blocks):
      if i == self.condition_at:
        x = conditioning.condition_map(x, labels, self.conditioning, num_classes=self.num_classes,
                                       embed_dim=self.embed_dim, pretrained=self.pretrained_embed)
      x = DBlock(self.width, i < self.num_downsamples, i == 0, self.spectral_norm, train,
                 self.dtype, self.layer_impl, name=f'block{i}')(x)
    x = jnp.sum(nn.relu(x), axis=(1, 2))
    return conditioning.discriminator_head(self, x, labels, train=train, dropout_keys=dropout_keys)
