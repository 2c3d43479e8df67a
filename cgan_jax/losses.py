"""GAN objectives, chosen by name, as per-example terms on D's logits."""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class GANLoss(NamedTuple):
  """D minimises mean(d_real(real)) + mean(d_fake(fake)); G minimises mean(g(fake))."""
  d_real: Callable[[jax.Array], jax.Array]
  d_fake: Callable[[jax.Array], jax.Array]
  g: Callable[[jax.Array], jax.Array]


LOSSES = {
    # Binary cross-entropy on sigmoid(D); G maximises log D(G(z)) (the tutorial's loss).
    'non_saturating': GANLoss(
        d_real=lambda l: jax.nn.softplus(-l),
        d_fake=jax.nn.softplus,
        g=lambda l: jax.nn.softplus(-l)),
}


def get_loss(name: str) -> GANLoss:
  """Returns the GANLoss registered under `name`."""
  if name not in LOSSES:
    raise ValueError(f'Unknown loss {name!r}; choose one of {sorted(LOSSES)}.')
  return LOSSES[name]
