"""Orbax checkpoints: the train state with its config and dataset metadata beside it."""

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Optional
import weakref

from absl import logging
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from configs import default as default_config

from cgan_jax import console
from cgan_jax import labels

# Config fields that change the parameters' structure or meaning: a checkpoint made with
# other values cannot be resumed.
_MODEL_FIELDS = ('model',)
# Model fields a resumed run may change: how the same parameters are computed (layer
# implementation, compute dtype; parameters stay float32) or regularised (D's dropout).
_RESUMABLE_FIELDS = ('conv_impl', 'dtype', 'd_dropout')
# Model fields that matter only as set or unset: the checkpoint holds the table read from the file.
_SET_OR_UNSET_FIELDS = ('embed_init_file',)
# Top-level fields that change the optimiser states' structure (a schedule keeps a step count).
_OPTIMIZER_FIELDS = ('lr_schedule',)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def check_writable(directory: str, flag: str = '--workdir'):
  """Makes `directory` if needed; a one-line PermissionError if no file can be written there.

  Directories made here are removed again if the command fails and leaves them empty
  (remove_made_dirs_left_empty, called by cli.run).
  """
  if os.path.isfile(directory):
    raise PermissionError(f'{flag}={directory} is a file; choose a directory.')
  run = run_around(directory)
  if flag == '--workdir' and run and os.path.abspath(directory).startswith(checkpoint_dir(run)):
    raise ValueError(f'--workdir={directory} is inside the checkpoints of the run {run}; pass '
                     f'--workdir={run} to resume it, or a directory of its own.')
  made = _outermost_missing(directory)
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory):
      pass
  except OSError as e:
    if made:
      _remove_empty_dirs(made)
    blocker = _file_on_the_way(directory)
    reason = f'{blocker} is a file' if blocker else {
        errno.EACCES: 'permission denied', errno.EPERM: 'permission denied',
        errno.EROFS: 'a read-only file system', errno.ENOSPC: 'no space left on device',
        errno.EDQUOT: 'disk quota exceeded'}.get(e.errno, 'no file can be created there')
    raise PermissionError(f'Cannot write to {flag}={directory} ({reason}); choose a directory '
                          'you can write to.') from None
  if made:
    _MADE_DIRS.append(made)


_MADE_DIRS = []  # The outermost directory each check_writable made.


def _outermost_missing(path: str) -> Optional[str]:
  """The outermost directory of `path` (itself included) that does not exist yet, or None."""
  path, missing = os.path.abspath(path), None
  while not os.path.lexists(path):
    missing, path = path, os.path.dirname(path)
  return missing


def _file_on_the_way(path: str) -> Optional[str]:
  """`path` or the parent of it that exists as something other than a directory, or None."""
  path = os.path.abspath(path)
  while not os.path.lexists(path):
    path = os.path.dirname(path)
  return None if os.path.isdir(path) else path


def _remove_empty_dirs(top: str):
  """Removes `top` and the directories below it that are empty (never a file), deepest first."""
  for root, _, _ in os.walk(top, topdown=False):
    try:
      os.rmdir(root)
    except OSError:
      pass


def remove_made_dirs_left_empty():
  """Removes what check_writable made and the command left empty: a failed start leaves no
  empty --workdir or --output behind."""
  while _MADE_DIRS:
    _remove_empty_dirs(_MADE_DIRS.pop())


def create_manager(workdir: str, config: ml_collections.ConfigDict,
                   **options) -> ocp.CheckpointManager:
  """A manager of a run's checkpoints (state, config, dataset) in WORKDIR/checkpoints that keeps
  the newest `config.keep_checkpoints` and saves asynchronously; `options` override those."""
  options = ocp.CheckpointManagerOptions(
      **{'max_to_keep': config.keep_checkpoints, 'create': True, **options})
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=('state', 'config', 'dataset'))


def save(manager: ocp.CheckpointManager, state, config: ml_collections.ConfigDict,
         info: labels.DatasetInfo, *, force: bool = False,
         metrics: Optional[dict] = None) -> bool:
  """Saves `state` at its step, with the config and dataset metadata beside it.

  `metrics` go to a manager whose `best_fn` ranks checkpoints by them. A write that fails (now
  or in the background: see `check_saves` and `wait`) is a one-line SaveError.
  """
  step = int(jax.device_get(state.step))
  dataset = {'num_classes': labels.num_classes_to_json(info.num_classes),
             'image_shape': list(info.image_shape),
             'class_names': list(info.class_names)}
  wait(manager)  # As Orbax does before a save; a failure of the previous one is reported as such.
  with save_errors(manager, step):
    saved = manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(json.loads(config.to_json())),
        dataset=ocp.args.JsonSave(dataset)), force=force, metrics=metrics)
  if saved:
    _SAVING[manager] = step
  return saved


def _restore_json(manager, step):
  restored = manager.restore(step, args=ocp.args.Composite(
      config=ocp.args.JsonRestore(), dataset=ocp.args.JsonRestore()))
  return with_defaults(restored['config']), restored['dataset']


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A saved config with the fields it predates filled in from configs/default.py.

  A checkpoint written before a field existed was trained as that field's default says.
  """
  config = default_config.get_config()

  def fill(node, values):
    for key, value in values.items():
      if isinstance(value, dict) and isinstance(node.get(key), ml_collections.ConfigDict):
        fill(node[key], value)
      else:
        with node.unlocked():
          node[key] = value
  fill(config, saved)
  return config


def check_compatible(manager: ocp.CheckpointManager, step: int,
                     config: ml_collections.ConfigDict, info: labels.DatasetInfo):
  """Raises a one-line error if the checkpoint at `step` was made by another model or data shape."""
  saved_config, saved_dataset = _restore_json(manager, step)
  where = os.path.join(manager.directory, str(step))
  for field in _MODEL_FIELDS:
    saved, current = saved_config[field].to_dict(), config[field].to_dict()

    def differs(k):
      if k in _SET_OR_UNSET_FIELDS:
        return bool(saved.get(k)) != bool(current.get(k))
      return saved.get(k) != current.get(k) and k not in _RESUMABLE_FIELDS
    diff = sorted(filter(differs, set(saved) | set(current)))
    if diff:
      changes = ', '.join(f'{field}.{k}: {saved.get(k)!r} -> {current.get(k)!r}' for k in diff)
      raise ValueError(f'Checkpoint {where} was made with a different model ({changes}); '
                       'use a new --workdir or the original config. Nothing was deleted.')
  for key in _OPTIMIZER_FIELDS:
    if saved_config[key] != config[key]:
      raise ValueError(f'Checkpoint {where} was made with {key}={saved_config[key]!r}: its '
                       f'optimiser states do not fit {key}={config[key]!r}; resume with '
                       f'--config.{key}={saved_config[key]} or use a new --workdir. Nothing was '
                       'deleted.')
  # As JSON stores them.
  for key, current in (('num_classes', labels.num_classes_to_json(info.num_classes)),
                       ('image_shape', list(info.image_shape))):
    if saved_dataset[key] != current:
      raise ValueError(f'Checkpoint {where} has {key}={saved_dataset[key]}, the data gives '
                       f'{current}; use a new --workdir or the original dataset. Nothing was deleted.')


def _flat(tree: dict, prefix: str = '') -> dict:
  return {k: v for key, value in tree.items() for k, v in (
      _flat(value, f'{prefix}{key}.').items() if isinstance(value, dict) else
      [(prefix + key, value)])}


def changed_settings(manager: ocp.CheckpointManager, step: int,
                     config: ml_collections.ConfigDict) -> list:
  """'field: saved -> current' for each setting changed since the checkpoint at `step` (model
  fields only where they may change, check_compatible; num_train_steps is expected to)."""
  saved = _flat(_restore_json(manager, step)[0].to_dict())
  current = _flat(json.loads(config.to_json()))  # As saved.
  resumable = {f'{field}.{k}' for field in _MODEL_FIELDS for k in _RESUMABLE_FIELDS}
  return [f'{k}: {saved.get(k)!r} -> {current.get(k)!r}' for k in sorted(set(saved) | set(current))
          if saved.get(k) != current.get(k) and k != 'num_train_steps'
          and (k in resumable or not k.startswith(_MODEL_FIELDS))]


def predated_fields(config: ml_collections.ConfigDict) -> dict:
  """The values of train-state fields newer than some checkpoints: what those runs used instead."""
  return {'augment_p': config.augment_probability}


def restore_state(manager: ocp.CheckpointManager, abstract_state, step: Optional[int] = None,
                  predated: Optional[dict] = None):
  """Restores the full train state (shardings taken from `abstract_state`).

  Fields that the checkpoint predates take their values from `predated` ({field: value}).
  """
  step = manager.latest_step() if step is None else step
  fields = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(abstract_state)}
  saved = ocp.PyTreeCheckpointHandler().metadata(manager.directory / str(step) / 'state').keys()
  missing = set(fields) - set(saved)
  item = {name: value for name, value in fields.items() if name not in missing}
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(item)))
  filled = {name: jax.device_put(np.asarray(predated[name], fields[name].dtype),
                                 fields[name].sharding) for name in missing}
  return abstract_state.replace(**restored['state'], **filled)


def _is_finite(tree) -> bool:
  return all(bool(jnp.isfinite(x).all())
             for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact))


def _read_problem(manager, step, abstract_state, config, info):
  """Why the checkpoint at `step` cannot be resumed from (None if it can) and its state."""
  try:
    _restore_json(manager, step)
  except Exception as e:  # pylint: disable=broad-except
    return f'unreadable ({describe_error(e)})', None
  check_compatible(manager, step, config, info)  # Another model is the user's error, not damage.
  try:
    state = restore_state(manager, abstract_state, step, predated_fields(config))
  except Exception as e:  # pylint: disable=broad-except
    return f'unreadable ({describe_error(e)})', None
  return (None if _is_finite(state) else 'not finite (NaN or inf values)'), state


def saved_items(directory, step: int) -> set:
  """The item names (subfolders) of checkpoint `step` in `directory`, listed without Orbax."""
  path = os.path.join(str(directory), str(step))
  return {d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))}


def item_handlers(tree_item: str) -> dict:
  """Orbax handlers of a checkpoint's items: one pytree (`tree_item`), the config and dataset."""
  return {tree_item: ocp.PyTreeCheckpointHandler(), 'config': ocp.JsonCheckpointHandler(),
          'dataset': ocp.JsonCheckpointHandler()}


def read_only_options() -> ocp.CheckpointManagerOptions:
  """Options of a manager that only restores (and so asks Orbax for no saves or deletions)."""
  return ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)


def _not_read_only_notice(record) -> bool:
  # Orbax warns 'Given directory is read only' for every such manager, which is how sampling,
  # evaluation and the judge open a directory on purpose.
  return not record.getMessage().startswith('Given directory is read only')


def install_quiet_hooks():
  """Keeps Orbax's read-only notices and TensorStore's late 'Event loop is closed' tracebacks
  off the console, for the whole program: the entry points call it (cli.run), once."""
  logger = logging.get_absl_logger()
  if _not_read_only_notice not in logger.filters:
    logger.addFilter(_not_read_only_notice)
  if not getattr(sys.unraisablehook, 'drops_closed_loop_callbacks', False):
    sys.unraisablehook = _drop_closed_loop_callbacks(sys.unraisablehook)


def _drop_closed_loop_callbacks(hook):
  """sys.unraisablehook without TensorStore's late callbacks of a failed restore: its other reads
  finish after Orbax closed the event loop and each printed an 'Event loop is closed' traceback."""
  def unraisable(info):
    if not (info.exc_type is RuntimeError and str(info.exc_value) == 'Event loop is closed'):
      hook(info)
  unraisable.drops_closed_loop_callbacks = True
  return unraisable


def _is_classifier(directory, step: int) -> bool:
  """Whether checkpoint `step` in `directory` is a judge's (cgan_jax.classifier), not a GAN run's."""
  items = saved_items(directory, step)
  return 'params' in items and 'state' not in items


def unreadable_dir(directory: str) -> str:
  """Where damaged checkpoints are moved: beside the manager's directory, never deleted."""
  return os.path.join(os.path.dirname(directory), 'unreadable_checkpoints')


def restore_newest_good(manager: ocp.CheckpointManager, abstract_state,
                        config: ml_collections.ConfigDict, info: labels.DatasetInfo):
  """The newest checkpoint's state that reads back complete and finite; None if there is none.

  Newer damaged checkpoints are moved to `unreadable_dir` (kept for inspection, and out of
  the way of the steps that training saves again); if no checkpoint is good nothing moves.
  """
  wait(manager)
  steps = sorted(manager.all_steps(), reverse=True)
  if steps and _is_classifier(manager.directory, steps[0]):
    raise ValueError(f'{manager.directory} holds a classifier (cgan_jax.classifier), not a GAN '
                     'run; use a new --workdir. Nothing was deleted.')
  problems = []
  for step in steps:
    problem, state = _read_problem(manager, step, abstract_state, config, info)
    if problem is None:
      break
    problems.append((step, problem))
  else:
    if problems:
      raise ValueError(f'No checkpoint in {manager.directory} can be resumed from (newest, step '
                       f'{problems[0][0]}: {problems[0][1]}); use a new --workdir. '
                       'Nothing was deleted.')
    return None
  aside = unreadable_dir(str(manager.directory))
  for bad_step, problem in problems:
    target = os.path.join(aside, str(bad_step))
    logging.warning('Checkpoint %s/%d is %s: moved it to %s; resuming from step %d.',
                    manager.directory, bad_step, problem, target, step)
    console.say(f'Warning: checkpoint {manager.directory}/{bad_step} is {problem}; moved it to '
                f'{target} and resuming from step {step}.')
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      suffix = 0
      while os.path.exists(target + (f'.{suffix}' if suffix else '')):
        suffix += 1
      os.rename(os.path.join(manager.directory, str(bad_step)),
                target + (f'.{suffix}' if suffix else ''))
  if problems:
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('checkpoint_moved_aside')
    manager.reload()
  return state


def restore_generator(workdir: str, step: Optional[int] = None, use_ema: bool = True):
  """Restores only G's parameters (no D, no optimiser state), with the run's config.

  Returns (g_params, config, dataset_metadata, step).
  """
  key = 'ema_g_params' if use_ema else 'g_params'
  params, config, dataset, step = restore_params(workdir, (key,), step)
  return params[key], config, dataset, step


def restore_params(workdir: str, keys, step: Optional[int] = None):
  """Restores only the TrainState fields `keys` (e.g. 'g_params', 'd_params') as host arrays.

  Without `step`, from the newest checkpoint that reads back (a warning names each newer one
  that does not); an unreadable `step` is a one-line error that lists the readable ones.
  Returns ({key: params}, config, dataset_metadata, step).
  """
  manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=read_only_options(),
                                 item_handlers=item_handlers('state'))
  try:
    steps = manager.all_steps()
    if not steps:
      run = run_around(workdir)
      raise FileNotFoundError(
          f'No checkpoint in {checkpoint_dir(workdir)}; ' + (
              f'{workdir} is inside the run {run}: pass --workdir={run}.' if run else
              f'train first with python -m cgan_jax.main --workdir={workdir}.'))
    if step is not None and step not in steps:
      raise ValueError(f'No checkpoint for step {step} in {checkpoint_dir(workdir)}; have '
                       f'{sorted(steps)}.')
    if _is_classifier(manager.directory, max(steps) if step is None else step):
      raise ValueError(f'{workdir} holds a classifier (cgan_jax.classifier), not a GAN run; '
                       'point --workdir at a python -m cgan_jax.main run.')
    problems = []
    for candidate in [step] if step is not None else sorted(steps, reverse=True):
      try:
        restored = _read_params(manager, candidate, keys)
      except Exception as e:  # pylint: disable=broad-except
        problems.append((candidate, describe_error(e)))
        continue
      for bad_step, problem in problems:
        console.say(f'Warning: checkpoint {manager.directory}/{bad_step} is unreadable '
                    f'({problem}); using step {candidate}, the newest readable one.',
                    file=sys.stderr)
      return (*restored, candidate)
    bad_step, problem = problems[0]
    if step is None:
      raise ValueError(f'No checkpoint in {manager.directory} can be read (newest, step '
                       f'{bad_step}: {problem}); train again in a new --workdir. Nothing was '
                       'deleted.')
    readable = [s for s in sorted(steps) if s != step and _readable(manager, s, keys)]
    fix = (f'the readable steps are {readable}; pass --step={readable[-1]} or leave --step out'
           if readable else 'no other checkpoint can be read either')
    raise ValueError(f'Checkpoint {manager.directory}/{step} is unreadable ({problem}); {fix}.')
  finally:
    manager.close()


def run_around(path: str) -> Optional[str]:
  """The run (a directory with checkpoints/<step>/) that `path` lies inside, such as its
  checkpoints/ or checkpoints/<step>/ folder, or None."""
  path = os.path.abspath(path)
  for _ in range(3):
    path = os.path.dirname(path)
    directory = checkpoint_dir(path)
    if os.path.isdir(directory) and any(d.isdigit() for d in os.listdir(directory)):
      return path
  return None


def _read_params(manager, step: int, keys):
  """({key: host arrays}, config, dataset) of checkpoint `step`; any error if it is damaged."""
  config, dataset = _restore_json(manager, step)
  metadata = manager.item_metadata(step)['state']
  item = {key: metadata[key] for key in keys}
  # Host numpy arrays: sampling runs anywhere, whatever mesh the run was trained on.
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=item, restore_args=restore_args, partial_restore=True)))
  return dict(restored['state']), config, dataset


def _readable(manager, step: int, keys) -> bool:
  try:
    _read_params(manager, step, keys)
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def describe_error(error: Exception, limit: int = 160) -> str:
  """'Type: first line of the message', shortened at a word boundary to about `limit` characters."""
  lines = str(error).strip().splitlines()
  text = f'{type(error).__name__}: {lines[0]}' if lines else type(error).__name__
  if len(text) > limit:
    text = text[:limit].rsplit(' ', 1)[0].rstrip(' ,:;') + ' ...'
  return text


class SaveError(RuntimeError):
  """A checkpoint that could not be written (a full disk, an I/O error): what failed, where, and
  what to do, in one line."""


_SAVING = weakref.WeakKeyDictionary()  # A manager's newest started save: the step that failed.
_DISK_FULL = ('No space left on device', 'Disk quota exceeded')


def wait(manager: ocp.CheckpointManager):
  """manager.wait_until_finished(); a background save that failed is one SaveError."""
  with save_errors(manager):
    manager.wait_until_finished()


def check_saves(manager: ocp.CheckpointManager):
  """Raises the SaveError of a background save that has failed by now, so that training stops
  at that save; never waits for one in progress. On several processes a failure surfaces at
  the next save or wait, where they all meet."""
  if jax.process_count() == 1 and not manager.is_saving_in_progress():
    wait(manager)


def _is_write_error(error: Exception) -> bool:
  """An operating-system error of a write (Python's, or TensorStore's in Orbax's ValueError)."""
  text = str(error)
  return (isinstance(error, OSError) or 'os_error_code=' in text or
          any(reason in text for reason in _DISK_FULL))


@contextlib.contextmanager
def save_errors(manager: ocp.CheckpointManager, step: Optional[int] = None):
  """Turns a failed checkpoint write inside into a one-line SaveError (other errors go on)."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    if not _is_write_error(e):
      raise
    in_path = re.search(r'/(\d+)\.orbax-checkpoint-tmp', str(e))
    failed = int(in_path[1]) if in_path else step if step is not None else _SAVING.get(manager)
    raise SaveError(save_failed_message(e, str(manager.directory), failed)) from None


def save_failed_message(error: Exception, directory: str, step: Optional[int]) -> str:
  """'Saving the checkpoint of step N in DIR failed: why (free space); newest kept; run again.'"""
  what = f'the checkpoint of step {step}' if step is not None else 'a checkpoint'
  return _failed_write_message(f'Saving {what} in {directory}', error, directory, step)


def _is_disk_full(error: Exception) -> bool:
  return (getattr(error, 'errno', None) in (errno.ENOSPC, errno.EDQUOT) or
          any(reason in str(error) for reason in _DISK_FULL))


def _failed_write_message(what: str, error: Exception, directory: str,
                          failed_step: Optional[int] = None) -> str:
  full = _is_disk_full(error)
  why = f'no space left on device ({_free_space(directory)} free)' if full else describe_error(error)
  kept = sorted(int(d) for d in (os.listdir(directory) if os.path.isdir(directory) else ())
                if d.isdigit() and int(d) != failed_step)
  newest = (f'the newest checkpoint, step {kept[-1]}, is kept' if kept else
            'no checkpoint was saved before it')
  fix = 'free some space' if full else 'fix that'
  return (f'{what} failed: {why}; {newest}. Nothing was deleted: {fix} and run the same command '
          f'to {"resume" if kept else "start again"}.')


@contextlib.contextmanager
def disk_full_errors(workdir: str):
  """Any write of a run into `workdir` (events, samples, checkpoints) that fails for want of
  space ends in one SaveError naming the file, the free space and the checkpoint kept."""
  try:
    yield
  except SaveError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if not _is_disk_full(e):
      raise
    path = getattr(e, 'filename', None) or re.search(
        re.escape(os.path.abspath(workdir)) + r'[^\s;:"\']*', str(e))
    path = path if isinstance(path, str) or path is None else path[0]
    raise SaveError(_failed_write_message(f'Writing {path or os.path.abspath(workdir)}', e,
                                          checkpoint_dir(workdir))) from None


def _free_space(path: str) -> str:
  """The free space of the file system of `path` (or of its nearest existing parent), as '3.1 GB'."""
  while path and not os.path.exists(path):
    path = os.path.dirname(path)
  try:
    free = shutil.disk_usage(path or '.').free
  except OSError:
    return 'unknown'
  for unit in ('bytes', 'KB', 'MB', 'GB'):
    if free < 1024 or unit == 'GB':
      return f'{free:.0f} {unit}' if unit == 'bytes' else f'{free:.1f} {unit}'
    free /= 1024
  return ''
