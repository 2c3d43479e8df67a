"""Sampling extras: truncation, interpolation at a fixed class, one PNG folder per class."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cgan_jax import checkpoint
from cgan_jax import sample
from cgan_jax import train
from tests.conftest import REPO, make_tiny_config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(make_tiny_config(), workdir)
  params, config, dataset, _ = checkpoint.restore_generator(workdir)
  return workdir, sample.build_generator(config, dataset), params, config


def test_truncation_bounds_noise():
  z = np.asarray(sample.noise(0, 500, 16, truncation=0.5))
  assert np.abs(z).max() <= 0.5 and z.std() > 0.2
  assert np.abs(np.asarray(sample.noise(0, 500, 16))).max() > 2  # Untruncated has tails.
  with pytest.raises(ValueError, match='truncation must be > 0'):
    sample.noise(0, 2, 4, truncation=0.0)


def test_truncated_samples_differ(trained):
  _, generator, params, config = trained
  args = (generator, params, [3], 4, 0, config.model.latent_dim, (10,))
  plain, y = sample.class_samples(*args)
  truncated, _ = sample.class_samples(*args, truncation=0.3)
  assert truncated.shape == plain.shape and y.tolist() == [3] * 4
  assert not np.array_equal(plain, truncated)


def test_slerp_endpoints_and_norm():
  rng = np.random.default_rng(0)
  z0, z1 = rng.normal(size=(2, 64))
  path = sample.slerp(z0, z1, 7)
  np.testing.assert_allclose(path[0], z0, atol=1e-5)
  np.testing.assert_allclose(path[-1], z1, atol=1e-5)
  norms = np.linalg.norm(path, axis=1)
  assert norms.min() > 0.9 * min(np.linalg.norm(z0), np.linalg.norm(z1))  # No dip to 0.


def test_interpolation_rows(trained):
  _, generator, params, config = trained
  x, y = sample.interpolation(generator, params, [2, 5], 6, 1, config.model.latent_dim, (10,))
  assert x.shape == (12, 8, 8, 1) and y.tolist() == [2] * 6 + [5] * 6
  z0, z1 = np.asarray(sample.noise(1, 2, config.model.latent_dim))
  ends = sample.to_uint8(sample.generate(generator, params, np.stack([z0, z1]), np.array([5, 5])))
  np.testing.assert_array_equal(x[6], ends[0])
  np.testing.assert_array_equal(x[11], ends[1])
  assert not np.array_equal(x[:6], x[6:])
  with pytest.raises(ValueError, match='num_steps must be at least 2'):
    sample.interpolation(generator, params, [2], 1, 1, config.model.latent_dim, (10,))


def test_per_class_dir(trained, tmp_path):
  workdir = trained[0]
  out = tmp_path / 'classes'
  message = sample.sample_to_file(workdir, per_class_dir=str(out), num_per_class=3,
                                  labels=[0, 4, 9], truncation=1.0)
  assert 'Wrote 9 samples' in message
  assert sorted(os.listdir(out)) == ['0', '4', '9']  # digits' class names.
  for label in ('0', '4', '9'):
    files = sorted(os.listdir(out / label))
    assert files == ['00000.png', '00001.png', '00002.png']
    assert np.asarray(Image.open(out / label / files[0])).shape == (8, 8)
  first = [np.asarray(Image.open(out / c / '00000.png')) for c in ('0', '4', '9')]
  assert not np.array_equal(first[0], first[1])
  assert sample.class_folder(3, ['a/b'] * 4) == '003' and sample.class_folder(1, ['x', 'y']) == 'y'


def _sample_cli(*args):
  return subprocess.run([sys.executable, '-m', 'cgan_jax.sample', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_cli_interpolate_truncate_per_class(trained, tmp_path):
  workdir = trained[0]
  png = str(tmp_path / 'walk.png')
  result = _sample_cli(f'--workdir={workdir}', f'--output={png}', '--interpolate', '--num_steps=4',
                       '--labels=1,7', '--truncation=1.5', f'--per_class_dir={tmp_path}/pngs')
  assert result.returncode == 0, result.stderr
  expected = sample.grid(np.zeros((8, 8, 8, 1), np.uint8), 4).shape[:2]  # 2 rows of 4.
  assert np.asarray(Image.open(png)).shape == expected
  assert sorted(os.listdir(tmp_path / 'pngs')) == ['1', '7']
  assert len(os.listdir(tmp_path / 'pngs' / '7')) == 4

  for args, message in ((['--truncation=-1', f'--output={png}'], 'truncation must be > 0'),
                        ([], 'Nothing to write')):
    result = _sample_cli(f'--workdir={workdir}', *args)
    assert result.returncode != 0 and message in result.stderr


def test_unconditional_generator_is_named_when_sampled(trained, tmp_path, caplog):
  sample.sample_to_file(trained[0], str(tmp_path / 'conditional.png'))
  assert 'unconditional' not in caplog.text
  config = make_tiny_config()
  config.model.g_conditioning = config.model.d_conditioning = 'none'
  config.num_train_steps = 2
  workdir = str(tmp_path / 'unconditional')
  train.train_and_evaluate(config, workdir)
  sample.sample_to_file(workdir, str(tmp_path / 'unconditional.png'))
  assert "This run's G is unconditional" in caplog.text
