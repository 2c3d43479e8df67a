"""What the entry points share: a --config flag whose mistakes are one-line errors, and paths."""

import contextlib
import functools
import logging as python_logging
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from cgan_jax.image_folder import FOLDER_PREFIX

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
CONFIGS_DIR = os.path.join(os.path.dirname(PACKAGE_DIR), 'configs')
# Paths in which '~' is expanded (a shell leaves it alone after '--flag=' and 'folder:'); the
# config's are also made absolute.
_PATH_FLAGS = ('workdir', 'output', 'per_class_dir', 'classifier')
_PATH_FIELDS = ('data_dir', 'model.embed_init_file', 'eval_classifier_dir')


def define_config_flag(default, help_string: str):
  """DEFINE_config_file('config', ...), locked; a bad override of the default is one line."""
  try:
    config_flags.DEFINE_config_file('config', default, help_string, lock_config=True)
  except (AttributeError, KeyError) as e:  # --config.FIELD overrides of the default apply here.
    raise SystemExit(unknown_field_message(e)) from None


def run(main, *, quiet: bool = False):
  """app.run(main): --config's mistakes reported in one line, '~' expanded in paths.

  Unless --verbosity is given, libraries log only warnings and errors (Orbax wrote ~40 INFO
  lines per checkpoint), and with `quiet` cgan_jax too.
  """
  app.run(main, flags_parser=functools.partial(_parse_flags, quiet=quiet))


def _parse_flags(argv, quiet: bool = False):
  try:
    args = app.parse_flags_with_usage(argv)
    if 'config' in flags.FLAGS and flags.FLAGS.config is not None:
      flags.FLAGS.config.get('seed')  # A config file that failed to load raises on first use.
  except (AttributeError, KeyError) as e:
    raise SystemExit(unknown_field_message(e)) from None
  except OSError:
    path = _config_argument(argv)
    shipped = sorted(f for f in os.listdir(CONFIGS_DIR) if f.endswith('.py') and f[0] != '_')
    raise SystemExit(f'Error: no config file {path!r}; pass --config=PATH to one, such as '
                     f'{", ".join(shipped)} in {CONFIGS_DIR}.') from None
  _expand_home(flags.FLAGS)
  if not flags.FLAGS['verbosity'].present:
    logging.get_absl_handler().addFilter(own_info_or_warning)
    if quiet:
      logging.set_verbosity(logging.WARNING)
  return args


def _config_argument(argv) -> str:
  """The --config value on the command line (the flag is left unparsed when its file fails)."""
  for flag, value in zip(argv, argv[1:] + ['']):
    if flag.startswith('--config='):
      return flag[len('--config='):]
    if flag == '--config':
      return value
  return config_flags.get_config_filename(flags.FLAGS['config'])


def own_info_or_warning(record: python_logging.LogRecord) -> bool:
  """Keeps cgan_jax's log records and every library's warnings and errors."""
  return record.levelno >= python_logging.WARNING or record.pathname.startswith(PACKAGE_DIR)


def _expand_home(flag_values):
  """Expands '~' in the path flags; the config's path fields that are set become absolute paths
  (a run's saved config then finds its data from any working directory)."""
  for name in _PATH_FLAGS:
    if name in flag_values and flag_values[name].value:
      setattr(flag_values, name, os.path.expanduser(flag_values[name].value))
  config = flag_values.config if 'config' in flag_values else None
  if config is None:
    return
  for field in _PATH_FIELDS:
    *parents, leaf = field.split('.')
    node = functools.reduce(lambda c, key: c.get(key) or {}, parents, config)
    if node.get(leaf):
      node[leaf] = _absolute(node[leaf])
  if config.dataset.startswith(FOLDER_PREFIX):
    config.dataset = FOLDER_PREFIX + _absolute(config.dataset[len(FOLDER_PREFIX):])


def _absolute(path: str) -> str:
  """`path` with '~' expanded, made absolute; URLs (gs://...) as they are."""
  return path if '://' in path else os.path.abspath(os.path.expanduser(path))


def unknown_field_message(error: Exception) -> str:
  """'Error: unknown config field ...' from the KeyError (maybe inside an AttributeError)."""
  while error.args and isinstance(error.args[0], Exception):
    error = error.args[0]
  field, *suggestion = str(error.args[0] if error.args else error).split('\n')
  hint = f' ({suggestion[0][0].lower()}{suggestion[0][1:]})' if suggestion else ''
  field = field.strip('\'"')
  return (f"Error: unknown config field '{field}' in a --config.* flag{hint}; the fields are "
          'listed in configs/default.py.')


def check_ranges(config, minimums: dict, fractions=()):
  """A one-line error for a numeric field below its minimum or a fraction outside [0, 1)."""
  def value(name):
    return functools.reduce(lambda c, key: c[key], name.split('.'), config)
  for name, minimum in minimums.items():
    if value(name) < minimum:
      raise ValueError(f'config.{name}={value(name)} must be at least {minimum}.')
  for name in fractions:
    if not 0 <= value(name) < 1:
      raise ValueError(f'config.{name}={value(name)} must be in [0, 1).')


@contextlib.contextmanager
def one_line_errors(*kinds):
  """Ends the program with 'Error: ...' (exit code 1) for errors of `kinds`, the checks' one-line
  messages; a JAX runtime error keeps its traceback, unless the device ran out of memory."""
  try:
    yield
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise  # An XLA failure: its traceback is the report.
    raise SystemExit(f'Error: out of memory ({str(e).splitlines()[0][:200]}); lower '
                     '--config.batch_size or the model widths.') from None
  except kinds as e:
    raise SystemExit(f'Error: {e}') from None
