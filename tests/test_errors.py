"""Every mistake gets a one-line answer: config files, flags, checkpoints, disks and images."""

import errno
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest

from cgan_jax import checkpoint
from cgan_jax import cli
from cgan_jax import input_pipeline
from cgan_jax import train
from tests.conftest import REPO, make_tiny_config


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


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny run with checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  config = make_tiny_config()
  config.sample_every_steps = 0
  train.train_and_evaluate(config, workdir)
  return workdir


def _listing(workdir):
  return sorted(os.path.relpath(os.path.join(root, f), workdir)
                for root, _, files in os.walk(workdir) for f in files)


def _damage(workdir, step, how):
  """Truncates part of checkpoint `step`: its arrays' data, the state's metadata or the config."""
  where = os.path.join(checkpoint.checkpoint_dir(workdir), str(step))
  for root, _, files in os.walk(where):
    for f in files:
      path = os.path.join(root, f)
      if ((how == 'data' and os.path.basename(root) == 'd') or
          (how == 'metadata' and f == '_METADATA') or
          (how == 'config' and root.endswith('config') and f == 'metadata')):
        os.truncate(path, os.path.getsize(path) // 2)


@pytest.mark.parametrize('how', ['data', 'metadata', 'config'])
def test_sampling_reads_the_newest_readable_checkpoint(trained, tmp_path, capsys, how):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  _damage(workdir, 4, how)
  before = _listing(workdir)
  _, _, _, step = checkpoint.restore_generator(workdir)
  assert step == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(
      f'Warning: checkpoint {checkpoint.checkpoint_dir(workdir)}/4 is unreadable (')
  assert err[0].endswith('); using step 2, the newest readable one.')
  assert '...)' in err[0] or len(err[0]) < 300  # Long library messages end at a word, with '...'.

  with pytest.raises(ValueError, match=re.escape(
      f'Checkpoint {checkpoint.checkpoint_dir(workdir)}/4 is unreadable (') +
      r'.*\); the readable steps are \[2\]; pass --step=2 or leave --step out\.$'):
    checkpoint.restore_params(workdir, ('g_params', 'd_params'), 4)
  _damage(workdir, 2, how)
  with pytest.raises(ValueError, match=r'^No checkpoint in .* can be read \(newest, step 4: .*\); '
                                       'train again in a new --workdir. Nothing was deleted.$'):
    checkpoint.restore_generator(workdir)
  assert _listing(workdir) == before


def test_sample_cli_names_the_readable_steps_in_one_line(trained, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  _damage(workdir, 4, 'data')
  result = subprocess.run(
      [sys.executable, '-m', 'cgan_jax.sample', f'--workdir={workdir}', '--step=4',
       f'--output={tmp_path}/x.png'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()  # TensorStore's late callbacks print nothing.
  assert len(lines) == 1 and lines[0].startswith(f'Error: Checkpoint {checkpoint.checkpoint_dir(workdir)}/4 is unreadable')
  assert lines[0].endswith('the readable steps are [2]; pass --step=2 or leave --step out.')
  assert not os.path.exists(tmp_path / 'x.png')


def _fail_save_of_step(monkeypatch, failing_step, background):
  """Makes Orbax's save of `failing_step` fail for want of space: at once, or (`background`) in
  its background thread, reported when the manager is next waited for, as Orbax does."""
  real_save = ocp.CheckpointManager.save
  real_wait = ocp.CheckpointManager.wait_until_finished
  failed = []
  error = OSError(errno.ENOSPC, 'No space left on device')

  def save(self, step, *args, **kwargs):
    if step == failing_step and not failed:
      failed.append(step)
      if not background:
        raise error
      return True  # Nothing written, as when the background thread fails.
    return real_save(self, step, *args, **kwargs)

  def wait_until_finished(self):
    if failed and background and failed[0] is not None:
      failed[0] = None
      raise ValueError(f'RESOURCE_EXHAUSTED: Error writing local file "{self.directory}/'
                       f'{failing_step}.orbax-checkpoint-tmp/state/_sharding": No space left on '
                       "device [os_error_code='28']")
    return real_wait(self)
  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
  monkeypatch.setattr(ocp.CheckpointManager, 'wait_until_finished', wait_until_finished)


@pytest.mark.parametrize('background', [False, True])
def test_a_full_disk_stops_at_the_failed_save_and_keeps_the_newest_checkpoint(
    tmp_path, monkeypatch, capsys, background):
  config = make_tiny_config()
  config.num_train_steps, config.checkpoint_every_steps, config.sample_every_steps = 12, 4, 0
  workdir = str(tmp_path / 'run')
  _fail_save_of_step(monkeypatch, 8, background)
  with pytest.raises(checkpoint.SaveError, match='^' + re.escape(
      f'Saving the checkpoint of step 8 in {checkpoint.checkpoint_dir(workdir)} failed: no space '
      'left on device (') + r'[0-9.]+ [KMG]?B(ytes)? free\); ' + re.escape(
      'the newest checkpoint, step 4, is kept. Nothing was deleted: free some space and run the '
      'same command to resume.') + '$'):
    train.train_and_evaluate(config, workdir)
  logged = [int(line.split()[1].split('/')[0]) for line in capsys.readouterr().out.splitlines()
            if line.startswith('step ')]
  assert max(logged) == 8  # Stopped at the failed save (the background one: before step 10).
  assert sorted(os.listdir(checkpoint.checkpoint_dir(workdir))) == ['4']


def test_a_full_disk_elsewhere_in_the_workdir_is_one_line(tmp_path):
  workdir = str(tmp_path / 'run')
  os.makedirs(os.path.join(checkpoint.checkpoint_dir(workdir), '6'))
  events = os.path.join(workdir, 'events.out.tfevents.1')
  with pytest.raises(checkpoint.SaveError, match='^' + re.escape(
      f'Writing {events} failed: no space left on device (') + r'.* free\); ' + re.escape(
      'the newest checkpoint, step 6, is kept. Nothing was deleted: free some space and run the '
      'same command to resume.')):
    with checkpoint.disk_full_errors(workdir):
      raise RuntimeError(f'{events}; No space left on device\n\tFailed to flush 1 events')
  with pytest.raises(KeyError):  # Other errors go on as they are.
    with checkpoint.disk_full_errors(workdir):
      raise KeyError('x')


def test_library_reports_of_a_full_disk_are_dropped_others_kept():
  def record(path, message, level=logging.ERROR):
    return logging.LogRecord('absl', level, path, 1, message, (), None)
  orbax = os.path.join(os.path.dirname(ocp.__file__), 'future.py')
  assert not cli.not_a_failed_write_report(record(orbax, 'RESOURCE_EXHAUSTED: No space left on device'))
  assert cli.not_a_failed_write_report(record(orbax, 'RESOURCE_EXHAUSTED: out of memory'))
  assert cli.not_a_failed_write_report(record(cli.__file__, 'No space left on device'))


@pytest.fixture
def small_disk(tmp_path):
  """A 1 MiB tmpfs (skipped where mounting one is not allowed)."""
  path = tmp_path / 'disk'
  path.mkdir()
  if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1M', 'tmpfs',
                                          str(path)], capture_output=True).returncode:
    pytest.skip('cannot mount a tmpfs here')
  yield path
  subprocess.run(['umount', str(path)], check=False)


def test_a_real_full_disk_is_one_line_on_stderr(small_disk):
  workdir = small_disk / 'run'
  code, lines = _main(f'--workdir={workdir}', '--config.model.g_width=8', '--config.model.d_width=8',
                      '--config.model.latent_dim=8', '--config.model.embed_dim=4',
                      '--config.batch_size=16', '--config.num_train_steps=400',
                      '--config.steps_per_loop=2', '--config.checkpoint_every_steps=4',
                      '--config.keep_checkpoints=100', '--config.sample_every_steps=0',
                      '--verbosity=-1')
  assert code == 1
  assert len(lines) == 1 and re.match(r'Error: Saving the checkpoint of step \d+ in .* failed: no '
                                      r'space left on device \(.* free\); the newest checkpoint, '
                                      r'step \d+, is kept\.', lines[0]), lines
  kept = int(re.search(r'the newest checkpoint, step (\d+)', lines[0])[1])
  assert str(kept) in os.listdir(workdir / 'checkpoints')


def _poison_every_batch(monkeypatch):
  """Every image batch the trainer reads is NaN."""
  original = input_pipeline.create_dataset

  class Poisoned:
    def __init__(self, ds):
      self.ds = ds

    def as_numpy_iterator(self):
      for batch in self.ds.as_numpy_iterator():
        yield {**batch, 'image': batch['image'] * np.nan}

  def create_dataset(*args, **kwargs):
    ds, info = original(*args, **kwargs)
    return Poisoned(ds), info
  monkeypatch.setattr(input_pipeline, 'create_dataset', create_dataset)


@pytest.mark.parametrize('on_nonfinite,advice', [
    ('stop', ', or set --config.on_nonfinite=restore to go on from the last checkpoint with '
     'other noise.'),
    ('restore', ' (on_nonfinite=restore gave up after 3 restores without a new checkpoint).'),
])
def test_nonfinite_message_of_a_fresh_run(tmp_path, monkeypatch, on_nonfinite, advice):
  config = make_tiny_config()
  config.on_nonfinite = on_nonfinite
  _poison_every_batch(monkeypatch)
  with pytest.raises(train.NonFiniteError, match=r'^Step 1: non-finite .* and nothing was saved '
                     r'\(no checkpoint yet\)\. Lower the learning rates' + re.escape(advice) + '$'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))


def test_unwritable_directories_are_named_with_the_reason(tmp_path):
  (tmp_path / 'a_file').write_text('')
  cases = [
      (str(tmp_path / 'a_file'), f'--output={tmp_path}/a_file is a file; choose a directory.'),
      (str(tmp_path / 'a_file' / 'out'), f'Cannot write to --output={tmp_path}/a_file/out '
       f'({tmp_path}/a_file is a file); choose a directory you can write to.'),
      ('/proc', 'Cannot write to --output=/proc (no file can be created there); choose a '
       'directory you can write to.'),  # Not 'No such file or directory': /proc exists.
  ]
  for directory, message in cases:
    with pytest.raises(PermissionError) as e:
      checkpoint.check_writable(directory, '--output')
    assert str(e.value) == message


def test_a_failed_start_leaves_no_empty_directory_it_made(tmp_path):
  kept = tmp_path / 'kept'
  kept.mkdir()
  checkpoint.check_writable(str(kept), '--output')  # There before: stays.
  checkpoint.check_writable(str(tmp_path / 'new' / 'run'))
  checkpoint.check_writable(str(tmp_path / 'written'))
  os.makedirs(tmp_path / 'new' / 'run' / 'checkpoints')  # Empty, as Orbax leaves it.
  (tmp_path / 'written' / 'events').write_text('x')
  checkpoint.remove_made_dirs_left_empty()
  assert sorted(os.listdir(tmp_path)) == ['kept', 'written']
  assert os.listdir(tmp_path / 'written') == ['events']


def _image_folder(root, layout, classes=('cat', 'dog', 'eel'), ext='png'):
  """Four random 16x16 images per class, in PATH/<split>/<label>/ or PATH/<label>/."""
  rng = np.random.RandomState(0)
  for split in ('train', 'test') if layout == 'split' else ('',):
    for c in classes:
      os.makedirs(os.path.join(root, split, c))
      for i in range(4):
        Image.fromarray(rng.randint(0, 255, (16, 16)).astype(np.uint8)).save(
            os.path.join(root, split, c, f'{i}.{ext}'), quality=95)
  return f'folder:{root}'


def test_a_jpeg_cut_short_after_its_header_is_named(tmp_path):
  config = make_tiny_config()
  config.dataset = _image_folder(str(tmp_path / 'data'), 'flat', ext='jpg')
  bad = tmp_path / 'data' / 'dog' / '2.jpg'
  bad.write_bytes(bad.read_bytes()[:int(bad.stat().st_size * 0.7)])  # The header is intact.
  ds, _ = input_pipeline.create_dataset(config, 'train', 4, train=False)
  with pytest.raises(ValueError) as e:
    list(input_pipeline.numpy_batches(ds, config))
  assert str(e.value) == (f'{bad} is not a readable image (OSError: image file is truncated '
                          f'({str(e.value).split("truncated (")[1].split(")")[0]})); fix or remove it.')


def test_an_empty_folder_path_is_an_error(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)  # Not read as the working directory.
  _image_folder(str(tmp_path / 'data'), 'split')
  config = make_tiny_config()
  config.dataset = 'folder:'
  with pytest.raises(ValueError, match=r"^config.dataset='folder:' names no folder; give "
                                       r'--config.dataset=folder:PATH'):
    input_pipeline.get_info(config)


@pytest.mark.parametrize('layout', ['split', 'flat'])
def test_an_empty_class_folder_is_an_error_in_either_layout(tmp_path, layout):
  config = make_tiny_config()
  config.dataset = _image_folder(str(tmp_path), layout)
  os.makedirs(tmp_path / ('train' if layout == 'split' else '') / 'fox')
  folder = 'train/fox' if layout == 'split' else 'fox'
  with pytest.raises(ValueError, match=f"class folder '{folder}' has no PNG or JPEG images; add "
                                       'images or remove the folder.$'):
    input_pipeline.get_info(config)


def test_a_workdir_inside_a_run_names_the_run(trained):
  for inside in ('checkpoints', os.path.join('checkpoints', '4')):
    path = os.path.join(trained, inside)
    with pytest.raises(FileNotFoundError, match='^' + re.escape(
        f'No checkpoint in {path}/checkpoints; {path} is inside the run {trained}: pass '
        f'--workdir={trained}.') + '$'):
      checkpoint.restore_generator(path)


def test_unexpected_arguments_are_one_line():
  with pytest.raises(SystemExit, match=r"^Error: unexpected arguments \['runs/x'\]; the command "
                                       r'takes flags only \(--name=value\); pass --helpfull'):
    cli.no_arguments(['sample', 'runs/x'])
  cli.no_arguments(['sample'])


def test_training_into_a_runs_checkpoints_is_refused(trained):
  before = _listing(trained)
  path = os.path.join(trained, 'checkpoints')
  with pytest.raises(ValueError, match='^' + re.escape(
      f'--workdir={path} is inside the checkpoints of the run {trained}; pass --workdir='
      f'{trained} to resume it, or a directory of its own.') + '$'):
    train.train_and_evaluate(make_tiny_config(), path)
  assert _listing(trained) == before
  checkpoint.check_writable(os.path.join(trained, 'judge'))  # Beside the checkpoints: fine.
  os.rmdir(os.path.join(trained, 'judge'))


@pytest.mark.parametrize('given,meant', [('configs/mnist', 'configs/mnist.py'),
                                         ('mnist.py', 'configs/mnist.py'),
                                         ('mnist', 'configs/mnist.py')])
def test_a_config_file_named_almost_right_is_suggested(monkeypatch, given, meant):
  monkeypatch.chdir(REPO)
  with pytest.raises(cli.ConfigFileError, match='^' + re.escape(
      f"no config file '{given}' (did you mean --config={meant}?).") + '$'):
    cli.ConfigFileParser().parse(given)
