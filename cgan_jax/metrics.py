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
BOOTSTRAP_CONFIDENCE = 0.95  # Share of the bootstrap values inside a reported interval.


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


def gaussian_stats(features):
  """Mean and unbiased covariance (ddof=1) of (N, D) features, in float64."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or len(x) < 2:
    raise ValueError(f'Need (N, D) features with N >= 2, got shape {x.shape}.')
  return x.mean(0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
  """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) in float64.

  Tr((S_a S_b)^1/2) = Tr((S_a^1/2 S_b S_a^1/2)^1/2), a symmetric PSD matrix: no complex parts.
  """
  mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
  cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
  if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape:
    raise ValueError(f'Need statistics of the same dimension, got {mu_a.shape[0]} and '
                     f'{mu_b.shape[0]} features.')
  root_a = _sqrtm_psd(cov_a)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
  return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def frechet_distance(features_a, features_b) -> float:
  """The Frechet distance of two feature sets' Gaussians (unbiased covariances), in float64.

  Compare sets of the same size: the estimate is biased by an amount that depends on N.
  """
  a, b = np.asarray(features_a), np.asarray(features_b)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
    raise ValueError(f'Need two (N, D) feature sets with the same D and N >= 2, got {a.shape} '
                     f'and {b.shape}.')
  if max(len(a), len(b)) < a.shape[1]:
    return _frechet_distance_low_rank(a, b)
  return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def _frechet_distance_low_rank(a, b) -> float:
  """The same distance from the centred sets A and B when they hold fewer rows than features.

  S_a S_b = A'A B'B / c has the nonzero eigenvalues of (A B')(A B')' / c, so Tr((S_a S_b)^1/2)
  is the sum of A B''s singular values over sqrt(c): an (Na, Nb) problem instead of (D, D)
  (intra-FID's per-class sets are much smaller than Inception's 2048 features).
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  centred_a, centred_b = a - a.mean(0), b - b.mean(0)
  scale = np.sqrt((len(a) - 1) * (len(b) - 1))
  cross = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / scale
  traces = (centred_a ** 2).sum() / (len(a) - 1) + (centred_b ** 2).sum() / (len(b) - 1)
  return float(((a.mean(0) - b.mean(0)) ** 2).sum() + traces - 2 * cross)


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


def prdc_points(real_features, fake_features, *, pr_k: int = PRECISION_RECALL_K,
                dc_k: int = DENSITY_COVERAGE_K) -> dict:
  """The per-point values whose means are precision and density (one per generated point) and
  recall and coverage (one per real point); k-NN radii of the whole sets."""
  # Centred on the real mean: smaller norms, less float32 cancellation in |x|^2 + |y|^2 - 2xy.
  center = np.asarray(real_features, np.float64).mean(0)
  real = jnp.asarray(np.asarray(real_features, np.float64) - center, jnp.float32)
  fake = jnp.asarray(np.asarray(fake_features, np.float64) - center, jnp.float32)
  if min(len(real), len(fake)) <= max(pr_k, dc_k):
    raise ValueError(f'Need more than {max(pr_k, dc_k)} points in each set, got {len(real)} real '
                     f'and {len(fake)} generated.')
  in_real, balls, in_fake, covered = _prdc_counts(
      real, fake, knn_radii(real, pr_k), knn_radii(fake, pr_k), knn_radii(real, dc_k))
  return {'precision': np.asarray(in_real, np.float64), 'recall': np.asarray(in_fake, np.float64),
          'density': np.asarray(balls, np.float64) / dc_k,
          'coverage': np.asarray(covered, np.float64)}


def prdc(real_features, fake_features, *, pr_k: int = PRECISION_RECALL_K,
         dc_k: int = DENSITY_COVERAGE_K) -> dict:
  """Precision, recall (k-NN manifolds, k=`pr_k`) and density, coverage (k=`dc_k`).

  Same definitions as the authors' `prdc` package (strict `<` against k-NN radii).
  """
  points = prdc_points(real_features, fake_features, pr_k=pr_k, dc_k=dc_k)
  return {name: float(values.mean()) for name, values in points.items()}


def resample_indices(n: int, num_resamples: int, seed: int = 0) -> np.ndarray:
  """(num_resamples, n) indices drawn with replacement: the bootstrap's resamples of n points."""
  return np.random.default_rng(seed).integers(0, n, (num_resamples, n))


def percentile_interval(values, confidence: float = BOOTSTRAP_CONFIDENCE) -> list:
  """[lo, hi]: the central `confidence` share of a statistic's bootstrap values."""
  lo, hi = np.percentile(np.asarray(values, np.float64), [50 * (1 - confidence),
                                                          50 * (1 + confidence)])
  return [float(lo), float(hi)]


def mean_interval(values, indices: np.ndarray, confidence: float = BOOTSTRAP_CONFIDENCE) -> list:
  """Bootstrap percentile interval of the mean of per-point `values` over the resamples `indices`."""
  return percentile_interval(np.asarray(values, np.float64)[indices].mean(1), confidence)


def frechet_distance_interval(features, reference_features, indices: np.ndarray,
                              confidence: float = BOOTSTRAP_CONFIDENCE) -> list:
  """Bootstrap interval of the Frechet distance over resamples of `features` (rows `indices`);
  the reference set stays whole.

  A resample repeats some images, which narrows its covariance and raises its FD: the plain
  percentiles can lie wholly above the estimate. They are moved down by that shift (the mean
  resampled FD less the estimate), so the interval gives the spread of FD for this many images
  around the estimate; FD's own bias at a given N stays, so compare runs at the same N.
  """
  reference = gaussian_stats(reference_features)
  features = np.asarray(features, np.float64)
  estimate = frechet_distance_from_stats(*gaussian_stats(features), *reference)
  resampled = [frechet_distance_from_stats(*gaussian_stats(features[i]), *reference)
               for i in indices]
  shift = np.mean(resampled) - estimate
  return [max(v - shift, 0.0) for v in percentile_interval(resampled, confidence)]


KID_SUBSETS = 100  # Subsets averaged by the KID estimate (StyleGAN2-ADA's metrics/kernel_inception_distance.py).
KID_SUBSET_SIZE = 1000  # Points per subset (fewer when a set is smaller).


def kernel_inception_distance(features, reference_features, num_subsets: int = KID_SUBSETS,
                              max_subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> float:
  """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / D + 1)^3, averaged over
  `num_subsets` random subsets of both sets, as StyleGAN2-ADA computes it (float64)."""
  gen, real = np.asarray(features, np.float64), np.asarray(reference_features, np.float64)
  if gen.ndim != 2 or gen.shape[1:] != real.shape[1:] or min(len(gen), len(real)) < 2:
    raise ValueError(f'Need two (N, D) feature sets with the same D and N >= 2, got {gen.shape} '
                     f'and {real.shape}.')
  dim, m = gen.shape[1], min(len(gen), len(real), max_subset_size)
  rng = np.random.default_rng(seed)
  total = 0.0
  for _ in range(num_subsets):
    x = gen[rng.choice(len(gen), m, replace=False)]
    y = real[rng.choice(len(real), m, replace=False)]
    a = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
    b = (x @ y.T / dim + 1) ** 3
    total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
  return float(total / num_subsets / m)


def inception_score(logits, num_splits: int = 10) -> float:
  """IS (Salimans et al. 2016): the mean over `num_splits` equal splits of exp E[KL(p(y|x) || p(y))]."""
  logits = np.asarray(logits, np.float64)
  if len(logits) < num_splits:
    raise ValueError(f'Need at least {num_splits} images for {num_splits} splits, got {len(logits)}.')
  return float(np.mean([classifier_score(part) for part in np.array_split(logits, num_splits)]))
