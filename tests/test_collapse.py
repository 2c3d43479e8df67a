"""The collapse monitor: D has won, G draws one image per class, and what training does then."""

import os

import numpy as np
import pytest

from cgan_jax import collapse
from cgan_jax import train


def _means(acc_real, acc_fake, g_grad_norm):
  return {'d_acc_real': acc_real, 'd_acc_fake': acc_fake, 'g_grad_norm': g_grad_norm,
          'd_loss': 0.1, 'g_loss': 3.0}


def test_d_has_won_needs_every_sign_for_several_intervals():
  monitor = collapse.Monitor()
  assert monitor.observe_metrics(100, _means(0.8, 0.7, 2.0)) is None  # Healthy; the peak is 2.
  assert monitor.observe_metrics(200, _means(1.0, 1.0, 1e-4)) is None
  assert monitor.observe_metrics(300, _means(1.0, 1.0, 1e-4)) is None
  message = monitor.observe_metrics(400, _means(1.0, 1.0, 1e-4))
  assert message.startswith('Step 400: D has won') and '--config.augment' in message
  assert monitor.observe_metrics(500, _means(1.0, 1.0, 1e-4)) is None  # Said once.


@pytest.mark.parametrize('means', [
    _means(1.0, 1.0, 0.5),  # D right everywhere but G still gets a gradient (hinge loss).
    _means(0.9, 1.0, 1e-4),  # G's gradient is small but D misses real images.
])
def test_d_has_not_won(means):
  history = [_means(0.7, 0.7, 2.0)] + [means] * 5
  assert collapse.d_has_won(history) is None


def test_separate_phase_metrics_are_read_and_missing_ones_are_not_a_collapse():
  assert collapse.d_has_won([{'g_grad_norm': 1.0}] * 5) is None


def test_blank_and_identical_samples_are_collapse_varied_ones_are_not():
  rng = np.random.default_rng(0)
  labels = np.tile(np.arange(10), 4)
  varied = rng.uniform(-1, 1, (40, 8, 8, 1))
  assert collapse.g_has_collapsed(varied, labels) is None
  blank = np.full((40, 8, 8, 1), -1.0)
  assert 'blank' in collapse.g_has_collapsed(blank, labels)
  per_class = rng.uniform(-1, 1, (10, 8, 8, 1))
  identical = per_class[labels] + rng.normal(0, 1e-3, (40, 8, 8, 1))
  assert 'nearly one image' in collapse.g_has_collapsed(identical, labels)


def test_attribute_labels_group_by_combination():
  labels = np.array([[0, 1], [0, 1], [1, 0], [1, 0]])
  images = np.stack([np.zeros((4, 4, 1)), np.ones((4, 4, 1)), np.zeros((4, 4, 1)),
                     np.ones((4, 4, 1))])
  diversity, contrast = collapse.sample_diversity(images, labels)
  assert diversity == pytest.approx(0.5**0.5) and contrast == 0  # std of {0, 1}, ddof=1.


def test_samples_far_less_varied_than_real_images_are_collapse():
  """Each class drawn as one image with small changes: not one image, but far from the data."""
  rng = np.random.default_rng(0)
  real_labels = rng.integers(0, 10, (4, 128))  # Four steps' batches, as the train loop has them.
  monitor = collapse.Monitor()
  for step_images, step_labels in zip(rng.uniform(-1, 1, (4, 128, 8, 8, 1)), real_labels):
    assert monitor.real_variety is None
    monitor.observe_real(step_images[None], step_labels[None])
  assert monitor.real_variety == pytest.approx(2 / 12**0.5, rel=0.05)  # Uniform's std.
  labels = np.repeat(np.arange(10), 10)
  few = rng.uniform(-1, 1, (10, 8, 8, 1))[labels] + rng.normal(0, 0.15, (100, 8, 8, 1))
  assert collapse.g_has_collapsed(few, labels) is None  # Not blank, not one image...
  message = monitor.observe_samples(600, few, labels)
  assert message.startswith('Step 600: G has collapsed to a few images per class')
  assert 'configs/digits.py' in message
  varied = rng.uniform(-1, 1, (100, 8, 8, 1))
  assert collapse.Monitor().observe_samples(600, varied, labels) is None  # No real images seen.
  assert collapse.g_lacks_variety(varied, labels, monitor.real_variety) is None


@pytest.mark.parametrize('on_collapse', ['warn', 'stop'])
def test_training_warns_or_stops_with_a_checkpoint(tiny_config, tmp_path, monkeypatch, capsys,
                                                    on_collapse):
  monkeypatch.setattr(collapse, 'd_has_won', lambda history: 'D has won: test')
  tiny_config.on_collapse = on_collapse
  tiny_config.checkpoint_every_steps = 0
  workdir = str(tmp_path / 'run')
  if on_collapse == 'warn':
    train.train_and_evaluate(tiny_config, workdir)
    out = capsys.readouterr().out
    assert 'Warning: Step 2: D has won: test; try --config.loss=hinge' in out
    assert out.count('D has won') == 1
  else:
    with pytest.raises(collapse.CollapseError, match='Stopped with a checkpoint at step 2'):
      train.train_and_evaluate(tiny_config, workdir)
    assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['2']


def test_unknown_on_collapse_is_an_error(tiny_config, tmp_path):
  tiny_config.on_collapse = 'ignore'
  with pytest.raises(ValueError, match="Unknown on_collapse 'ignore'"):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
