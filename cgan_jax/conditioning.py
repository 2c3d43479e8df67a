"""How a label enters G and D: small modules chosen by name."""

import flax.linen as nn
import jax.numpy as jnp

G_CONDITIONINGS = ('none', 'channel')
D_CONDITIONINGS = ('none', 'channel')


def check_conditioning(g_conditioning: str, d_conditioning: str):
  """Raises a one-line error for an unknown conditioning style."""
  if g_conditioning not in G_CONDITIONINGS:
    raise ValueError(f'Unknown model.g_conditioning {g_conditioning!r}; choose one of {G_CONDITIONINGS}.')
  if d_conditioning not in D_CONDITIONINGS:
    raise ValueError(f'Unknown model.d_conditioning {d_conditioning!r}; choose one of {D_CONDITIONINGS}.')


class LabelMap(nn.Module):
  """label -> Embed -> Dense(H*W) -> one H x W feature map (the tutorial's conditioning)."""
  num_classes: int
  embed_dim: int
  height: int
  width: int

  @nn.compact
  def __call__(self, labels):
    e = nn.Embed(self.num_classes, self.embed_dim, name='embed')(labels)
    m = nn.Dense(self.height * self.width, name='dense')(e)
    return m.reshape(labels.shape[0], self.height, self.width, 1)


def concat_label_map(x, labels, *, num_classes, embed_dim, name='label_map'):
  """Concatenates a learned per-label feature map to NHWC features `x`."""
  m = LabelMap(num_classes, embed_dim, x.shape[1], x.shape[2], name=name)(labels)
  return jnp.concatenate([x, m.astype(x.dtype)], axis=-1)
