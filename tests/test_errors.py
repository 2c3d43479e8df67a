"""Every mistake gets a one-line answer: config files, flags, checkpoints, disks and images."""

import os
import subprocess
import sys

import pytest

from cgan_jax import cli
from tests.conftest import REPO


def _main(*flags, cwd=REPO):
  """python -m cgan_jax.main FLAGS: (exit code, stderr's lines)."""
  result = subprocess.run([sys.executable, '-m', 'cgan_jax.main', *flags], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
  return result.returncode, result.stderr.strip().splitlines()


_CONFIG_FILES = {
    'typo': ('from configs import digits\n\ndef get_config():\n  c = digits.get_config()\n'
             '  c.num_train_step = 5\n  c.model.g_widht = 3\n  return c\n',
             "config file {path}, line 5 sets config.num_train_step, which is no config field "
             "(did you mean 'num_train_steps'?); the fields are listed in configs/default.py "
             '(1 more unknown in the file).'),
    'nested_typo': ('from configs import digits\n\ndef get_config():\n  c = digits.get_config()\n'
                    "  c.model['d_widht'] = 3\n  return c\n",
                    'config file {path}, line 5 sets config.model.d_widht, which is no config '
                    "field (did you mean 'model.d_width'?); the fields are listed in "
                    'configs/default.py.'),
    'no_get_config': ('def config():\n  return None\n',
                      'config file {path} has no get_config(); define one that returns the '
                      'config, as in configs/mnist.py.'),
    'syntax': ('def get_config(:\n  pass\n',
               'config file {path}, line 1: invalid syntax (SyntaxError); fix it and run again.'),
    'name': ('from configs import digits\n\ndef get_config():\n  c = digits.get_config()\n'
             '  c.seed = undefined_name\n  return c\n',
             "config file {path}, line 5: NameError: name 'undefined_name' is not defined; fix "
             'it and run again.'),
    'import': ('import no_such_module_anywhere\n',
               "config file {path}, line 1: ModuleNotFoundError: No module named "
               "'no_such_module_anywhere'; fix it and run again."),
    'type': ('from configs import digits\n\ndef get_config():\n  c = digits.get_config()\n'
             "  c.num_train_steps = 'many'\n  return c\n",
             "config file {path}, line 5: TypeError: Could not override field 'num_train_steps'"),
    'returns_none': ('def get_config():\n  pass\n',
                     'get_config() in config file {path} returned a NoneType, not a ConfigDict; '
                     'return one built on configs.default.get_config(), as configs/mnist.py does.'),
    'partial': ('import ml_collections\n\ndef get_config():\n'
                '  return ml_collections.ConfigDict({"seed": 1})\n',
                'config file {path} lacks the field(s) '),
}


@pytest.mark.parametrize('name', sorted(_CONFIG_FILES))
def test_config_file_mistakes_are_one_line(tmp_path, name):
  text, message = _CONFIG_FILES[name]
  path = tmp_path / f'{name}.py'
  path.write_text(text)
  with pytest.raises(cli.ConfigFileError) as e:
    cli.ConfigFileParser().parse(str(path))
  assert str(e.value).startswith(message.format(path=path)), str(e.value)
  assert '\n' not in str(e.value)


def test_shipped_config_files_load_locked():
  for name in sorted(os.listdir(cli.CONFIGS_DIR)):
    if name.endswith('.py') and not name.startswith('_'):
      assert cli.ConfigFileParser().parse(os.path.join(cli.CONFIGS_DIR, name)).is_locked


def test_config_file_and_flag_mistakes_end_the_program_in_one_line(tmp_path):
  path = tmp_path / 'typo.py'
  path.write_text(_CONFIG_FILES['typo'][0])
  workdir = tmp_path / 'run'
  cases = [
      ([f'--config={path}'], 'Error: ' + _CONFIG_FILES['typo'][1].format(path=path)),
      (['--num_train_steps=20'], 'Error: unknown flag --num_train_steps; config fields take the '
       'prefix --config., as in --config.num_train_steps=20.'),
      (['--num_train_step=20'], 'Error: unknown flag --num_train_step (did you mean '
       '--config.num_train_steps?); pass --helpfull to list the flags.'),
      (['--distributed=maybe'], 'Error: flag --distributed=maybe: value should be one of '
       '<auto|yes|no>; pass --helpfull to list the flags.'),
  ]
  for flags, message in cases:
    code, lines = _main(f'--workdir={workdir}', *flags)
    assert (code, lines) == (1, [message]), flags
  assert not workdir.exists()
