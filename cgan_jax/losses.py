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
    # Hinge loss of SNGAN / BigGAN: D only pushes logits past the +-1 margins.
    'hinge': GANLoss(
        d_real=lambda l: jax.nn.relu(1 - l),
        d_fake=lambda l: jax.nn.relu(1 + l),
        g=lambda l: -l),
    # Wasserstein critic (Arjovsky et al. 2017); pair it with config.gp_weight (WGAN-GP).
    'wgan': GANLoss(
        d_real=lambda l: -l,
        d_fake=lambda l: l,
        g=lambda l: -l),
    # Least squares GAN (Mao et al. 2017) with targets 1 for real and 0 for fake.
    'least_squares': GANLoss(
        d_real=lambda l: 0.5 * (l - 1)**2,
        d_fake=lambda l: 0.5 * l**2,
        g=lambda l: 0.5 * (l - 1)**2),
}


def input_grad_sq_norm(logit_fn: Callable[..., jax.Array], images: jax.Array, *args):
  """Per-example |d logit / d image|^2 for a per-example `logit_fn(image, *args) -> scalar`."""
  grads = jax.vmap(jax.grad(logit_fn))(images, *args)
  return jnp.sum(grads.reshape(grads.shape[0], -1).astype(jnp.float32)**2, axis=-1)


def gradient_penalty(logit_fn, real: jax.Array, fake: jax.Array, keys: jax.Array, *args):
  """WGAN-GP: per-example (|grad D(x)| - 1)^2 at random points between real and fake.

  `keys` holds one key per example, so the points do not depend on the device count.
  """
  t = jax.vmap(jax.random.uniform)(keys).reshape((-1,) + (1,) * (real.ndim - 1))
  mixed = t * real + (1 - t) * fake
  return (jnp.sqrt(input_grad_sq_norm(logit_fn, mixed, *args) + 1e-12) - 1)**2


def r1_penalty(logit_fn, real: jax.Array, *args):
  """R1: per-example |grad D(real)|^2 (multiply by gamma / 2)."""
  return input_grad_sq_norm(logit_fn, real, *args)


def class_cross_entropy(class_logits: jax.Array, labels: jax.Array):
  """Per-example softmax cross-entropy of the AC-GAN auxiliary classifier."""
  return -jnp.take_along_axis(jax.nn.log_softmax(class_logits), labels[:, None], axis=-1)[:, 0]


def get_loss(name: str) -> GANLoss:
  """Returns the GANLoss registered under `name`."""
  if name not in LOSSES:
    raise ValueError(f'Unknown loss {name!r}; choose one of {sorted(LOSSES)}.')
  return LOSSES[name]
