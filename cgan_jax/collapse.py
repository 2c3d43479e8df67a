"""Notices the two ways a GAN run fails silently: D has won, or G draws one image per class.

D has won when it tells nearly every real and generated image apart while G's gradient has
all but vanished, for several log intervals in a row: G no longer learns anything. G has
collapsed when the samples of a class (from different noise) are nearly the same image, vary
far less than real images of a class do, or are blank. All are read from what training
already computes: the logged metric means, the real batches and the periodic sample grid.
"""

from typing import Optional

import numpy as np

WON_ACCURACY = 0.99  # D right on at least this share of real and of generated images...
WON_GRAD_FRACTION = 0.01  # ...while G's gradient norm is below this share of its peak so far...
WON_INTERVALS = 3  # ...for this many log intervals in a row.
MIN_DIVERSITY = 0.02  # Per-pixel std over a class's samples (in [-1, 1] units) below this: one image.
MIN_CONTRAST = 0.02  # Per-image pixel std below this: a blank image.
MIN_VARIETY = 0.45  # A class's samples varying less than this share of a real class's: few modes.
REAL_IMAGES = 512  # Real training images that measure the data's per-class variety.

REMEDY = ('try --config.loss=hinge with --config.model.d_spectral_norm=True and '
          '--config.model.d_dropout=0, --config.augment=translation,cutout, or a lower '
          '--config.d_learning_rate (configs/mnist.py is a recipe that trains)')
VARIETY_REMEDY = ('try the config made for this image size (configs/digits.py at 8x8, '
                  'configs/mnist.py at 28x28) or leave --config.augment out (docs/quality.md)')


class CollapseError(RuntimeError):
  """Training stopped because it collapsed and config.on_collapse is 'stop'."""


def d_has_won(history: list) -> Optional[str]:
  """A one-line diagnosis if the last WON_INTERVALS log means in `history` show D has won."""
  if len(history) < WON_INTERVALS or any('d_acc_real' not in m or 'd_acc_fake' not in m
                                         for m in history[-WON_INTERVALS:]):
    return None
  peak = max(float(m['g_grad_norm']) for m in history)
  recent = history[-WON_INTERVALS:]
  won = all(float(m['d_acc_real']) >= WON_ACCURACY and float(m['d_acc_fake']) >= WON_ACCURACY and
            float(m['g_grad_norm']) < WON_GRAD_FRACTION * peak for m in recent)
  if not won:
    return None
  last = recent[-1]
  return (f"D has won: it is right on {float(last['d_acc_real']):.0%} of real and "
          f"{float(last['d_acc_fake']):.0%} of generated images and G's gradient norm is "
          f"{float(last['g_grad_norm']):.2g} ({float(last['g_grad_norm']) / peak:.1%} of its peak) "
          f'for {WON_INTERVALS} log intervals: G has stopped learning')


def sample_diversity(images: np.ndarray, labels: np.ndarray) -> tuple:
  """(mean over classes of the per-pixel std across that class's samples, mean per-image std)."""
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels)
  keys = [tuple(np.atleast_1d(label)) for label in labels]
  groups = {}
  for i, key in enumerate(keys):
    groups.setdefault(key, []).append(i)
  # ddof=1: a grid's 10 samples a class and a batch's few real ones measure alike.
  spreads = [images[idx].std(axis=0, ddof=1).mean() for idx in groups.values() if len(idx) > 1]
  diversity = float(np.mean(spreads)) if spreads else float('nan')
  contrast = float(images.reshape(len(images), -1).std(axis=1).mean())
  return diversity, contrast


def g_has_collapsed(images: np.ndarray, labels: np.ndarray) -> Optional[str]:
  """A one-line diagnosis if generated `images` (in [-1, 1]) are blank or one image per class."""
  diversity, contrast = sample_diversity(images, labels)
  if contrast < MIN_CONTRAST:
    return f'G has collapsed: its samples are blank (pixel std {contrast:.3f})'
  if diversity < MIN_DIVERSITY:
    return (f'G has collapsed: samples of a class from different noise are nearly one image '
            f'(per-pixel std {diversity:.3f})')
  return None


def g_lacks_variety(images: np.ndarray, labels: np.ndarray,
                    real_variety: Optional[float]) -> Optional[str]:
  """A one-line diagnosis if generated `images` of a class vary far less than real ones do."""
  diversity, _ = sample_diversity(images, labels)
  if not real_variety or diversity >= MIN_VARIETY * real_variety:
    return None
  return (f'G has collapsed to a few images per class: its samples of a class vary '
          f'{diversity / real_variety:.0%} as much as real images of a class (per-pixel std '
          f'{diversity:.3f} against {real_variety:.3f})')


class Monitor:
  """Keeps the log means of a run and reports a collapse once (None while training is healthy)."""

  def __init__(self):
    self.history = []
    self.reported = False
    self.real_variety = None  # Per-class variety of REAL_IMAGES training images, once seen.
    self._real = []

  def _report(self, step: int, diagnosis: Optional[str], remedy: str = REMEDY) -> Optional[str]:
    if diagnosis is None or self.reported:
      return None
    self.reported = True
    return f'Step {step}: {diagnosis}; {remedy}.'

  def observe_metrics(self, step: int, means: dict) -> Optional[str]:
    """Adds a log interval's metric means; a message the first time D is found to have won."""
    self.history.append({k: float(v) for k, v in means.items()})
    return self._report(step, d_has_won(self.history))

  def observe_real(self, images: np.ndarray, labels: np.ndarray):
    """Keeps real training images (any leading batch axes) until REAL_IMAGES are seen."""
    if self.real_variety is not None:
      return
    images = np.asarray(images)
    images = images.reshape(-1, *images.shape[-3:])  # HWC images.
    self._real.append((images, np.asarray(labels).reshape(len(images), -1)))
    if sum(len(x) for x, _ in self._real) >= REAL_IMAGES:
      self.real_variety = sample_diversity(*map(np.concatenate, zip(*self._real)))[0]
      self._real = []

  def observe_samples(self, step: int, images: np.ndarray, labels: np.ndarray) -> Optional[str]:
    """Checks a periodic sample grid; a message the first time G is found collapsed."""
    diagnosis = g_has_collapsed(images, labels)
    if diagnosis:
      return self._report(step, diagnosis)
    return self._report(step, g_lacks_variety(images, labels, self.real_variety), VARIETY_REMEDY)
