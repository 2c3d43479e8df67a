"""The shared command-line plumbing: '~' in paths."""

from absl import flags
from ml_collections import config_flags

from cgan_jax import cli
from tests.conftest import make_tiny_config


def test_home_is_expanded_in_path_flags_and_config_fields(monkeypatch):
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
