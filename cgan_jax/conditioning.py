"""How a label enters G and D: small modules chosen by name."""

import functools
import os
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# G: 'channel' concatenates a learned label map to a feature map; 'multiply' is
# z * Embed(y) (Keras CGAN); 'concat' is [z, Embed(y)]; 'none' ignores the label.
G_CONDITIONINGS = ('none', 'channel', 'multiply', 'concat')
# D: 'channel' and 'concat' add label maps, 'multiply' scales the image by a per-label
# map, 'projection' adds <Embed(y), phi(x)> to the logit, 'acgan' adds a class head.
D_CONDITIONINGS = ('none', 'channel', 'multiply', 'concat', 'projection', 'acgan')
# Normalisation after each of G's upsamplings; 'cbn' has a per-label gain and bias.
G_NORMS = ('none', 'batch', 'cbn')
# The styles whose label tables model.embed_init_file starts.
EMBED_FILE_STYLES = ('channel', 'concat')
# The styles that place a label map after model.{g,d}_condition_at blocks.
G_MAP_STYLES = ('channel',)
D_MAP_STYLES = ('channel', 'concat', 'multiply')


def check_conditioning(m):
  """A one-line error for an unknown style, or a `config.model` setting its styles do not use."""
  if m.g_conditioning not in G_CONDITIONINGS:
    raise ValueError(f'Unknown model.g_conditioning {m.g_conditioning!r}; choose one of {G_CONDITIONINGS}.')
  if m.d_conditioning not in D_CONDITIONINGS:
    raise ValueError(f'Unknown model.d_conditioning {m.d_conditioning!r}; choose one of {D_CONDITIONINGS}.')
  if m.g_norm not in G_NORMS:
    raise ValueError(f'Unknown model.g_norm {m.g_norm!r}; choose one of {G_NORMS}.')
  if m.embed_init_file and not set(EMBED_FILE_STYLES) & {m.g_conditioning, m.d_conditioning}:
    styles = ' and '.join(map(repr, EMBED_FILE_STYLES))
    raise ValueError(f'model.embed_init_file starts the tables of the {styles} styles; '
                     f'g_conditioning={m.g_conditioning!r} and d_conditioning={m.d_conditioning!r} '
                     'have none: use one of those styles or unset the file.')
  if m.freeze_embed and not m.embed_init_file:
    raise ValueError('model.freeze_embed keeps the tables read from model.embed_init_file fixed; '
                     'set that file too, or unset freeze_embed.')
  for net, styles in (('g', G_MAP_STYLES), ('d', D_MAP_STYLES)):
    if m[f'{net}_condition_at'] and m[f'{net}_conditioning'] not in styles:
      raise ValueError(f"model.{net}_condition_at places the label of {'/'.join(styles)}; "
                       f"{net}_conditioning={m[f'{net}_conditioning']!r} does not use it: leave it 0.")


def generator_uses_labels(m) -> bool:
  """Whether G's images depend on the label (through its input, a label map or CBN)."""
  return m.g_conditioning != 'none' or m.g_norm == 'cbn'


def read_table(path: str, shape) -> np.ndarray:
  """The embedding table in the .npy file `path`, checked to have `shape`."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'model.embed_init_file {path} does not exist; give a .npy file '
                            f'of shape {tuple(shape)} (classes x embedding size) or unset it.')
  try:
    table = np.load(path, allow_pickle=False)
  except (ValueError, OSError):  # numpy's message for a text file speaks of pickles.
    raise ValueError(f'model.embed_init_file {path} is not a .npy file; write the table with '
                     'numpy.save.') from None
  if not isinstance(table, np.ndarray) or not np.issubdtype(table.dtype, np.number):
    raise ValueError(f'model.embed_init_file {path} does not hold one numeric array; write the '
                     'table alone with numpy.save.')
  if table.shape != tuple(shape):
    raise ValueError(f'model.embed_init_file {path} has shape {table.shape}, this embedding '
                     f'needs {tuple(shape)} (classes x embedding size); set model.embed_dim '
                     f'or use a matching file.')
  return table


def load_pretrained_tables(params, path: str):
  """`params` (any tree of a model's parameters, on any sharding) with every table named 'pretrained' read from `path`.

  Done once on a fresh start, outside jit: initialising stays pure, and a resumed or sampled run
  takes its table from the checkpoint (the file may be gone by then).
  """
  read = functools.lru_cache(maxsize=None)(lambda shape: read_table(path, shape))  # Once a shape.

  def load(key_path, leaf):
    if not any(getattr(k, 'key', None) == 'pretrained' for k in key_path):
      return leaf
    table = read(tuple(leaf.shape)).astype(leaf.dtype)
    return jax.device_put(table, getattr(leaf, 'sharding', None))  # None: a host array's.
  return jax.tree_util.tree_map_with_path(load, params)


class LabelEmbed(nn.Module):
  """Embedding of the label (of each attribute, summed, when labels are (B, A)).

  A `pretrained` table (model.embed_init_file's, loaded by `load_pretrained_tables`) is named
  'pretrained' so that it can be found and frozen by name.
  """
  num_classes: tuple  # Class counts, one per attribute: labels (B,) for one, (B, A) for A.
  features: int
  pretrained: bool = False
  default_init: Any = nn.linear.default_embed_init

  @nn.compact
  def __call__(self, labels):
    if len(self.num_classes) == 1:
      name = 'pretrained' if self.pretrained else 'embed'
      return nn.Embed(self.num_classes[0], self.features, embedding_init=self.default_init,
                      name=name)(labels)
    if self.pretrained:
      raise ValueError('model.embed_init_file holds one table; it cannot initialise the '
                       f'{len(self.num_classes)} attributes of config.labels; unset one of them.')
    # One table per attribute; the sum keeps the size fixed whatever the number of attributes.
    return sum(nn.Embed(n, self.features, embedding_init=self.default_init,
                        name=f'embed_{i}')(labels[..., i]) for i, n in enumerate(self.num_classes))


class LabelMap(nn.Module):
  """label -> Embed -> Dense(H*W) -> one H x W feature map (the tutorial's conditioning)."""
  num_classes: tuple
  embed_dim: int
  height: int
  width: int
  pretrained: bool = False

  @nn.compact
  def __call__(self, labels):
    e = LabelEmbed(self.num_classes, self.embed_dim, self.pretrained, name='label')(labels)
    m = nn.Dense(self.height * self.width, name='dense')(e)
    return m.reshape(labels.shape[0], self.height, self.width, 1)


def concat_label_map(x, labels, *, num_classes, embed_dim, pretrained=False, name='label_map'):
  """Concatenates a learned per-label feature map to NHWC features `x`."""
  m = LabelMap(num_classes, embed_dim, x.shape[1], x.shape[2], pretrained, name=name)(labels)
  return jnp.concatenate([x, m.astype(x.dtype)], axis=-1)


def concat_embedding_map(x, labels, *, num_classes, embed_dim, pretrained=False,
                         name='label_concat'):
  """Concatenates Embed(label), broadcast over H x W, to NHWC features `x`."""
  e = LabelEmbed(num_classes, embed_dim, pretrained, name=name)(labels).astype(x.dtype)
  return jnp.concatenate([x, jnp.broadcast_to(e[:, None, None], (*x.shape[:3], embed_dim))], -1)


def multiply_map(x, labels, *, num_classes, name='label_multiply'):
  """x * a learned per-label map of x's own shape (the Keras CGAN discriminator)."""
  e = LabelEmbed(num_classes, int(np.prod(x.shape[1:])), name=name)(labels)
  return x * e.reshape(x.shape).astype(x.dtype)


def condition_latent(z, labels, *, style, num_classes, embed_dim, pretrained=False):
  """G's input: z itself, z * Embed(y) ('multiply') or [z, Embed(y)] ('concat')."""
  if style == 'multiply':
    return z * LabelEmbed(num_classes, z.shape[-1], name='label_multiply')(labels)
  if style == 'concat':
    e = LabelEmbed(num_classes, embed_dim, pretrained, name='label_concat')(labels)
    return jnp.concatenate([z, e.astype(z.dtype)], axis=-1)
  return z


def batch_normalize(x, axis_name: Optional[str] = None, epsilon: float = 1e-5):
  """x normalised by the batch's per-channel mean and variance (averaged over `axis_name`)."""
  x32 = x.astype(jnp.float32)  # E[x^2] - E[x]^2 in bf16 would lose most of the variance.
  stats = jnp.stack([x32.mean(axis=(0, 1, 2)), (x32 * x32).mean(axis=(0, 1, 2))])
  if axis_name is not None:
    stats = jax.lax.pmean(stats, axis_name)
  mean, var = stats[0], jnp.maximum(stats[1] - stats[0]**2, 0.0)
  return (x - mean.astype(x.dtype)) * jax.lax.rsqrt(var + epsilon).astype(x.dtype)


class BatchNorm(nn.Module):
  """Batch norm on the current batch's statistics, optionally with per-label gain and bias.

  No running averages: sampling normalises each generated batch by its own statistics
  (as a GAN generator in train mode does), so G needs nothing beyond its params. In
  training `axis_name` averages the statistics over devices, so the result does not
  depend on how the batch is split.
  """
  num_classes: Optional[tuple] = None  # None: one gain and bias; else per label (conditional BN).
  axis_name: Optional[str] = None
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, labels=None):
    y = batch_normalize(x, self.axis_name, self.epsilon)
    c = x.shape[-1]
    if self.num_classes is None:
      gain = self.param('scale', nn.initializers.ones, (c,))
      bias = self.param('bias', nn.initializers.zeros, (c,))
    else:
      zeros = nn.initializers.zeros
      gain = 1.0 + LabelEmbed(self.num_classes, c, default_init=zeros, name='gain')(labels)
      bias = LabelEmbed(self.num_classes, c, default_init=zeros, name='bias')(labels)
      gain, bias = gain[:, None, None], bias[:, None, None]
    return y * gain.astype(x.dtype) + bias.astype(x.dtype)


class VectorBatchNorm(nn.Module):
  """Batch norm whose gain and bias are linear in a condition vector (BigGAN's shared embedding)."""
  axis_name: Optional[str] = None
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, condition):
    y = batch_normalize(x, self.axis_name, self.epsilon)
    c = x.shape[-1]
    zeros = nn.initializers.zeros  # Starts as plain batch norm: gain 1, bias 0 for every class.
    gain = 1.0 + nn.Dense(c, kernel_init=zeros, name='gain')(condition)
    bias = nn.Dense(c, kernel_init=zeros, name='bias')(condition)
    return y * gain[:, None, None].astype(x.dtype) + bias[:, None, None].astype(x.dtype)


def condition_map(x, labels, style: str, *, num_classes, embed_dim, pretrained=False):
  """D's label placed on feature map `x` by a map style ('channel', 'concat', 'multiply'), else x."""
  kw = dict(num_classes=num_classes, embed_dim=embed_dim, pretrained=pretrained)
  if style == 'channel':
    return concat_label_map(x, labels, **kw)
  if style == 'concat':
    return concat_embedding_map(x, labels, **kw)
  if style == 'multiply':
    return multiply_map(x, labels, num_classes=num_classes)
  return x


def maybe_spectral_norm(layer, x, spectral_norm: bool, train: bool):
  """`layer(x)`, spectrally normalised if asked; power iteration advances in training."""
  if spectral_norm:
    return nn.SpectralNorm(layer, name=layer.name + '_sn')(x, update_stats=train)
  return layer(x)


def per_example_dropout(x, rate: float, keys):
  """nn.Dropout with each example's mask drawn from its own key (keys: one per example)."""
  keep = jax.vmap(lambda key: jax.random.bernoulli(key, 1.0 - rate, x.shape[1:]))(keys)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def discriminator_head(module: nn.Module, x, labels, *, train: bool, dropout_keys=None):
  """D's logit from pooled features `x`, built inside `module`: dropout, a linear logit, and the
  projection term or the AC-GAN class head (sown as ('intermediates', 'class_logits')).

  `module` has the fields dropout, conditioning, num_classes, spectral_norm and dtype.
  """
  if train and module.dropout > 0:
    if dropout_keys is None:
      dropout_keys = jax.random.split(module.make_rng('dropout'), x.shape[0])
    x = per_example_dropout(x, module.dropout, dropout_keys)
  wrap = functools.partial(maybe_spectral_norm, spectral_norm=module.spectral_norm, train=train)
  logit = wrap(nn.Dense(1, dtype=module.dtype, name='logit'), x)[:, 0]
  if module.conditioning == 'projection':
    e = LabelEmbed(module.num_classes, x.shape[-1], name='projection')(labels)
    logit = logit + jnp.sum(e.astype(x.dtype) * x, axis=-1)
  if module.conditioning == 'acgan':
    if len(module.num_classes) > 1:
      raise ValueError("d_conditioning='acgan' classifies one label; use one attribute.")
    head = nn.Dense(module.num_classes[0], dtype=module.dtype, name='class_head')
    module.sow('intermediates', 'class_logits', wrap(head, x).astype(jnp.float32))
  return logit.astype(jnp.float32)
