"""What the entry points share: a --config flag whose mistakes are one-line errors, and paths."""

import contextlib
import difflib
import functools
import importlib.util
import logging as python_logging
import os
import re
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from cgan_jax import checkpoint
from cgan_jax.image_folder import FOLDER_PREFIX

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
CONFIGS_DIR = os.path.join(os.path.dirname(PACKAGE_DIR), 'configs')
# Paths in which '~' is expanded (a shell leaves it alone after '--flag=' and 'folder:'); the
# config's are also made absolute.
_PATH_FLAGS = ('workdir', 'output', 'per_class_dir', 'classifier')
_PATH_FIELDS = ('data_dir', 'model.embed_init_file', 'eval_classifier_dir')


class ConfigFileError(Exception):
  """A config file that cannot be used: the message names the file (and line) and the fix."""


def define_config_flag(default, help_string: str):
  """DEFINE_config_file('config', ...), locked; a bad override of the default is one line, and a
  --config file is loaded by ConfigFileParser (its mistakes are one line too)."""
  try:
    config_flags.DEFINE_config_file('config', default, help_string, lock_config=True)
  except (AttributeError, KeyError) as e:  # --config.FIELD overrides of the default apply here.
    raise SystemExit(unknown_field_message(e)) from None
  flags.FLAGS['config'].parser = ConfigFileParser()


class ConfigFileParser(flags.ArgumentParser):
  """Loads a --config=PATH[:ARG] file's get_config(ARG), locked, as ml_collections does; raises a
  one-line ConfigFileError for a missing file, a syntax, name or import error in it, no
  get_config, a result that is no ConfigDict, and a field that configs/default.py lacks."""

  def parse(self, argument):
    path, *arg = str(argument).split(':', 1)
    if not os.path.isfile(path):
      near = [p for p in (path + '.py', os.path.join(CONFIGS_DIR, os.path.basename(path)),
                          os.path.join(CONFIGS_DIR, os.path.basename(path) + '.py'))
              if os.path.isfile(p)]
      if near:
        raise ConfigFileError(f'no config file {path!r} (did you mean --config='
                              f'{os.path.relpath(near[0])}?).')
      shipped = sorted(f for f in os.listdir(CONFIGS_DIR) if f.endswith('.py') and f[0] != '_')
      raise ConfigFileError(f'no config file {path!r}; pass --config=PATH to one, such as '
                            f'{", ".join(shipped)} in {CONFIGS_DIR}.')
    try:
      spec = importlib.util.spec_from_file_location('config_config', path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      if not callable(getattr(module, 'get_config', None)):
        raise ConfigFileError(f'config file {path} has no get_config(); define one that returns '
                              'the config, as in configs/mnist.py.')
      config = module.get_config(*arg)
    except ConfigFileError:
      raise
    except SyntaxError as e:
      raise ConfigFileError(f'config file {path}, line {e.lineno}: {e.msg} '
                            f'({type(e).__name__}); fix it and run again.') from None
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigFileError(f'config file {path}{_line_in(path, e)}: {type(e).__name__}: '
                            f'{_first_line(e)}; fix it and run again.') from None
    if not isinstance(config, ml_collections.ConfigDict):
      raise ConfigFileError(f'get_config() in config file {path} returned a '
                            f'{type(config).__name__}, not a ConfigDict; return one built on '
                            'configs.default.get_config(), as configs/mnist.py does.')
    _check_fields(config, path)
    config.lock()
    return config

  def flag_type(self):
    return 'config file'


def _first_line(error: Exception) -> str:
  lines = str(error).strip().splitlines()
  return lines[0] if lines else ''


def _line_in(path: str, error: Exception) -> str:
  """', line N' of the innermost frame of `error`'s traceback in the file `path', or ''."""
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == os.path.abspath(path)]
  return f', line {lines[-1]}' if lines else ''


def _field_names(config, prefix: str = '') -> list:
  names = []
  for key in config.keys():
    names.append(prefix + key)
    if isinstance(config[key], ml_collections.ConfigDict):
      names += _field_names(config[key], f'{prefix}{key}.')
  return names


def default_field_names() -> list:
  """Every field of configs/default.py, nested ones as 'model.g_width'."""
  from configs import default  # pylint: disable=g-import-not-at-top
  return _field_names(default.get_config())


def _check_fields(config: ml_collections.ConfigDict, path: str):
  """A one-line ConfigFileError for a field `config` has that configs/default.py lacks (the first
  the file `path` sets, with its line and the nearest known name) or one it lacks."""
  known = default_field_names()
  names = _field_names(config)
  extra = {n for n in names if n not in known}
  unknown = [n for n in names if n in extra and n.rpartition('.')[0] not in extra]  # Outermost.
  if unknown:
    with open(path) as f:
      text = f.read().splitlines()

    def line(field):  # Of the first assignment to the field's name (a large number if none).
      leaf = re.escape(field.rpartition('.')[2])
      pattern = re.compile(rf"(\.{leaf}|\[['\"]{leaf}['\"]\])\s*=(?!=)")
      return next((i for i, t in enumerate(text, 1) if pattern.search(t)), len(text) + 1)
    field = min(unknown, key=line)
    where = f', line {line(field)}' if line(field) <= len(text) else ''
    nearest = difflib.get_close_matches(field, known, n=1)
    hint = f' (did you mean {nearest[0]!r}?)' if nearest else ''
    more = f' ({len(unknown) - 1} more unknown in the file)' if len(unknown) > 1 else ''
    raise ConfigFileError(f'config file {path}{where} sets config.{field}, which is no config '
                          f'field{hint}; the fields are listed in configs/default.py{more}.')
  missing = [n for n in known if n not in names]
  if missing:
    raise ConfigFileError(f'config file {path} lacks the field(s) {", ".join(missing[:5])}'
                          f'{", ..." if len(missing) > 5 else ""}; build its config on '
                          'configs.default.get_config(), as configs/mnist.py does.')


def run(main, *, quiet: bool = False):
  """app.run(main): --config's mistakes reported in one line, '~' expanded in paths.

  Unless --verbosity is given, libraries log only warnings and errors (Orbax writes dozens of
  INFO lines per checkpoint), and with `quiet` cgan_jax too; Orbax's notices of read-only
  directories and TensorStore's late tracebacks are dropped (checkpoint.install_quiet_hooks).
  """
  checkpoint.install_quiet_hooks()
  app.run(functools.partial(_main_then_tidy, main),
          flags_parser=functools.partial(_parse_flags, quiet=quiet))


def _main_then_tidy(main, argv):
  """main(argv); if it fails, the directories it made for its output and left empty go again."""
  try:
    return main(argv)
  except BaseException as e:
    if not (isinstance(e, SystemExit) and e.code in (None, 0)):
      checkpoint.remove_made_dirs_left_empty()
    raise


def no_arguments(argv):
  """The commands take flags only: a one-line error for anything else."""
  if len(argv) > 1:
    raise SystemExit(f'Error: unexpected arguments {argv[1:]}; the command takes flags only '
                     '(--name=value); pass --helpfull to list them.')


def define_run_flags(ema_verb: str):
  """--workdir (required), --step, --seed and --ema, the flags of the commands that read a
  training run's checkpoint, defined as the calling module's (so --help lists them)."""
  caller = sys._getframe(1).f_globals.get('__name__')  # pylint: disable=protected-access
  module = sys.argv[0] if caller == '__main__' else caller  # absl's name for the main module.
  flags.DEFINE_string('workdir', None, 'Training directory holding checkpoints/.', required=True,
                      module_name=module)
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: the newest.', module_name=module)
  flags.DEFINE_integer('seed', 0, 'Seed of the noise.', module_name=module)
  flags.DEFINE_bool('ema', True, f"{ema_verb} the EMA of G's weights (the raw weights with "
                    '--noema).', module_name=module)


def _parse_flags(argv, quiet: bool = False):
  try:
    args = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS.config is not None:
      flags.FLAGS.config.get('seed')  # A config file that failed to load raises on first use.
  except ConfigFileError as e:
    raise SystemExit(f'Error: {e}') from None
  except (AttributeError, KeyError) as e:
    raise SystemExit(unknown_field_message(e)) from None
  except flags.UnrecognizedFlagError as e:
    raise SystemExit(f'Error: {_unknown_flag_message(e)}') from None
  except flags.Error as e:
    message = ' '.join(str(e).split()).rstrip('.')
    if required := re.search(r'Flag --(\w+) must have a value other than None', message):
      message = f'--{required[1]} is required'
    raise SystemExit(f'Error: {message}; pass --helpfull to list the flags.') from None
  _expand_home(flags.FLAGS)
  logging.get_absl_handler().addFilter(not_a_failed_write_report)
  if not flags.FLAGS['verbosity'].present:
    logging.get_absl_handler().addFilter(own_info_or_warning)
    if quiet:
      logging.set_verbosity(logging.WARNING)
  return args


def _unknown_flag_message(error) -> str:
  """absl's 'Unknown command line flag', with --config.FIELD for a config field given without
  its prefix (--num_train_steps=20), else with the nearest flag or config field."""
  name = error.flagname
  given = str(error.flagvalue or '')
  value = given[given.index('='):] if '=' in given else ''
  fields = default_field_names() if 'config' in flags.FLAGS else []
  if name in fields:
    return f'unknown flag --{name}; config fields take the prefix --config., as in --config.{name}{value}.'
  if name.startswith('no') and name[2:] in fields:  # absl's --noFLAG for a boolean.
    return f'unknown flag --{name}; config fields take the prefix --config., as in --config.{name[2:]}=false.'
  names = list(flags.FLAGS) + [f'config.{field}' for field in fields]
  nearest = difflib.get_close_matches(name, names, n=1) or difflib.get_close_matches(
      f'config.{name}', names, n=1)
  hint = f' (did you mean --{nearest[0]}?)' if nearest else ''
  return f'unknown flag --{name}{hint}; pass --helpfull to list the flags.'


def own_info_or_warning(record: python_logging.LogRecord) -> bool:
  """Keeps cgan_jax's log records and every library's warnings and errors."""
  return record.levelno >= python_logging.WARNING or record.pathname.startswith(PACKAGE_DIR)


def not_a_failed_write_report(record: python_logging.LogRecord) -> bool:
  """Drops Orbax's and asyncio's error reports (with tracebacks, several per file) of a write
  that failed for want of space: the save's one-line error says what to do (checkpoint.SaveError)."""
  if not any(f'{os.sep}{library}{os.sep}' in record.pathname for library in ('orbax', 'asyncio')):
    return True
  text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else '')
  return not any(reason in text for reason in ('No space left on device', 'Disk quota exceeded'))


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
  if config.dataset.startswith(FOLDER_PREFIX) and config.dataset[len(FOLDER_PREFIX):].strip():
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
