"""Nothing lost: SIGKILL and SIGTERM with exact resume, the non-finite guard, and bad input."""

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
from PIL import Image
import pytest
from jax.experimental.compilation_cache import compilation_cache as cc

from cgan_jax import checkpoint
from cgan_jax import input_pipeline
from cgan_jax import sample
from cgan_jax import sharding
from cgan_jax import train
from cgan_jax import train_step
from configs import digits
from tests.conftest import REPO, make_tiny_config

_STATE_KEYS = ('step', 'rng', 'g_params', 'd_params', 'g_opt_state', 'd_opt_state',
               'ema_g_params')


def _flat(config, prefix=''):
  out = {}
  for k, v in config.items():
    if hasattr(v, 'items'):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = v
  return out


def _config_flags(config):
  """--config.X=Y for every field where `config` differs from configs/digits.py."""
  base = _flat(digits.get_config())
  return [f'--config.{k}={v}' for k, v in _flat(config).items() if base.get(k) != v]


def _long_config():
  """The tiny config with a run too long to finish (it ends by signal), one step per dispatch."""
  config = make_tiny_config()
  config.num_train_steps = 10**6
  config.steps_per_loop = 1  # Compiles fastest; every run below shares this one program.
  config.log_every_steps = 5
  config.checkpoint_every_steps = 10
  config.sample_every_steps = 10**6
  config.keep_checkpoints = 1000
  return config


@pytest.fixture(scope='module', autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache for this module's processes: each program compiles once."""
  path = str(tmp_path_factory.mktemp('jit'))
  previous = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  cc.reset_cache()
  yield path
  jax.config.update('jax_compilation_cache_dir', previous[0])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', previous[1])
  cc.reset_cache()


def _launch(workdir, config, log, cache_dir):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')  # XLA_FLAGS: 8 devices (conftest).
  return subprocess.Popen(
      [sys.executable, '-u', '-m', 'cgan_jax.main', f'--workdir={workdir}',
       *_config_flags(config)], cwd=REPO, env=env, stdout=open(log, 'w'),
      stderr=subprocess.STDOUT)


def _wait_for(predicate, process, timeout=300):
  end = time.time() + timeout
  while not predicate():
    assert process.poll() is None, 'the run ended before it was signalled'
    assert time.time() < end, 'timed out'
    time.sleep(0.05)


def _steps(workdir):
  path = checkpoint.checkpoint_dir(workdir)
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def _listing(workdir):
  return sorted(os.listdir(checkpoint.checkpoint_dir(workdir)))


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory, compilation_cache):
  """A run SIGKILLed after its periodic checkpoint, then relaunched and SIGTERMed.

  Returns (workdir, killed_at, preempted_at, output of the SIGTERMed run).
  """
  root = tmp_path_factory.mktemp('interrupted')
  workdir, config = str(root / 'run'), _long_config()
  logs = [str(root / f'log{i}.txt') for i in range(2)]

  run = _launch(workdir, config, logs[0], compilation_cache)
  _wait_for(lambda: _steps(workdir), run)
  run.send_signal(signal.SIGKILL)  # No chance to save anything beyond the periodic checkpoint.
  run.wait()
  killed_at = _steps(workdir)[-1]

  run = _launch(workdir, config, logs[1], compilation_cache)
  _wait_for(lambda: any(l.startswith('step ') for l in open(logs[1])), run)
  run.send_signal(signal.SIGTERM)
  assert run.wait(timeout=120) == 0, open(logs[1]).read()[-3000:]
  out = open(logs[1]).read()
  preempted_at = int(out.split('Preempted: saved a checkpoint at step ')[1].split()[0])
  return workdir, killed_at, preempted_at, out


def test_sigkill_and_sigterm_resume_exactly(interrupted, tmp_path):
  workdir, killed_at, preempted_at, out = interrupted
  assert f'Resuming from step {killed_at} in {checkpoint.checkpoint_dir(workdir)}.' in out
  assert killed_at % 10 == 0 and killed_at < preempted_at
  assert killed_at in _steps(workdir) and _steps(workdir)[-1] == preempted_at

  # The SIGKILLed, resumed and SIGTERMed run equals a straight one, bit for bit.
  config = _long_config()
  config.num_train_steps = preempted_at
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  resumed, _, _, step = checkpoint.restore_params(workdir, _STATE_KEYS)
  assert step == preempted_at == int(straight.step)
  for key in _STATE_KEYS:
    for a, b in zip(jax.tree.leaves(resumed[key]), jax.tree.leaves(getattr(straight, key))):
      np.testing.assert_array_equal(a, np.asarray(b), err_msg=key)

  # The next launch resumes from the SIGTERM checkpoint.
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == preempted_at


def test_ctrl_c_saves_a_checkpoint_and_a_second_one_interrupts(tmp_path, monkeypatch, capsys):
  make_loop = train_step.make_train_loop
  calls = []

  def loop_that_presses_ctrl_c(*args, **kwargs):
    loop = make_loop(*args, **kwargs)

    def run(state, batches):
      calls.append(1)
      if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGINT)
      return loop(state, batches)
    return run

  monkeypatch.setattr(train_step, 'make_train_loop', loop_that_presses_ctrl_c)
  workdir = str(tmp_path)
  state = train.train_and_evaluate(_long_config(), workdir)
  assert int(state.step) == 3 and _steps(workdir) == [3]
  assert capsys.readouterr().out.splitlines()[-1] == (
      f'Interrupted: saved a checkpoint at step 3 in {checkpoint.checkpoint_dir(workdir)}; run '
      'the same command to resume.')
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Restored.

  # After the first Ctrl-C the second raises at once, as usual.
  calls.clear()
  original_kill = os.kill

  def kill_twice(pid, signum):
    original_kill(pid, signum)
    original_kill(pid, signum)
  monkeypatch.setattr(os, 'kill', kill_twice)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(_long_config(), workdir)
  assert _steps(workdir) == [3]  # Nothing saved, nothing lost.


def test_guard_keeps_the_state_on_a_nan_parameter():
  config = _long_config()
  _, init, step = train_step.build(config, (10,), (8, 8, 1))
  mesh = sharding.make_mesh()
  state = jax.device_get(jax.jit(init)(jax.random.PRNGKey(0)))  # Host copies: no shared buffers.
  leaves, treedef = jax.tree.flatten(state.d_params)
  leaves[0] = np.where(np.arange(leaves[0].shape[-1]) == 0, np.nan, leaves[0])
  state = jax.device_put(state.replace(d_params=jax.tree.unflatten(treedef, leaves)),
                         sharding.replicated(mesh))
  before = jax.device_get(state)
  rng = np.random.RandomState(0)
  batches = {'image': rng.uniform(-1, 1, (1, 16, 8, 8, 1)).astype(np.float32),
             'label': rng.randint(0, 10, (1, 16)).astype(np.int32)}
  after, metrics = train_step.make_train_loop(step, mesh)(state, sharding.to_global(batches, mesh))
  metrics = jax.device_get(metrics)
  assert metrics['nonfinite'] == 1 and metrics['nonfinite/d_loss'] == 1
  assert metrics['nonfinite/g_loss'] == 1 and int(metrics['nonfinite_index']) == 0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(after))):
    np.testing.assert_array_equal(a, b)  # Not applied: NaN where it was, step not advanced.


def _poison_first_dataset(monkeypatch, at):
  """The first dataset the trainer creates yields a NaN image batch as its `at`-th batch."""
  created = []
  original = input_pipeline.create_dataset

  class Poisoned:
    def __init__(self, ds):
      self.ds = ds

    def as_numpy_iterator(self):
      for i, batch in enumerate(self.ds.as_numpy_iterator()):
        yield {**batch, 'image': batch['image'] * np.nan} if i == at else batch

  def create_dataset(*args, **kwargs):
    ds, info = original(*args, **kwargs)
    created.append(ds)
    return (Poisoned(ds) if len(created) == 1 else ds), info
  monkeypatch.setattr(input_pipeline, 'create_dataset', create_dataset)


def test_nonfinite_step_restores_or_stops_and_never_saves(tmp_path, monkeypatch, capsys):
  config = _long_config()
  config.num_train_steps, config.checkpoint_every_steps = 6, 2
  config.on_nonfinite = 'restore'
  workdir = str(tmp_path)
  _poison_first_dataset(monkeypatch, at=3)  # Step 4.
  state = train.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert 'Warning: Step 4: non-finite d_grad_norm, d_loss, d_loss_real, g_grad_norm' in out
  assert 'restored step 2 and going on with other noise' in out
  assert int(state.step) == 6 and _steps(workdir) == [2, 4, 6]
  for step in _steps(workdir):  # Every checkpoint finite.
    params, _, _, _ = checkpoint.restore_params(workdir, ('g_params', 'd_params'), step)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))

  config.num_train_steps, config.on_nonfinite = 8, 'stop'
  _poison_first_dataset(monkeypatch, at=0)  # Step 7.
  before = _listing(workdir)
  with pytest.raises(train.NonFiniteError,
                     match=r'Step 7: non-finite .*d_loss.*nothing was saved \(newest checkpoint: '
                           r'step 6, kept\).*on_nonfinite=restore'):
    train.train_and_evaluate(config, workdir)
  assert _listing(workdir) == before


def test_nonfinite_step_between_outputs_is_caught_before_the_next_save(tmp_path, monkeypatch,
                                                                       capsys):
  config = _long_config()
  config.num_train_steps, config.checkpoint_every_steps, config.log_every_steps = 8, 4, 100
  config.on_nonfinite = 'restore'
  _poison_first_dataset(monkeypatch, at=5)  # Step 6: read one chunk behind, before step 8's save.
  state = train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert 'Warning: Step 6: non-finite' in out and 'restored step 4 and going on' in out
  assert int(state.step) == 8 and _steps(str(tmp_path)) == [4, 8]
  params, _, _, _ = checkpoint.restore_params(str(tmp_path), ('g_params', 'd_params'), 8)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def _folder_with_classes(root, num_classes):
  for c in range(num_classes):
    os.makedirs(root / 'train' / str(c))
    Image.fromarray(np.full((8, 8), 16 * c, np.uint8)).save(root / 'train' / str(c) / '0.png')
  return f'folder:{root}'


def test_bad_input_is_one_line_and_keeps_every_checkpoint(interrupted, tmp_path):
  workdir = interrupted[0]
  before = _listing(workdir)
  cases = [
      ({'model.g_width': 16}, ValueError,
       r'was made with a different model \(model.g_width: 8 -> 16\)'),
      ({'dataset': _folder_with_classes(tmp_path / 'eleven', 11)}, ValueError,
       r'has num_classes=10, the data gives 11; use a new --workdir or the original dataset'),
      ({'image_size': 16}, ValueError,
       r'has image_shape=\[8, 8, 1\], the data gives \[16, 16, 1\]'),
      ({'dataset': 'celeb_a'}, ValueError, "Dataset 'celeb_a' has no class label feature"),
      ({'dataset': 'nosuchset'}, ValueError, "Unknown dataset 'nosuchset'.*use a TFDS name"),
      ({'on_nonfinite': 'maybe'}, ValueError, "Unknown on_nonfinite 'maybe'; choose 'stop' or"),
      ({'lr_schedule': 'linear'}, ValueError, "was made with lr_schedule='constant': its "
       "optimiser states do not fit lr_schedule='linear'; resume with --config.lr_schedule=constant"),
      # A table from a file is another model than the run's own; the file is not read for it.
      ({'model.embed_init_file': str(tmp_path / 'missing.npy')}, ValueError,
       r"different model \(model.embed_init_file: None -> '.*missing.npy'\)"),
  ]
  for overrides, error, message in cases:
    config = _long_config()
    for field, value in overrides.items():
      parent, _, name = field.rpartition('.')
      (config[parent] if parent else config)[name] = value
    with pytest.raises(error, match=message) as e:
      train.train_and_evaluate(config, workdir)
    assert '\n' not in str(e.value)
    assert _listing(workdir) == before, overrides

  not_a_dir = os.path.join(checkpoint.checkpoint_dir(workdir), str(_steps(workdir)[0]),
                           '_CHECKPOINT_METADATA', 'run')  # Below a file: unwritable even as root.
  with pytest.raises(PermissionError, match='Cannot write to --workdir=.*; choose a directory'):
    train.train_and_evaluate(_long_config(), not_a_dir)
  for labels in ([10], [3, -1]):
    with pytest.raises(ValueError, match=r'Label (10|-1) is out of range: this model has 10'):
      sample.sample_to_file(workdir, str(tmp_path / 'x.png'), labels=labels)
  assert _listing(workdir) == before and not os.path.exists(tmp_path / 'x.png')


def test_damaged_newest_checkpoint_is_set_aside_not_deleted(interrupted, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  shutil.copytree(interrupted[0], workdir)
  *older, newest = _steps(workdir)

  def truncate(step):  # As by a full disk.
    state_dir = os.path.join(checkpoint.checkpoint_dir(workdir), str(step), 'state')
    for root, _, files in os.walk(state_dir):
      for f in files:
        if 'ocdbt' in root or f == '_METADATA':
          os.truncate(os.path.join(root, f), os.path.getsize(os.path.join(root, f)) // 2)
  truncate(newest)
  config = _long_config()
  config.num_train_steps = older[-1]
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == older[-1]
  aside = os.path.join(workdir, 'unreadable_checkpoints', str(newest))
  assert (f'Warning: checkpoint {checkpoint.checkpoint_dir(workdir)}/{newest} is unreadable'
          in capsys.readouterr().out)
  assert os.path.isdir(os.path.join(aside, 'state')) and _steps(workdir) == older

  # With no good checkpoint left, nothing moves and the run does not start over.
  for step in older:
    truncate(step)
  before = _listing(workdir)
  with pytest.raises(ValueError, match=r'No checkpoint in .* can be resumed from \(newest, step '
                                       f'{older[-1]}: unreadable'):
    train.train_and_evaluate(config, workdir)
  assert _listing(workdir) == before


@pytest.mark.parametrize('flags,message', [
    (['--config.model.widht=3'], "Error: unknown config field 'widht' in a --config.* flag; the "
     'fields are listed in configs/default.py.'),
    # Overrides of an explicit --config are applied later, while absl parses the flags.
    (['--config=configs/digits.py', '--config.num_steps=3'], "Error: unknown config field "
     "'num_steps' in a --config.* flag (did you mean \"num_train_steps\" instead of "
     '"num_steps"?); the fields are listed in configs/default.py.'),
    (['--config=configs/digts.py'], "Error: no config file 'configs/digts.py'; pass "
     '--config=PATH to one, such as cifar10.py, default.py, digits.py, fashion_mnist.py, mnist.py '
     f'in {os.path.join(REPO, "configs")}.'),
    (['--config', 'configs/digts.py', '--config.num_train_steps=3'], "Error: no config file "
     "'configs/digts.py'; pass --config=PATH to one, such as cifar10.py, default.py, digits.py, "
     f'fashion_mnist.py, mnist.py in {os.path.join(REPO, "configs")}.'),
])
def test_config_flag_mistakes_are_one_line(tmp_path, flags, message):
  result = subprocess.run(
      [sys.executable, '-m', 'cgan_jax.main', f'--workdir={tmp_path}', *flags],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == message


def test_runs_from_any_directory_into_runs_config_name(tmp_path):
  # configs/mnist.py imports configs.default: it must load with the repository elsewhere.
  result = subprocess.run(
      [sys.executable, '-m', 'cgan_jax.main', f'--config={REPO}/configs/mnist.py',
       '--config.dataset=no_such_dataset'], cwd=tmp_path, capture_output=True, text=True,
      timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith("Error: Unknown dataset 'no_such_dataset'")
  assert 'JAX process 0/1' in result.stderr  # main's INFO line; JAX's own ('xla_bridge') hidden.
  assert 'xla_bridge' not in result.stderr
  assert not os.path.exists(tmp_path / 'runs')  # The default --workdir, runs/mnist, made and
  # removed again: a failed start leaves no empty workdir behind.


@pytest.mark.parametrize('field,value,message', [
    ('batch_size', 0, 'config.batch_size=0 must be at least 1.'),
    ('num_channels', 4, 'config.num_channels=4 must be 1 (gray), 3 (RGB) or 0'),
    ('model.latent_dim', 0, 'config.model.latent_dim=0 must be at least 1.'),
    ('model.d_dropout', 1.0, 'config.model.d_dropout=1.0 must be in [0, 1).'),
    ('ema_decay', 1.5, 'config.ema_decay=1.5 must be in [0, 1).'),  # The average would diverge.
    ('g_b2', 1.0, 'config.g_b2=1.0 must be in [0, 1).'),
    ('d_learning_rate', -1e-4, 'config.d_learning_rate=-0.0001 must be at least 0.'),
    ('model.g_conditioning', 'nope', "Unknown model.g_conditioning 'nope'"),
    ('loss', 'hinj', "Unknown loss 'hinj'"),  # Was found after the dataset was prepared.
    ('d_update', 'both', "Unknown d_update 'both'; choose one of ['joint', 'separate']."),
    ('lr_schedule', 'cosine', "Unknown lr_schedule 'cosine'; choose 'constant' or 'linear'."),
    ('eval_every_steps', 5, 'eval_every_steps needs --config.eval_classifier_dir'),
    ('model.freeze_embed', True, 'model.freeze_embed keeps the tables read from '
     'model.embed_init_file fixed; set that file too'),  # It froze nothing.
])
def test_out_of_range_config_value_is_one_line_and_writes_nothing(tmp_path, field, value, message):
  config = make_tiny_config()
  *parents, leaf = field.split('.')
  functools.reduce(lambda c, key: c[key], parents, config)[leaf] = value
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match='^' + re.escape(message)):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def test_periodic_eval_on_several_hosts_is_refused(tmp_path, monkeypatch):
  """Each host reads only its share of the judge's real images: the scores would be wrong."""
  config = make_tiny_config()
  config.eval_every_steps, config.eval_classifier_dir = 2, str(tmp_path / 'judge')
  monkeypatch.setattr(train.jax, 'process_count', lambda: 2)
  with pytest.raises(ValueError, match=r'^eval_every_steps scores on one host; on several, leave '):
    train.check_config(config)
