"""The shared command-line plumbing: '~' in paths, a quiet start."""

import logging
import os
import subprocess
import sys

from absl import flags
import jax
import pytest
from ml_collections import config_flags

from cgan_jax import cli
from tests import conftest
from tests.conftest import make_tiny_config


def test_home_is_expanded_and_config_paths_made_absolute(monkeypatch):
  monkeypatch.setenv('HOME', '/home/user')
  flag_values = flags.FlagValues()
  flags.DEFINE_string('workdir', None, '', flag_values=flag_values)
  flags.DEFINE_string('labels', None, '', flag_values=flag_values)
  config_flags.DEFINE_config_dict('config', make_tiny_config(), flag_values=flag_values)
  flag_values(['prog', '--workdir=~/run', '--labels=~1'])
  config = flag_values.config
  config.dataset, config.data_dir, config.eval_classifier_dir = 'folder:~/images', '~/tfds', None
  cli._expand_home(flag_values)  # pylint: disable=protected-access
  assert flag_values.workdir == '/home/user/run'
  assert flag_values.labels == '~1'  # Not a path.
  assert config.dataset == 'folder:/home/user/images'
  assert config.data_dir == '/home/user/tfds'
  assert config.model.embed_init_file is None and config.eval_classifier_dir is None
  # Relative paths become absolute (the saved config finds them from anywhere); URLs stay.
  monkeypatch.chdir('/tmp')
  config.dataset, config.data_dir, config.model.embed_init_file = 'folder:data/', 'gs://b/tfds', 'e.npy'
  cli._expand_home(flag_values)  # pylint: disable=protected-access
  assert config.dataset == 'folder:/tmp/data'
  assert config.data_dir == 'gs://b/tfds' and config.model.embed_init_file == '/tmp/e.npy'


def test_importing_the_input_pipeline_prints_nothing():
  env = {k: v for k, v in os.environ.items() if not k.startswith('TF_')}
  out = subprocess.run([sys.executable, '-c', 'import cgan_jax.input_pipeline'], cwd=conftest.REPO,
                       capture_output=True, text=True, timeout=120, env=env)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stderr == '', out.stderr  # TensorFlow's oneDNN notice came through before.


def test_library_info_logs_are_dropped_own_and_warnings_kept():
  def record(path, level):
    return logging.LogRecord('absl', level, path, 1, 'message', (), None)
  orbax = '/site-packages/orbax/checkpoint/checkpoint_manager.py'
  assert not cli.own_info_or_warning(record(orbax, logging.INFO))
  assert cli.own_info_or_warning(record(orbax, logging.WARNING))
  assert cli.own_info_or_warning(record(os.path.join(cli.PACKAGE_DIR, 'train.py'), logging.INFO))


def test_one_line_errors_keep_xla_tracebacks():
  with pytest.raises(SystemExit, match=r'^Error: bad value$'):
    with cli.one_line_errors(ValueError):
      raise ValueError('bad value')
  with pytest.raises(SystemExit, match=r'^Error: out of memory \(RESOURCE_EXHAUSTED: Out of memory '
                     r'while .*\); lower --config.batch_size or the model widths\.$'):
    with cli.one_line_errors(RuntimeError):
      raise jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory while allocating.\nmore')
  with pytest.raises(jax.errors.JaxRuntimeError, match='INTERNAL'):  # A bug: its traceback stays.
    with cli.one_line_errors(RuntimeError):
      raise jax.errors.JaxRuntimeError('INTERNAL: something broke')
