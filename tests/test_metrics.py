"""Every metric against an independent numpy/scipy computation, and known values."""

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.special

from cgan_jax import metrics


def _reference_prdc(real, fake, k):
  """The authors' `prdc` package (Naeem et al. 2020), transcribed in numpy/scipy."""
  real_real = scipy.spatial.distance.cdist(real, real)
  fake_fake = scipy.spatial.distance.cdist(fake, fake)
  real_fake = scipy.spatial.distance.cdist(real, fake)
  real_r = np.partition(real_real, k, axis=-1)[:, k]
  fake_r = np.partition(fake_fake, k, axis=-1)[:, k]
  return {
      'precision': (real_fake < real_r[:, None]).any(axis=0).mean(),
      'recall': (real_fake < fake_r[None, :]).any(axis=1).mean(),
      'density': (1 / k) * (real_fake < real_r[:, None]).sum(axis=0).mean(),
      'coverage': (real_fake.min(axis=1) < real_r).mean(),
  }


def test_conditional_accuracy_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(300, 5))
  labels = rng.integers(0, 4, size=300)  # Class 4 is never asked for.
  overall, per_class = metrics.conditional_accuracy(logits, labels, 5)
  correct = logits.argmax(-1) == labels
  assert overall == pytest.approx(correct.mean())
  for c in range(4):
    assert per_class[c] == pytest.approx(correct[labels == c].mean())
  assert np.isnan(per_class[4])


def test_classifier_score_matches_scipy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(400, 10)) * 3
  p = scipy.special.softmax(logits, axis=-1)
  expected = np.exp(scipy.special.rel_entr(p, p.mean(0)).sum(-1).mean())
  assert metrics.classifier_score(logits) == pytest.approx(expected, rel=1e-4)
  # Known values: confident and uniform over k classes -> k; one class only -> 1.
  one_hot = np.eye(10)[np.arange(1000) % 10] * 50
  assert metrics.classifier_score(one_hot) == pytest.approx(10, rel=1e-4)
  assert metrics.classifier_score(np.tile(one_hot[:1], (100, 1))) == pytest.approx(1, rel=1e-4)


def test_frechet_distance_matches_scipy_sqrtm():
  rng = np.random.default_rng(2)
  a = rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8))
  b = rng.normal(size=(200, 8)) * 2 + 0.5
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  expected = ((mu_a - mu_b) ** 2).sum() + np.trace(
      cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real)
  assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize('n_a,n_b', [(5, 7), (30, 30), (2, 40)])
def test_frechet_distance_of_sets_smaller_than_the_dimension(n_a, n_b):
  # Fewer images than features take the (N, N) route; it must equal the covariance route.
  rng = np.random.default_rng(n_a)
  a, b = rng.normal(size=(n_a, 64)), rng.normal(1.0, 2.0, size=(n_b, 64)) @ rng.normal(size=(64, 64))
  expected = metrics.frechet_distance_from_stats(*metrics.gaussian_stats(a), *metrics.gaussian_stats(b))
  assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_known_values():
  rng = np.random.default_rng(3)
  a = rng.normal(size=(500, 16))
  assert abs(metrics.frechet_distance(a, a)) < 1e-8
  # Two samples of N(0, I) in 16-d: the estimate is small, not 0 (finite-N bias).
  assert metrics.frechet_distance(a, rng.normal(size=(500, 16))) < 1.5
  # Shifting every feature by 1 adds exactly D to the distance of identical sets.
  assert metrics.frechet_distance(a, a + 1) == pytest.approx(16, rel=1e-8)
  with pytest.raises(ValueError, match='same D'):
    metrics.frechet_distance(a, a[:, :3])


@pytest.mark.parametrize('k', [3, 5])
def test_prdc_matches_reference_implementation(k):
  rng = np.random.default_rng(4)
  real = rng.normal(size=(300, 6))
  fake = rng.normal(size=(270, 6)) * 1.3 + 0.3  # Not a multiple of the block size.
  got = metrics.prdc(real, fake, pr_k=k, dc_k=k)
  want = _reference_prdc(real, fake, k)
  for name in want:
    assert got[name] == pytest.approx(want[name], abs=1e-6), name


def test_knn_radii_match_numpy():
  x = np.random.default_rng(5).normal(size=(600, 4))
  d = scipy.spatial.distance.cdist(x, x, 'sqeuclidean')
  np.testing.assert_allclose(metrics.knn_radii(x, 3), np.sort(d, axis=1)[:, 3], rtol=1e-4)


def test_prdc_identical_distributions():
  # Naeem et al. 2020: for identical distributions density ~ 1 and coverage ~ 1 - (1/2)^k;
  # precision and recall are high (for 64-d). Two independent N(0, I) sets in 64-d, N = 2000.
  rng = np.random.default_rng(6)
  real, fake = rng.normal(size=(2, 2000, 64))
  got = metrics.prdc(real, fake)
  assert got['density'] == pytest.approx(1.0, abs=0.06)
  assert got['coverage'] == pytest.approx(1 - 0.5 ** 5, abs=0.03)
  assert got['precision'] > 0.5 and got['recall'] > 0.5  # 0.61, 0.63 with prdc itself.
  # A shifted set is seen as worse on every count.
  worse = metrics.prdc(real, fake + 1.0)
  assert all(worse[name] < got[name] - 0.1 for name in got)


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
  rng = np.random.default_rng(7)
  values = rng.random(2000) < 0.8
  lo, hi = metrics.mean_interval(values, metrics.resample_indices(len(values), 1000, seed=1))
  half = 1.96 * np.sqrt(0.8 * 0.2 / len(values))  # About 0.0175.
  assert lo < values.mean() < hi
  assert hi - lo == pytest.approx(2 * half, rel=0.15)
  # Same seed, same resamples: the interval is reproducible.
  again = metrics.mean_interval(values, metrics.resample_indices(len(values), 1000, seed=1))
  assert [lo, hi] == again


def test_frechet_distance_interval_brackets_the_estimate_and_shrinks_with_n():
  rng = np.random.default_rng(8)
  reference = rng.normal(size=(2000, 4))
  widths = []
  for n in (200, 2000):
    x = rng.normal(size=(n, 4)) + 0.5
    lo, hi = metrics.frechet_distance_interval(x, reference, metrics.resample_indices(n, 200))
    assert lo < metrics.frechet_distance(x, reference) < hi
    widths.append(hi - lo)
  assert widths[1] < widths[0] / 2  # About 1/sqrt(10) as wide with 10x the points.


def test_frechet_distance_interval_brackets_the_estimate_in_many_dimensions():
  # 128 features of 500 images: resampling with repetition raises FD by more than its spread,
  # so the plain percentiles would lie above the estimate.
  rng = np.random.default_rng(10)
  x, reference = rng.normal(size=(500, 128)) + 0.1, rng.normal(size=(1000, 128))
  indices = metrics.resample_indices(len(x), 100)
  estimate = metrics.frechet_distance(x, reference)
  resampled = [metrics.frechet_distance(x[i], reference) for i in indices]
  assert metrics.percentile_interval(resampled)[0] > estimate
  lo, hi = metrics.frechet_distance_interval(x, reference, indices)
  assert lo < estimate < hi


def test_prdc_points_average_to_prdc():
  rng = np.random.default_rng(9)
  real, fake = rng.normal(size=(300, 5)), rng.normal(size=(250, 5)) + 0.2
  points = metrics.prdc_points(real, fake)
  assert [len(points[k]) for k in ('precision', 'recall', 'density', 'coverage')] == [250, 300, 250, 300]
  assert {k: float(v.mean()) for k, v in points.items()} == metrics.prdc(real, fake)


def test_frechet_distance_from_stats_checks_dimensions():
  mu, cov = metrics.gaussian_stats(np.random.default_rng(10).normal(size=(50, 3)))
  assert metrics.frechet_distance_from_stats(mu, cov, mu, cov) == pytest.approx(0, abs=1e-8)
  with pytest.raises(ValueError, match='same dimension, got 3 and 2 features'):
    metrics.frechet_distance_from_stats(mu, cov, mu[:2], cov[:2, :2])


def _reference_kid(gen, real, num_subsets, m, seed):
  """StyleGAN2-ADA's metrics/kernel_inception_distance.py, with the same subset draws."""
  rng = np.random.default_rng(seed)
  n, t = gen.shape[1], 0
  for _ in range(num_subsets):
    x = gen[rng.choice(len(gen), m, replace=False)]
    y = real[rng.choice(len(real), m, replace=False)]
    k = lambda u, v: (u @ v.T / n + 1) ** 3
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    # Unbiased MMD^2 written out term by term.
    t += ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
          - 2 * kxy.mean()) * m
  return t / num_subsets / m


def test_kernel_inception_distance_matches_the_definition():
  rng = np.random.default_rng(11)
  real, gen = rng.normal(size=(300, 16)), rng.normal(size=(250, 16)) * 1.2 + 0.3
  got = metrics.kernel_inception_distance(gen, real, num_subsets=5, max_subset_size=100, seed=3)
  assert got == pytest.approx(_reference_kid(gen, real, 5, 100, 3), rel=1e-9)
  assert got > 0.05
  # Same distribution: close to 0 (unbiased, may be negative).
  same = metrics.kernel_inception_distance(rng.normal(size=(500, 16)), real, num_subsets=20)
  assert abs(same) < 0.02


def test_inception_score_splits():
  one_hot = np.eye(10)[np.arange(1000) % 10] * 50
  assert metrics.inception_score(one_hot) == pytest.approx(10, rel=1e-4)
  # Each split of a class-sorted set holds one class: IS 1.
  sorted_hot = np.eye(10)[np.repeat(np.arange(10), 100)] * 50
  assert metrics.inception_score(sorted_hot) == pytest.approx(1, rel=1e-4)
  with pytest.raises(ValueError, match='at least 10 images for 10 splits'):
    metrics.inception_score(one_hot[:5])
