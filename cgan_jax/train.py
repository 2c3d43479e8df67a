"""The training loop: resume, train in chunks, log, sample, evaluate, checkpoint, stop on signals."""

import contextlib
import dataclasses
import os
import shlex
import signal
import threading
import time
from typing import Any, Optional

from absl import logging
import jax
import ml_collections
import numpy as np
from flax.metrics import tensorboard
from jax.experimental import multihost_utils

from cgan_jax import augment
from cgan_jax import checkpoint
from cgan_jax import collapse
from cgan_jax import cli
from cgan_jax import console
from cgan_jax import evaluate
from cgan_jax import host_memory
from cgan_jax import input_pipeline
from cgan_jax import labels as labels_lib
from cgan_jax import losses
from cgan_jax import models
from cgan_jax import plots
from cgan_jax import sample
from cgan_jax import sharding
from cgan_jax import train_step
from cgan_jax.train_step import TrainState


def _next_boundary(step: int, config: ml_collections.ConfigDict) -> int:
  """The next step at which something is logged, sampled, saved, or training ends."""
  intervals = (config.log_every_steps, config.sample_every_steps, config.checkpoint_every_steps,
               config.eval_every_steps)
  nexts = [(step // n + 1) * n for n in intervals if n > 0]
  return min(nexts + [config.num_train_steps])


def _due(step: int, every: int) -> bool:
  """Whether a periodic action (log, sample, eval, save) falls on `step`; every=0: never."""
  return every > 0 and step % every == 0


_MAX_RESTORES = 3  # on_nonfinite='restore' gives up after this many restores without a new save.


class NonFiniteError(RuntimeError):
  """A step produced NaN or inf and config.on_nonfinite says to stop."""


# Smallest value of each integer field; fields not listed are checked where they are used.
_MINIMUM = {'batch_size': 1, 'g_batch_size': 0, 'num_train_steps': 0, 'steps_per_loop': 1,
            'd_steps': 1, 'image_size': 0, 'shuffle_buffer': 1, 'keep_checkpoints': 1,
            'num_samples_per_class': 1, 'log_every_steps': 0, 'sample_every_steps': 0,
            'checkpoint_every_steps': 0, 'eval_every_steps': 0, 'model.latent_dim': 1,
            'model.embed_dim': 1, 'model.g_width': 1, 'model.d_width': 1,
            'model.num_upsamples': 0, 'model.g_out_kernel': 1, 'g_learning_rate': 0,
            'd_learning_rate': 0, 'augment_ada_images': 1}
_FRACTIONS = ('g_b1', 'd_b1', 'g_b2', 'd_b2', 'ema_decay', 'model.d_dropout',
              'augment_target')  # In [0, 1).


def check_config(config: ml_collections.ConfigDict):
  """A one-line error for a config value no run can use, before anything is built."""
  cli.check_ranges(config, _MINIMUM, _FRACTIONS)
  if config.num_channels not in (0, 1, 3):
    raise ValueError(f'config.num_channels={config.num_channels} must be 1 (gray), 3 (RGB) or 0 '
                     "(the dataset's own).")
  if config.on_nonfinite not in ('stop', 'restore'):
    raise ValueError(f"Unknown on_nonfinite {config.on_nonfinite!r}; choose 'stop' or 'restore'.")
  if config.on_collapse not in ('warn', 'stop'):
    raise ValueError(f"Unknown on_collapse {config.on_collapse!r}; choose 'warn' or 'stop'.")
  augment.parse_policy(config.augment)
  if not 0 <= config.augment_probability <= 1:
    raise ValueError(f'config.augment_probability={config.augment_probability} must be between '
                     '0 and 1.')
  if config.augment_target and not config.augment:
    raise ValueError('config.augment_target (ADA) adapts the chance of config.augment\'s '
                     "transforms; name them too, e.g. --config.augment='translation,cutout'.")
  if config.eval_every_steps and not config.eval_classifier_dir:
    raise ValueError('eval_every_steps needs --config.eval_classifier_dir, a judge trained with '
                     'python -m cgan_jax.classifier.')
  if config.eval_every_steps:
    evaluate.check_best_metric(config)
  if config.eval_every_steps and jax.process_count() > 1:
    raise ValueError('eval_every_steps scores on one host; on several, leave it 0 and score the '
                     'checkpoints afterwards with python -m cgan_jax.evaluate.')
  losses.get_loss(config.loss)
  train_step.check_d_update(config.d_update)
  train_step.check_lr_schedule(config.lr_schedule)
  models.check_names(config)


@contextlib.contextmanager
def _stop_signals():
  """Records SIGTERM (preemption, scancel, docker stop) and a first Ctrl-C while training.

  The run then ends after the current chunk with a checkpoint; a second Ctrl-C interrupts at once.
  """
  received = []
  if threading.current_thread() is not threading.main_thread():
    yield received
    return

  def on_signal(signum, _):
    received.append(signum)
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)

  previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_signal)}
  if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # Not ignored (background jobs).
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_signal)
  try:
    yield received
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


@dataclasses.dataclass
class _Run:
  """What a run is made of, built once by _setup: the data's facts, the model, the managers."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  info: labels_lib.DatasetInfo
  generator: Any
  init_fn: Any
  step_fn: Any
  manager: Any  # The checkpoints' Orbax manager.
  abstract: Any  # The state's shapes, dtypes and sharding, which a restore fills.
  is_chief: bool  # Process 0: it prints, writes events and samples.
  writer: Any = None  # TensorBoard events (process 0).
  evaluator: Any = None  # The judge, with config.eval_every_steps,
  best_manager: Any = None  # and the manager of the best checkpoint.

  @property
  def replicated(self):
    return sharding.replicated(self.mesh)

  @property
  def local_batch(self) -> int:
    return sharding.local_batch_size(self.config.batch_size, self.mesh)


@dataclasses.dataclass
class _Progress:
  """Where the loop is: its step, what is still to read and log, and the restores so far."""
  step: int
  batches: Any  # This host's batch iterator from `step` on.
  step_last: int  # The step of the last log line.
  # Set once the first dispatch returns: rates and ETAs leave the compile out.
  t_last: Optional[float] = None
  # (first step, metrics) of the chunks whose non-finite flags were not read.
  unchecked: list = dataclasses.field(default_factory=list)
  interval: tuple = ({}, 0)  # On-device sums of the metrics since the last log line, and steps.
  restores: int = 0  # Since the last checkpoint; bounds on_nonfinite='restore' retries.
  monitor: collapse.Monitor = dataclasses.field(default_factory=collapse.Monitor)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (resuming from the newest checkpoint in `workdir`) for `config.num_train_steps`."""
  run = _setup(config, workdir)
  state = _resume(run)
  start_step = int(state.step)
  if start_step >= config.num_train_steps:
    if run.is_chief:
      console.say(f'{workdir} is trained to step {start_step} (config.num_train_steps='
                  f'{config.num_train_steps}): nothing to do; raise --config.num_train_steps to '
                  'train on.')
    run.manager.close()
    return state
  if start_step and run.is_chief:
    console.say(f'Resuming from step {start_step} in {run.manager.directory}.')
    if changes := checkpoint.changed_settings(run.manager, start_step, config):
      # batch_size and seed also change which images come next: no longer the uninterrupted run.
      console.say(f'Settings changed since that checkpoint: {", ".join(changes)}.')
  progress = _Progress(step=start_step, batches=_batches_from(run, start_step),
                       step_last=start_step)
  _open_outputs(run, start_step)
  info = run.info
  logging.info('Training %s on %s (%s images of %s, %s classes) over %d devices, steps %d..%d.',
               config.model.name, config.dataset, info.num_examples or 'unknown number of',
               info.image_shape, labels_lib.num_classes_to_json(info.num_classes),
               run.mesh.devices.size, start_step,
               config.num_train_steps)
  with _stop_signals() as stop_signals:
    state = _train(run, state, progress, stop_signals)
  _close(run, progress.step)
  return state


def _setup(config: ml_collections.ConfigDict, workdir: str) -> _Run:
  """Checks the config and workdir, and builds the mesh, the models and the checkpoint manager."""
  check_config(config)
  checkpoint.check_writable(workdir)
  mesh = sharding.make_mesh()
  sharding.local_batch_size(config.batch_size, mesh)
  sharding.local_batch_size(config.g_batch_size or config.batch_size, mesh, 'g_batch_size')
  info = input_pipeline.get_info(config)
  generator, init_fn, step_fn = train_step.build(config, info.num_classes, info.image_shape)
  manager = checkpoint.create_manager(workdir, config)
  replicated = sharding.replicated(mesh)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                          jax.eval_shape(init_fn, jax.random.PRNGKey(config.seed)))
  return _Run(config=config, workdir=workdir, mesh=mesh, info=info, generator=generator,
              init_fn=init_fn, step_fn=step_fn, manager=manager, abstract=abstract,
              is_chief=jax.process_index() == 0)


def _resume(run: _Run) -> TrainState:
  """The newest good checkpoint's state (damaged ones are set aside), else a fresh one."""
  state = checkpoint.restore_newest_good(run.manager, run.abstract, run.config, run.info)
  if state is None:
    return train_step.initial_state(run.init_fn, jax.random.PRNGKey(run.config.seed), run.config,
                                    run.replicated)
  return state


def _batches_from(run: _Run, start_step: int):
  """This host's training batches from `start_step` on, as NumPy arrays."""
  ds, _ = input_pipeline.create_dataset(run.config, run.config.train_split, run.local_batch,
                                        start_batch=start_step)
  return input_pipeline.numpy_batches(ds, run.config)


def _open_outputs(run: _Run, start_step: int):
  """The TensorBoard writer (process 0) and, with config.eval_every_steps, the judge."""
  config = run.config
  run.writer = tensorboard.SummaryWriter(run.workdir) if run.is_chief else None
  if run.writer and start_step == 0:
    run.writer.text('config', '<pre>' + str(config) + '</pre>', 0)
  if config.eval_every_steps:
    run.evaluator = evaluate.Evaluator(config.eval_classifier_dir, run.info.num_classes,
                                       run.info.image_shape, config.eval_num_per_class,
                                       data_config=config)
    run.best_manager = evaluate.create_best_manager(run.workdir, config)


def _train(run: _Run, state: TrainState, progress: _Progress, stop_signals: list) -> TrainState:
  """Runs chunks of steps to config.num_train_steps, or until a stop signal; returns the state."""
  config, manager = run.config, run.manager
  train_loop = train_step.make_train_loop(run.step_fn, run.mesh,
                                          on_compiled=host_memory.release_after_compile(config))
  t_start = time.time()
  while progress.step < config.num_train_steps:
    checkpoint.check_saves(manager)  # A background save that failed stops the run here.
    boundary = _next_boundary(progress.step, config)
    k = min(config.steps_per_loop, boundary - progress.step)
    local = [next(progress.batches) for _ in range(k)]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *local)
    progress.monitor.observe_real(stacked['image'], stacked['label'])
    state, metrics = train_loop(state, sharding.to_global(stacked, run.mesh))
    if progress.t_last is None:  # The first call compiled the step before dispatching it.
      progress.t_last = time.time()
      logging.info('Compiled the train step in %.1f s.', progress.t_last - t_start)
    progress.unchecked.append((progress.step, metrics))
    progress.interval = (_add_metrics(progress.interval[0], metrics, k), progress.interval[1] + k)
    progress.step += k
    step, done = progress.step, progress.step >= config.num_train_steps
    preempted = bool(stop_signals) or manager.reached_preemption(step)
    if jax.process_count() > 1:  # SIGTERM may reach the hosts at different steps.
      preempted = bool(multihost_utils.process_allgather(np.int32(preempted)).any())
    writes = step == boundary or preempted
    # Flags are read one chunk behind, so that the device always has the newest chunk to run,
    # and all of them before anything is written: a dropped update must never reach a save.
    ready = progress.unchecked if writes else progress.unchecked[:-1]
    progress.unchecked = [] if writes else progress.unchecked[-1:]
    dropped = _first_dropped(ready)
    if dropped:
      state = _restore_after_nonfinite(run, progress, dropped)
      continue
    if not writes:
      continue
    _periodic_writes(run, state, progress, done)
    if preempted and not done:
      _save_on_stop(run, state, step, stop_signals)
      break
  return state


def _restore_after_nonfinite(run: _Run, progress: _Progress, dropped) -> TrainState:
  """After a dropped (non-finite) update: NonFiniteError, or (config.on_nonfinite='restore')
  the last checkpoint's state with other noise, and the loop's progress set back to it."""
  progress.unchecked = []
  bad_step, message = _nonfinite_report(jax.device_get(dropped[1]), dropped[0])
  if run.config.on_nonfinite == 'stop' or progress.restores >= _MAX_RESTORES:
    checkpoint.wait(run.manager)
    newest = run.manager.latest_step()
    kept = 'no checkpoint yet' if newest is None else f'newest checkpoint: step {newest}, kept'
    raise NonFiniteError(
        f'{message} and nothing was saved ({kept}). Lower the learning rates' + (
            ', or set --config.on_nonfinite=restore to go on from the last checkpoint '
            'with other noise.' if run.config.on_nonfinite == 'stop' else
            f' (on_nonfinite=restore gave up after {progress.restores} restores without a new '
            'checkpoint).'))
  progress.restores += 1
  state = _resume(run)
  # Other noise from here on; the folded key is saved, so resuming stays exact.
  state = state.replace(rng=jax.device_put(jax.random.fold_in(state.rng, bad_step),
                                           run.replicated))
  progress.step = int(state.step)
  progress.batches = _batches_from(run, progress.step)
  progress.interval = ({}, 0)
  console.say(f'Warning: {message}; restored step {progress.step} and going on with other noise '
              f'(retry {progress.restores} of {_MAX_RESTORES}).')
  return state


def _periodic_writes(run: _Run, state: TrainState, progress: _Progress, done: bool):
  """What falls due at this step (or at the end): the log line, samples, scores, checkpoints."""
  config, step = run.config, progress.step
  if done or _due(step, config.log_every_steps):
    sums, now = jax.device_get(progress.interval[0]), time.time()
    means = {name: total / progress.interval[1] for name, total in sums.items()}
    _log(step, means, (step - progress.step_last) / (now - progress.t_last), config, run.writer,
         run.is_chief)
    progress.interval = ({}, 0)
    progress.t_last, progress.step_last = now, step
    # The means are the same on every host, so every host takes the same decision.
    _on_collapse(run, state, step, progress.monitor.observe_metrics(step, means), may_stop=True)
  if run.is_chief and (done or _due(step, config.sample_every_steps)):
    images, labels = _grid_samples(run.generator, state, config, run.info)
    columns = len(labels) // config.num_samples_per_class
    _write_samples(run.workdir, step, plots.grid(images, num_columns=columns), run.writer)
    diagnosis = progress.monitor.observe_samples(step, images.astype(np.float32) / 127.5 - 1, labels)
    # Samples are drawn on process 0 alone: only a single-process run can stop on them.
    _on_collapse(run, state, step, diagnosis, may_stop=jax.process_count() == 1)
  if run.evaluator and (done or _due(step, config.eval_every_steps)):
    scores = _evaluate(run.evaluator, run.generator, state, config, step, run.writer,
                       run.is_chief)
    if step not in run.best_manager.all_steps():  # Already there when a run resumes past it.
      checkpoint.save(run.best_manager, state, config, run.info, force=True, metrics=scores)
  if done or _due(step, config.checkpoint_every_steps):
    checkpoint.save(run.manager, state, config, run.info, force=done)
    progress.restores = 0
  if run.writer:
    run.writer.flush()


def _save_on_stop(run: _Run, state: TrainState, step: int, stop_signals: list):
  """A checkpoint at `step` after a stop signal or preemption notice, and a line saying so."""
  if step not in run.manager.all_steps():
    checkpoint.save(run.manager, state, run.config, run.info, force=True)
  checkpoint.wait(run.manager)
  if run.is_chief:
    why = 'Interrupted' if signal.SIGINT in stop_signals else 'Preempted'
    console.say(f'{why}: saved a checkpoint at step {step} in {run.manager.directory}; run the '
                'same command to resume.')


def _close(run: _Run, step: int):
  """Waits for the saves, says where the results are (when trained through), and closes."""
  checkpoint.wait(run.manager)
  if run.is_chief and step >= run.config.num_train_steps:
    workdir = run.workdir
    console.say(f'Done: step {step}, checkpoint in {os.path.join(workdir, "checkpoints")}, '
                f'samples in {os.path.join(workdir, "samples.png")}; draw more with python -m '
                f'cgan_jax.sample --workdir={shlex.quote(workdir)} --output=grid.png')
  run.manager.close()
  if run.best_manager:
    checkpoint.wait(run.best_manager)
    run.best_manager.close()
  if run.writer:
    run.writer.close()


def _add_metrics(sums: dict, metrics: dict, num_steps: int) -> dict:
  """`sums` plus a chunk's mean metrics (its non-finite flags aside) times its `num_steps`, on
  the device: a log line shows the means since the previous one, not the last chunk's."""
  metrics = {name: value for name, value in metrics.items() if not name.startswith('nonfinite')}
  return _weighted_add(sums, metrics, num_steps)


_weighted_add = jax.jit(lambda sums, metrics, n: {
    name: sums.get(name, 0.0) + n * value for name, value in metrics.items()})


def _first_dropped(chunks: list):
  """The first of `chunks`, (first step, metrics) pairs, whose update was dropped (non-finite),
  or None; waits for them to finish."""
  flags = jax.device_get([metrics['nonfinite'] for _, metrics in chunks])
  return next((chunk for chunk, flag in zip(chunks, flags) if flag), None)


def _nonfinite_report(metrics: dict, step: int):
  """(the step whose update was dropped, a message naming the values that went bad)."""
  bad_step = step + int(metrics['nonfinite_index']) + 1
  names = ', '.join(name[len('nonfinite/'):] for name, bad in sorted(metrics.items())
                    if name.startswith('nonfinite/') and bad)
  return bad_step, f'Step {bad_step}: non-finite {names}; the update was not applied'


def _log(step: int, metrics: dict, steps_per_sec: float, config: ml_collections.ConfigDict,
         writer, is_chief: bool):
  """One progress line (from process 0 only, for the whole run) and the scalars' events."""
  metrics = dict(metrics)
  metrics['steps_per_sec'] = steps_per_sec
  metrics['images_per_sec'] = steps_per_sec * config.batch_size
  eta = (config.num_train_steps - step) / max(steps_per_sec, 1e-9)
  if is_chief:
    console.say(f'step {step}/{config.num_train_steps}  ' +
                '  '.join(f'{k}={float(v):.4g}' for k, v in sorted(metrics.items())) +
                f'  eta {eta:.0f}s')
  if writer:
    for name, value in metrics.items():
      writer.scalar(name, float(value), step)
    for name in ('g_learning_rate', 'd_learning_rate'):
      rate = train_step.learning_rate(config, config[name])
      writer.scalar(name, float(rate(step) if callable(rate) else rate), step)


def _write_samples(workdir: str, step: int, picture: np.ndarray, writer):
  """samples/step_NNNNNNN.png, samples.png (the newest) and the grid's image event."""
  path = os.path.join(workdir, 'samples', f'step_{step:07d}.png')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  plots.write_image(path, picture)
  plots.write_image(os.path.join(workdir, 'samples.png'), picture)
  writer.image('samples', picture, step)


def _evaluate(evaluator, generator, state: TrainState, config: ml_collections.ConfigDict,
              step: int, writer, is_chief: bool) -> dict:
  """The judge's scores of the EMA generator, printed and written; per-class accuracies apart."""
  scores = evaluator(generator, jax.device_get(state.ema_g_params), config.model.latent_dim,
                     config.seed)
  per_class = scores.pop('cond_acc_per_class')
  if is_chief:
    console.say(f'eval {step}  ' + '  '.join(f'{k}={v:.4g}' for k, v in sorted(scores.items())))
  if writer:
    for name, value in [*scores.items(), *(
        (f'cond_acc_class_{c}', a) for c, a in enumerate(per_class) if a is not None)]:
      writer.scalar(f'eval/{name}', value, step)
  return scores


def _grid_samples(generator, state: TrainState, config: ml_collections.ConfigDict,
                  info: labels_lib.DatasetInfo):
  """The sample grid's images (uint8, row by row, one column per class or attribute combination)
  and labels, from the EMA generator, always from the same noise."""
  params = jax.device_get(state.ema_g_params)
  labels = labels_lib.default_labels(info.num_classes)
  return sample.class_samples(generator, params, labels, config.num_samples_per_class,
                              config.seed, config.model.latent_dim, info.num_classes)


def _on_collapse(run: _Run, state: TrainState, step: int, diagnosis: Optional[str],
                 may_stop: bool):
  """A collapse's one line: a warning, or (config.on_collapse='stop') a saved checkpoint and
  collapse.CollapseError."""
  if diagnosis is None:
    return
  if run.config.on_collapse == 'stop' and may_stop:
    if step not in run.manager.all_steps():
      checkpoint.save(run.manager, state, run.config, run.info, force=True)
    checkpoint.wait(run.manager)
    raise collapse.CollapseError(f'{diagnosis} Stopped with a checkpoint at step {step} '
                                 '(config.on_collapse=stop).')
  if run.is_chief:
    console.say(f'Warning: {diagnosis}')
