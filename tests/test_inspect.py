"""The inspect command: tables, embeddings and every picture from a tiny trained workdir."""

import glob
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cgan_jax import inspect as cgan_inspect
from cgan_jax import models
from cgan_jax import plots
from cgan_jax import sample
from cgan_jax import train
from tests.conftest import REPO, make_tiny_config


@pytest.fixture(scope='module')
def inspected(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  config = make_tiny_config()
  train.train_and_evaluate(config, workdir)
  lines = []
  result = cgan_inspect.inspect_workdir(workdir, num_per_class=20, num_steps=5, log=lines.append)
  return workdir, config, result, '\n'.join(lines)


def _picture(path):
  assert os.path.exists(path), path
  return np.asarray(Image.open(path).convert('RGB')).astype(np.float32)


def _assert_not_blank(picture):
  # A blank canvas has one colour; a plot or image grid has many distinct pixel values.
  assert picture.std() > 5 and len(np.unique(picture.reshape(-1, 3), axis=0)) > 20


def test_param_table_counts_every_parameter(inspected):
  workdir, _, result, printed = inspected
  restored, *_ = cgan_inspect.checkpoint.restore_params(workdir, ('ema_g_params', 'd_params'))
  text = open(result['files']['params']).read()
  for key in ('ema_g_params', 'd_params'):
    leaves = [np.asarray(x) for x in jax.tree.leaves(restored[key])]
    assert f'{sum(x.size for x in leaves):,}' in text
  assert 'label_map/label/embed/embedding' in text and 'project/kernel' in text
  assert 'Generator' in printed and 'Discriminator' in printed


def test_embedding_tables_saved_and_heatmap(inspected):
  _, config, result, printed = inspected
  emb_dir = os.path.join(result['output'], 'embeddings')
  names = sorted(os.listdir(emb_dir))
  assert names == ['D_label_map_label_embed.npy', 'G_label_map_label_embed.npy']
  for name in names:
    table = np.load(os.path.join(emb_dir, name))
    assert table.shape == (10, config.model.embed_dim)
    assert len(np.unique(table.round(6), axis=0)) == 10  # Classes differ.
    assert name[:-4] in printed
  picture = _picture(result['files']['embedding_cosine'])
  assert picture.shape[:2] == plots.figure_size(2)
  _assert_not_blank(picture)


def test_conditioned_input_pca(inspected):
  _, config, result, printed = inspected
  assert config.model.g_conditioning == 'channel'
  for where in ('input', 'output'):
    pca = result[f'pca_{where}']
    assert pca['layer'] == 'up0'  # 'channel': the base map with the label map concatenated.
    assert pca['points'].shape == (200, 2)
    means = np.stack([pca['points'][pca['labels'] == c].mean(0) for c in range(10)])
    assert len(np.unique(means.round(4), axis=0)) == 10  # Classes differ.
    assert 0 < pca['class_separation'] < 1
    assert f"{where} of 'up0'" in printed
  picture = _picture(result['files']['conditioned_input_pca'])
  assert picture.shape[:2] == plots.figure_size(2)
  _assert_not_blank(picture)


def test_interpolation_strip(inspected):
  _, _, result, _ = inspected
  x = result['interpolation']
  assert x.shape == (10 * 5, 8, 8, 1)
  rows = x.reshape(10, 5, -1)
  assert not np.array_equal(rows[0], rows[1])  # Same noise path, classes differ.
  assert not np.array_equal(rows[0, 0], rows[0, -1])  # The path moves.
  picture = _picture(result['files']['interpolation'])
  expected = sample.grid(np.zeros((50, 8, 8, 1), np.uint8), 5, min_cell=32).shape[:2]
  assert picture.shape[:2] == expected
  _assert_not_blank(picture)


def test_loss_curves_from_tensorboard(inspected):
  workdir, config, result, _ = inspected
  scalars = cgan_inspect.read_scalars(workdir)
  for tag in ('g_loss', 'd_loss', 'd_acc_real', 'g_grad_norm', 'd_grad_norm', 'g_learning_rate'):
    steps, values = scalars[tag]
    assert steps.tolist() == list(range(2, config.num_train_steps + 1, 2)), tag
    assert np.all(np.isfinite(values))
  assert np.all(scalars['g_grad_norm'][1] > 0)
  picture = _picture(result['files']['loss_curves'])
  assert result['num_panels'] >= 3  # losses, D accuracy, gradient norms (+ other metrics).
  assert picture.shape[:2] == plots.figure_size(result['num_panels'])
  _assert_not_blank(picture)


def test_loss_curves_of_a_run_being_written(inspected, tmp_path):
  workdir = inspected[0]
  full = cgan_inspect.read_scalars(workdir)
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    with open(path, 'rb') as f:  # The newest record half written, as by a running job.
      (tmp_path / os.path.basename(path)).write_bytes(f.read()[:-5])
  partial = cgan_inspect.read_scalars(str(tmp_path))
  assert 0 < len(partial['g_loss'][0]) <= len(full['g_loss'][0])


def test_unconditioned_generator_has_nothing_to_show():
  config = make_tiny_config()
  config.model.g_conditioning = 'none'
  config.model.d_conditioning = 'none'
  generator, _ = models.create_models(config, (10,), (8, 8, 1))
  z, labels = jnp.zeros((1, config.model.latent_dim)), jnp.zeros((1,), jnp.int32)
  params = generator.init(jax.random.PRNGKey(0), z, labels, train=False)['params']
  assert cgan_inspect.find_conditioned_input(generator, params, config.model.latent_dim) is None
  assert not cgan_inspect.embedding_tables(params, 'G')


def test_inspect_cli(inspected, tmp_path):
  workdir = inspected[0]
  result = subprocess.run(
      [sys.executable, '-m', 'cgan_jax.inspect', f'--workdir={workdir}', f'--output={tmp_path}',
       '--num_per_class=5', '--step=2'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert 'at step 2' in result.stdout
  assert {'params.txt', 'embedding_cosine.png', 'conditioned_input_pca.png', 'interpolation.png',
          'loss_curves.png'} <= set(os.listdir(tmp_path))
  empty = subprocess.run([sys.executable, '-m', 'cgan_jax.inspect', f'--workdir={tmp_path}'],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
  assert empty.returncode != 0 and 'No checkpoint' in empty.stderr


def test_unwritable_output_is_one_line(inspected, tmp_path):
  workdir = inspected[0]
  (tmp_path / 'a_file').write_text('')
  with pytest.raises(PermissionError, match=r'^--output=.*a_file is a file; choose a directory\.$'):
    cgan_inspect.inspect_workdir(workdir, str(tmp_path / 'a_file'))
  below_a_file = str(tmp_path / 'a_file' / 'inspect')  # Unwritable even as root.
  with pytest.raises(PermissionError, match='^Cannot write to --output=.*; choose a directory'):
    cgan_inspect.inspect_workdir(workdir, below_a_file)
