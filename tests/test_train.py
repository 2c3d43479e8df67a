"""The sharded train step: device-count invariance, end-to-end runs, checkpoints and resume."""

import dataclasses
import itertools
import json
import os
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cgan_jax import checkpoint
from cgan_jax import sample
from cgan_jax import sharding
from cgan_jax import train
from cgan_jax import train_step
from tests.conftest import REPO
from tests.test_conditioning import train_steps


@pytest.mark.parametrize('d_update', ['joint', 'separate'])
def test_eight_devices_match_one(tiny_config, d_update):
  tiny_config.d_update = d_update
  tiny_config.g_batch_size = 32
  tiny_config.ema_decay = 0.999
  rng = np.random.RandomState(0)
  batches = {'image': rng.uniform(-1, 1, (3, 16, 8, 8, 1)).astype(np.float32),
             'label': rng.randint(0, 10, (3, 16)).astype(np.int32)}
  _, state8, metrics8 = train_steps(tiny_config, jax.devices()[:8], batches)
  initial, state1, metrics1 = train_steps(tiny_config, jax.devices()[:1], batches)
  assert int(state8.step) == 3
  for a, b in zip(jax.tree.leaves(state8), jax.tree.leaves(state1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for k in metrics1:
    np.testing.assert_allclose(metrics8[k], metrics1[k], rtol=1e-4, atol=1e-5)
  moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(initial.g_params),
                                               jax.tree.leaves(state1.g_params))]
  assert max(moved) > 0
  # The EMA's warm-up (decays 0.1, 0.18, 0.25 here) follows G, not its initial weights.
  def distance(a, b):
    return sum(float(np.sum((x - y)**2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert distance(state1.ema_g_params, state1.g_params) < distance(state1.ema_g_params,
                                                                  initial.g_params)


def test_scan_loop_matches_per_step_dispatch(tiny_config):
  # GPUs and TPUs run the steps as one lax.scan; CPU dispatches them one by one.
  batches = {'image': np.random.RandomState(0).uniform(-1, 1, (2, 16, 8, 8, 1)).astype(np.float32),
             'label': np.arange(32, dtype=np.int32).reshape(2, 16) % 10}
  _, scanned, scanned_metrics = train_steps(tiny_config, jax.devices()[:2], batches, scan=True)
  _, dispatched, metrics = train_steps(tiny_config, jax.devices()[:2], batches, scan=False)
  for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(dispatched)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert scanned_metrics.keys() == metrics.keys()
  for k in metrics:
    np.testing.assert_allclose(scanned_metrics[k], metrics[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('scan', [False, True])
def test_on_compiled_runs_once_between_compiling_and_the_first_step(tiny_config, scan):
  _, init, step = train_step.build(tiny_config, (10,), (8, 8, 1))
  mesh = sharding.make_mesh(jax.devices()[:1])
  state = train_step.initial_state(init, jax.random.PRNGKey(0), tiny_config,
                                   sharding.replicated(mesh))
  calls = []
  loop = train_step.make_train_loop(step, mesh, scan=scan,
                                    on_compiled=lambda: calls.append(int(state.step)))
  batches = sharding.to_global(
      {'image': np.zeros((2, 16, 8, 8, 1), np.float32), 'label': np.zeros((2, 16), np.int32)}, mesh)
  state, _ = loop(state, batches)
  state, _ = loop(state, batches)
  assert calls == [0] and int(state.step) == 4


def test_host_waits_for_a_chunk_only_after_queueing_the_next(tiny_config, tmp_path, monkeypatch):
  """No host round trip per chunk: its non-finite flag is read once the next chunk is queued, and
  every flag before anything is written (steps 4 and 8 here)."""
  events = []

  class Flag:  # Records when the trainer reads a chunk's non-finite flag.
    def __init__(self, value, chunk):
      self.value, self.chunk = value, chunk

    def __bool__(self):
      events.append(('read', self.chunk))
      return bool(self.value)

  make_train_loop = train_step.make_train_loop

  def recording_train_loop(step_fn, mesh, **kwargs):
    train_loop = make_train_loop(step_fn, mesh, **kwargs)

    def loop(state, batches):
      state, metrics = train_loop(state, batches)
      chunk = sum(kind == 'queue' for kind, _ in events)
      events.append(('queue', chunk))
      return state, {**metrics, 'nonfinite': Flag(metrics['nonfinite'], chunk)}
    return loop

  monkeypatch.setattr(train_step, 'make_train_loop', recording_train_loop)
  tiny_config.num_train_steps, tiny_config.steps_per_loop = 8, 1
  tiny_config.log_every_steps = tiny_config.sample_every_steps = 4
  tiny_config.checkpoint_every_steps = 4
  train.train_and_evaluate(tiny_config, str(tmp_path))
  assert events == [('queue', 0), ('queue', 1), ('read', 0), ('queue', 2), ('read', 1),
                    ('queue', 3), ('read', 2), ('read', 3),
                    ('queue', 4), ('queue', 5), ('read', 4), ('queue', 6), ('read', 5),
                    ('queue', 7), ('read', 6), ('read', 7)]


def test_train_resume_and_checkpoints(tiny_config, tmp_path, capsys):
  workdir = str(tmp_path)
  state = train.train_and_evaluate(tiny_config, workdir)
  assert int(state.step) == 4
  assert capsys.readouterr().out.splitlines()[-1] == (
      f'Done: step 4, checkpoint in {workdir}/checkpoints, samples in {workdir}/samples.png; '
      f'draw more with python -m cgan_jax.sample --workdir={workdir} --output=grid.png')
  # The same command again has nothing to do, and says so.
  again = train.train_and_evaluate(tiny_config, workdir)
  assert int(again.step) == 4
  assert capsys.readouterr().out.splitlines()[-1] == (
      f'{workdir} is trained to step 4 (config.num_train_steps=4): nothing to do; raise '
      '--config.num_train_steps to train on.')
  assert os.path.exists(os.path.join(workdir, 'samples.png'))
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))
  manager = checkpoint.create_manager(workdir, tiny_config)
  assert manager.all_steps() == [2, 4]

  # Training on to 6 steps resumes from step 4 and equals an uninterrupted 6-step run.
  tiny_config.num_train_steps = 6
  resumed = train.train_and_evaluate(tiny_config, workdir)
  out = capsys.readouterr().out
  assert f'Resuming from step 4 in {workdir}/checkpoints.' in out
  assert 'Settings changed' not in out  # num_train_steps is meant to change.
  straight = train.train_and_evaluate(tiny_config, str(tmp_path / 'straight'))
  assert int(resumed.step) == 6
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  params, config, dataset, step = checkpoint.restore_generator(workdir)
  assert step == 6 and dataset['num_classes'] == 10
  assert config.model.g_width == tiny_config.model.g_width
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(resumed.ema_g_params)):
    np.testing.assert_array_equal(a, b)


def test_resume_with_other_model_is_refused(tiny_config, tmp_path):
  train.train_and_evaluate(tiny_config, str(tmp_path))
  before = sorted(os.listdir(tmp_path / 'checkpoints'))
  tiny_config.model.g_width = 16
  with pytest.raises(ValueError, match='different model.*g_width'):
    train.train_and_evaluate(tiny_config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == before


def test_rates_leave_the_compile_out(tiny_config, tmp_path, capsys, caplog, monkeypatch):
  """The first dispatch compiles (here made to take 1,000 s): logged apart, not in the rate."""
  clock = itertools.chain([0, 1000], itertools.count(1001))  # Then a second per reading.
  monkeypatch.setattr(train, 'time', types.SimpleNamespace(time=lambda: next(clock)))
  caplog.set_level('INFO')
  tiny_config.num_train_steps, tiny_config.log_every_steps = 4, 4
  train.train_and_evaluate(tiny_config, str(tmp_path))
  assert 'Compiled the train step in 1000.0 s.' in caplog.text
  line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith('step 4/4'))
  assert 'steps_per_sec=4 ' in line  # 4 steps in the 1 s after the compile (was 4 in 1,001 s).


def test_resume_with_other_settings_says_which(tiny_config, tmp_path, capsys):
  train.train_and_evaluate(tiny_config, str(tmp_path))
  tiny_config.g_learning_rate, tiny_config.seed, tiny_config.num_train_steps = 1e-3, 5, 6
  train.train_and_evaluate(tiny_config, str(tmp_path))
  assert ('Settings changed since that checkpoint: g_learning_rate: 0.0002 -> 0.001, seed: 0 -> 5.'
          in capsys.readouterr().out.splitlines())


def test_resume_with_other_impl_dtype_or_dropout_is_allowed(tiny_config, tmp_path, capsys):
  """conv_impl and dtype change how the same parameters are computed, d_dropout how D is
  regularised: a checkpoint resumes with other values (and says so)."""
  train.train_and_evaluate(tiny_config, str(tmp_path))
  tiny_config.model.conv_impl, tiny_config.model.dtype, tiny_config.model.d_dropout = (
      'xla', 'bfloat16', 0.3)
  tiny_config.num_train_steps += 2
  assert int(train.train_and_evaluate(tiny_config, str(tmp_path)).step) == tiny_config.num_train_steps
  assert ("Settings changed since that checkpoint: model.conv_impl: 'auto' -> 'xla', "
          "model.d_dropout: 0.2 -> 0.3, model.dtype: 'float32' -> 'bfloat16'."
          in capsys.readouterr().out.splitlines())


def test_zero_intervals_mean_at_the_end_only(tiny_config, tmp_path):
  tiny_config.log_every_steps = tiny_config.sample_every_steps = 0
  tiny_config.checkpoint_every_steps = 0
  workdir = str(tmp_path)
  state = train.train_and_evaluate(tiny_config, workdir)
  assert int(state.step) == tiny_config.num_train_steps
  assert os.listdir(os.path.join(workdir, 'samples')) == [f'step_{tiny_config.num_train_steps:07d}.png']
  assert checkpoint.create_manager(workdir, tiny_config).all_steps() == [tiny_config.num_train_steps]


def test_readme_training_loop_snippet():
  readme = open(os.path.join(REPO, 'README.md')).read()
  snippet = readme.split('The step in your own loop')[1].split('```python\n')[1].split('```')[0]
  assert ', 30):' in snippet
  scope = {}
  exec(snippet.replace(', 30):', ', 2):'), scope)  # pylint: disable=exec-used
  assert int(scope['state'].step) == 20
  assert all(np.isfinite(float(v)) for v in jax.device_get(scope['metrics']).values())


def test_logged_metrics_are_means_over_the_interval(tiny_config, tmp_path, monkeypatch):
  logged = {}
  monkeypatch.setattr(train, '_log', lambda step, metrics, *_: logged.update({step: metrics}))
  tiny_config.steps_per_loop, tiny_config.num_train_steps = 1, 4
  tiny_config.log_every_steps = 1
  train.train_and_evaluate(tiny_config, str(tmp_path / 'every_step'))
  per_step = dict(logged)
  logged.clear()
  tiny_config.log_every_steps = 4
  train.train_and_evaluate(tiny_config, str(tmp_path / 'every_4'))
  assert sorted(per_step) == [1, 2, 3, 4] and sorted(logged) == [4]
  for name in ('d_loss', 'g_loss', 'd_acc_real'):
    mean = np.mean([per_step[s][name] for s in range(1, 5)])
    np.testing.assert_allclose(logged[4][name], mean, rtol=1e-5, err_msg=name)


def test_checkpoint_from_before_the_augment_p_field_resumes(tiny_config, tmp_path, capsys):
  """A checkpoint whose state predates a field (augment_p) resumes with the value its run used."""
  tiny_config.num_train_steps = 2
  state = train.train_and_evaluate(tiny_config, str(tmp_path / 'new'))
  dataset = checkpoint._restore_json(
      checkpoint.create_manager(str(tmp_path / 'new'), tiny_config), 2)[1]
  older = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
           if f.name != 'augment_p'}
  manager = checkpoint.create_manager(str(tmp_path / 'old'), tiny_config)
  manager.save(2, args=ocp.args.Composite(
      state=ocp.args.StandardSave(older), config=ocp.args.JsonSave(json.loads(tiny_config.to_json())),
      dataset=ocp.args.JsonSave(dataset)))
  manager.wait_until_finished()
  tiny_config.num_train_steps = 4
  tiny_config.augment, tiny_config.augment_probability = 'translation', 0.25
  resumed = train.train_and_evaluate(tiny_config, str(tmp_path / 'old'))
  assert 'Resuming from step 2' in capsys.readouterr().out
  assert int(resumed.step) == 4 and float(resumed.augment_p) == 0.25


def test_checkpoint_from_before_newer_fields_resumes_and_samples(tiny_config, tmp_path, capsys):
  """A checkpoint whose saved config lacks fields added since (their defaults then applied)."""
  workdir = str(tmp_path)
  tiny_config.num_train_steps = 2
  train.train_and_evaluate(tiny_config, workdir)
  newer = {'augment', 'augment_probability', 'on_collapse', 'eval_metrics'}
  saved_configs = []
  for root, _, files in os.walk(os.path.join(workdir, 'checkpoints', '2')):
    for name in files:
      path = os.path.join(root, name)
      try:
        with open(path) as f:
          saved = json.load(f)
      except (UnicodeDecodeError, ValueError):
        continue
      if isinstance(saved, dict) and 'num_train_steps' in saved:
        for key in newer:
          saved.pop(key, None)
        saved['model'].pop('hierarchical_z')
        with open(path, 'w') as f:
          json.dump(saved, f)
        saved_configs.append(path)
  assert saved_configs, 'no saved config found'
  tiny_config.num_train_steps = 4
  state = train.train_and_evaluate(tiny_config, workdir)
  assert int(state.step) == 4
  out = capsys.readouterr().out
  assert 'Resuming from step 2' in out and 'Settings changed' not in out
  assert 'different model' not in out
  sample.sample_to_file(workdir, str(tmp_path / 'grid.png'), step=2)  # The edited checkpoint.
  assert os.path.getsize(tmp_path / 'grid.png') > 0
