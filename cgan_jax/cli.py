"""The --config flag the entry points share, each of its mistakes a one-line error."""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def define_config_flag(default, help_string: str):
  """DEFINE_config_file('config', ...), locked; a bad override of the default is one line."""
  try:
    config_flags.DEFINE_config_file('config', default, help_string, lock_config=True)
  except (AttributeError, KeyError) as e:  # --config.FIELD overrides of the default apply here.
    raise SystemExit(unknown_field_message(e)) from None


def run(main):
  """app.run(main), with --config's mistakes reported in one line instead of a traceback."""
  app.run(main, flags_parser=_parse_flags)


def _parse_flags(argv):
  try:
    args = app.parse_flags_with_usage(argv)
    if flags.FLAGS.config is not None:
      flags.FLAGS.config.get('seed')  # A config file that failed to load raises on first use.
  except (AttributeError, KeyError) as e:
    raise SystemExit(unknown_field_message(e)) from None
  except OSError:
    path = config_flags.get_config_filename(flags.FLAGS['config'])
    shipped = sorted(f for f in os.listdir(CONFIGS_DIR) if f.endswith('.py') and f[0] != '_')
    raise SystemExit(f'Error: no config file {path!r}; pass --config=PATH to one, such as '
                     f'{", ".join(shipped)} in {CONFIGS_DIR}.') from None
  return args


def unknown_field_message(error: Exception) -> str:
  """'Error: unknown config field ...' from the KeyError (maybe inside an AttributeError)."""
  while error.args and isinstance(error.args[0], Exception):
    error = error.args[0]
  field, *suggestion = str(error.args[0] if error.args else error).split('\n')
  hint = f' ({suggestion[0][0].lower()}{suggestion[0][1:]})' if suggestion else ''
  return (f"Error: unknown config field '{field.strip(chr(39) + chr(34))}' in a --config.* "
          f'flag{hint}; the fields are listed in configs/default.py.')
