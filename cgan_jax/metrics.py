"""Sample-quality metrics on a judge classifier's logits and features: pure functions.

Accuracy, classifier score and the nearest-neighbour metrics run in JAX in blocks (memory
grows with block x N, not N x N); the Frechet distance runs in float64 numpy.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

PRECISION_RECALL_K = 3  # Kynkaanniemi et al. 2019.
DENSITY_COVERAGE_K = 5  # Naeem et al. 2020.
_BLOCK = 256  # Rows of a distance block.


def conditional_accuracy(logits, labels, num_classes: int):
  """How often argmax(logits) is the label asked for: (overall, per class; NaN for absent classes)."""
  labels = jnp.asarray(labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  one_hot = jax.nn.one_hot(labels, num_classes)
  counts = one_hot.sum(0)
  per_class = jnp.where(counts > 0, (one_hot * correct[:, None]).sum(0) / jnp.maximum(counts, 1),
                        jnp.nan)
  return float(correct.mean()), np.asarray(per_class, np.float64)


def classifier_score(logits) -> float:
  """The Inception Score formula on the judge: exp E_x[KL(p(y|x) || p(y))], p(y) the mean of p(y|x)."""
  log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
  log_marginal = jnp.log(jnp.exp(log_p).mean(0))
  kl = (jnp.exp(log_p) * (log_p - log_marginal)).sum(-1)
  return float(jnp.exp(kl.mean()))


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
  """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
  values, vectors = np.linalg.eigh(matrix)
  return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(features_a, features_b) -> float:
  """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) in float64, unbiased covariances.

  Tr((S_a S_b)^1/2) = Tr((S_a^1/2 S_b S_a^1/2)^1/2), a symmetric PSD matrix: no complex parts.
  Compare sets of the same size: the estimate is biased by an amount that depends on N.
  """
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  if a.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
    raise ValueError(f'Need two (N, D) feature sets with the same D and N >= 2, got {a.shape} '
                     f'and {b.shape}.')
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
  root_a = _sqrtm_psd(cov_a)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
  return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def _sq_distances(x, y):
  """Squared Euclidean distances (n, m), clipped at 0 against rounding."""
  d = (x * x).sum(-1)[:, None] + (y * y).sum(-1)[None, :] - 2 * x @ y.T
  return jnp.maximum(d, 0.0)


def _map_blocks(fn, rows, *others):
  """Concatenated fn(block, *others) over blocks of `rows` (padded to a whole block, then cut)."""
  n = rows.shape[0]
  pad = -n % _BLOCK
  blocks = jnp.pad(rows, ((0, pad), (0, 0))).reshape(-1, _BLOCK, rows.shape[1])
  out = jax.lax.map(lambda block: fn(block, *others), blocks)
  return jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:])[:n], out)


@functools.partial(jax.jit, static_argnums=1)
def knn_radii(features, k: int):
  """Squared distance from each point to its k-th nearest other point of the same set."""
  def block(x, y):
    return -jax.lax.top_k(-_sq_distances(x, y), k + 1)[0][:, k]  # Index 0 is the point itself.
  return _map_blocks(block, features, features)


@jax.jit
def _prdc_counts(real, fake, real_r_pr, fake_r_pr, real_r_dc):
  """Per-point indicators behind precision, recall, density and coverage."""
  def per_fake(x, real, real_r_pr, real_r_dc):
    d = _sq_distances(x, real)
    in_real_manifold = (d < real_r_pr[None]).any(1)
    balls_containing = (d < real_r_dc[None]).sum(1)
    return in_real_manifold, balls_containing

  def per_real(x, fake, fake_r_pr):
    d = _sq_distances(x, fake)
    return (d < fake_r_pr[None]).any(1), d.min(1)

  in_real, balls = _map_blocks(per_fake, fake, real, real_r_pr, real_r_dc)
  in_fake, nearest_fake = _map_blocks(per_real, real, fake, fake_r_pr)
  return in_real, balls, in_fake, nearest_fake < real_r_dc


def prdc(real_features, fake_features, *, pr_k: int = PRECISION_RECALL_K,
         dc_k: int = DENSITY_COVERAGE_K) -> dict:
  """Precision, recall (k-NN manifolds, k=`pr_k`) and density, coverage (k=`dc_k`).

  Same definitions as the authors' `prdc` package (strict `<` against k-NN radii).
  """
  # Centred on the real mean: smaller norms, less float32 cancellation in |x|^2 + |y|^2 - 2xy.
  center = np.asarray(real_features, np.float64).mean(0)
  real = jnp.asarray(np.asarray(real_features, np.float64) - center, jnp.float32)
  fake = jnp.asarray(np.asarray(fake_features, np.float64) - center, jnp.float32)
  if min(len(real), len(fake)) <= max(pr_k, dc_k):
    raise ValueError(f'Need more than {max(pr_k, dc_k)} points in each set, got {len(real)} real '
                     f'and {len(fake)} generated.')
  in_real, balls, in_fake, covered = _prdc_counts(
      real, fake, knn_radii(real, pr_k), knn_radii(fake, pr_k), knn_radii(real, dc_k))
  return {'precision': float(in_real.mean()), 'recall': float(in_fake.mean()),
          'density': float(balls.sum() / (dc_k * len(fake))), 'coverage': float(covered.mean())}
