"""The sampling command line: a class grid (png) and arrays (npz) from a trained workdir."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from cgan_jax import checkpoint
from cgan_jax import models
from cgan_jax import sample
from cgan_jax import train
from tests.conftest import REPO


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  from tests.conftest import make_tiny_config  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(make_tiny_config(), workdir)
  return workdir


def _sample_cli(*args):
  return subprocess.run([sys.executable, '-m', 'cgan_jax.sample', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_sample_cli_png_and_npz(trained_workdir, tmp_path):
  png, npz = str(tmp_path / 'grid.png'), str(tmp_path / 'out.npz')
  result = _sample_cli(f'--workdir={trained_workdir}', f'--output={png}', '--num_per_class=3')
  assert result.returncode == 0, result.stderr
  # Orbax's INFO lines (and its read-only warning) only with --verbosity.
  assert 'Restoring checkpoint' not in result.stderr and 'read only' not in result.stderr
  picture = np.asarray(Image.open(png))
  assert picture.shape == sample.grid(np.zeros((30, 8, 8, 1), np.uint8), 10).shape[:2]

  result = _sample_cli(f'--workdir={trained_workdir}', f'--output={npz}', '--labels=3,7',
                       '--num_per_class=4', '--step=2', '--seed=5')
  assert result.returncode == 0, result.stderr
  data = np.load(npz)
  assert data['x'].shape == (8, 8, 8, 1) and data['x'].dtype == np.uint8
  assert sorted(data['y'].tolist()) == [3] * 4 + [7] * 4


def test_sampling_is_seeded_and_conditional(trained_workdir, tmp_path):
  paths = [str(tmp_path / f'{name}.npz') for name in ('a', 'b', 'c')]
  sample.sample_to_file(trained_workdir, paths[0], labels=[1], seed=0)
  sample.sample_to_file(trained_workdir, paths[1], labels=[1], seed=0)
  sample.sample_to_file(trained_workdir, paths[2], labels=[2], seed=0)
  a, b, c = (np.load(p)['x'] for p in paths)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_grid_formats(trained_workdir, tmp_path):
  sample.sample_to_file(trained_workdir, str(tmp_path / 'grid.jpg'), labels=[1, 2], num_per_class=2)
  with Image.open(tmp_path / 'grid.jpg') as picture:
    assert picture.format == 'JPEG'
    assert picture.size[::-1] == sample.grid(np.zeros((4, 8, 8, 1), np.uint8), 2).shape[:2]
  with pytest.raises(ValueError, match=r'must end in \.png or \.jpg \(a grid\) or \.npz'):
    sample.sample_to_file(trained_workdir, str(tmp_path / 'grid.gif'))


@pytest.mark.parametrize('args,message', [
    (['--labels=3,10'], 'out of range'),
    (['--labels=3,seven'], "class names ['0', '1'"),
    (['--output=/proc/cgan_jax_test/x.png'], 'Cannot write to --output=/proc/cgan_jax_test'),
    (['--step=999'], 'No checkpoint for step 999'),
    (['--num_per_class=0'], 'flag --num_per_class=0: 0 is not a positive integer'),
])
def test_sample_cli_errors(trained_workdir, tmp_path, args, message):
  result = _sample_cli(f'--workdir={trained_workdir}', f'--output={tmp_path}/x.png', *args)
  assert result.returncode != 0
  assert message in result.stderr


def test_sample_from_empty_workdir(tmp_path):
  result = _sample_cli(f'--workdir={tmp_path}', f'--output={tmp_path}/x.png')
  assert result.returncode != 0 and 'No checkpoint' in result.stderr


def test_readme_python_sampling_snippet_runs(trained_workdir):
  readme = open(os.path.join(REPO, 'README.md')).read()
  snippet = readme.split('In Python (G alone')[1].split('```python\n')[1].split('```')[0]
  scope = {}
  exec(snippet.replace("'runs/digits'", repr(trained_workdir)), scope)  # pylint: disable=exec-used
  assert scope['images'].shape == (16, 8, 8, 1)
  assert scope['step'] == 4 and -1 <= scope['images'].min() < scope['images'].max() <= 1


@pytest.mark.parametrize('z_shape,labels,message', [  # The tiny model's noise is 8 long.
    ((2, 8), [3, 12], r'^Label 12 is out of range: this model has 10 classes, 0..9.$'),
    ((2, 8), [-1, 3], r'^Label -1 is out of range'),  # jnp.take would wrap it to class 9.
    ((2, 8), [3], r'^2 noise vectors for 1 labels'),
    ((2, 8), [3, 3.7], r'^Labels are class ids \(integers\), got \[3.0, 3.7\].$'),  # Was 3.
    ((2, 8), ['3', '7'], r"^Labels are class ids \(integers\), got \['3', '7'\].$"),
    ((2, 7), [3, 4], r'^z has shape \(2, 7\); this model takes noise of shape \(N, 8\)'),
])
def test_generate_checks_its_input(trained_workdir, z_shape, labels, message):
  params, config, dataset, _ = checkpoint.restore_generator(trained_workdir)
  generator = sample.build_generator(config, dataset)
  with pytest.raises(ValueError, match=message):
    sample.generate(generator, params, np.zeros(z_shape, np.float32), labels)


def test_batch_norm_generator_does_not_normalise_a_few_images_alone(tiny_config):
  tiny_config.model.g_conditioning, tiny_config.model.g_norm = 'none', 'cbn'
  generator, _ = models.create_models(tiny_config, (10,), (8, 8, 1))
  z = np.asarray(sample.noise(3, 3, tiny_config.model.latent_dim))
  params = generator.init(jax.random.PRNGKey(0), z, np.arange(3), train=False)['params']
  one = sample.generate_batched(generator, params, z[:1], [3], batch_size=64)
  three = sample.generate_batched(generator, params, z, [3, 5, 7], batch_size=64)
  alone = sample.to_uint8(sample.generate(generator, params, z[:1], [3]))
  assert np.abs(one[0].astype(int) - three[0]).max() <= 4  # Statistics of 64 images, 61 shared.
  assert np.abs(one[0].astype(int) - alone[0]).max() > 20  # Normalised by its own statistics.
