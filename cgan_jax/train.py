"""The data-parallel GAN train step and the training loop around it."""

import contextlib
import functools
import os
import signal
import threading
import time
from typing import Any

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.metrics import tensorboard
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from cgan_jax import checkpoint
from cgan_jax import evaluate
from cgan_jax import input_pipeline
from cgan_jax import losses
from cgan_jax import models
from cgan_jax import sample
from cgan_jax import sharding
from cgan_jax.sharding import DATA_AXIS


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly: parameters, optimisers, RNG and step."""
  step: jax.Array
  rng: jax.Array  # Base key; step keys are fold_in(rng, step), so a restored run continues exactly.
  g_params: Any
  d_params: Any
  g_opt_state: Any
  d_opt_state: Any
  ema_g_params: Any  # Exponential moving average of g_params, used for sampling.
  d_stats: Any  # D's non-parameter variables (spectral-norm u and sigma); {} without them.


def create_optimizers(config: ml_collections.ConfigDict):
  """Adam for G and for D, each with its own learning rate and betas."""
  g_tx = optax.adam(config.g_learning_rate, b1=config.g_b1, b2=config.g_b2)
  d_tx = optax.adam(config.d_learning_rate, b1=config.d_b1, b2=config.d_b2)
  if config.model.freeze_embed:
    # Tables loaded from model.embed_init_file are named 'pretrained': they get no update.
    def labels(params):
      return jax.tree_util.tree_map_with_path(
          lambda path, _: 'frozen' if any(getattr(k, 'key', None) == 'pretrained' for k in path)
          else 'trained', params)
    g_tx, d_tx = (optax.multi_transform({'trained': tx, 'frozen': optax.set_to_zero()}, labels)
                  for tx in (g_tx, d_tx))
  return g_tx, d_tx


def init_state(rng, *, generator: nn.Module, discriminator: nn.Module, g_tx, d_tx,
               image_shape, latent_dim: int) -> TrainState:
  """Initialises parameters and optimiser states (pure: jit it, or eval_shape it)."""
  g_rng, d_rng, rng = jax.random.split(rng, 3)
  z = jnp.zeros((1, latent_dim), jnp.float32)
  num_attributes = len(input_pipeline.attribute_counts(generator.num_classes))
  labels = jnp.zeros((1, num_attributes) if num_attributes > 1 else (1,), jnp.int32)
  images = jnp.zeros((1, *image_shape), jnp.float32)
  g_params = generator.init(g_rng, z, labels, train=False)['params']
  d_variables = discriminator.init(d_rng, images, labels, train=False)
  d_params = d_variables['params']
  return TrainState(
      step=jnp.zeros((), jnp.int32), rng=rng, g_params=g_params, d_params=d_params,
      g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params), ema_g_params=g_params,
      d_stats=d_variables.get('batch_stats', {}))


def _example_keys(key, n_local: int):
  """One key per example, indexed by its position in the global batch.

  Noise and dropout therefore do not depend on how the batch is split over devices.
  """
  first = lax.axis_index(DATA_AXIS) * n_local
  return jax.vmap(jax.random.fold_in, (None, 0))(key, first + jnp.arange(n_local))


def make_train_step(config: ml_collections.ConfigDict, *, generator: nn.Module,
                    discriminator: nn.Module, g_tx, d_tx, num_classes):
  """Returns the per-device step `(state, batch) -> (state, metrics)` over the `data` axis.

  `num_classes` is an int, or one class count per attribute (labels (B, attributes)).
  """
  loss = losses.get_loss(config.loss)
  latent_dim = config.model.latent_dim
  d_phases = {'joint': (('real', 'fake'),), 'separate': (('real',), ('fake',))}
  if config.d_update not in d_phases:
    raise ValueError(f"Unknown d_update {config.d_update!r}; choose 'joint' or 'separate'.")

  def generate(g_params, key, n):
    """n generated images with random labels, plus D's dropout keys for them."""
    keys = jax.vmap(lambda k: jax.random.split(k, 3))(_example_keys(key, n))
    z = jax.vmap(lambda k: jax.random.normal(k, (latent_dim,)))(keys[:, 0])
    labels = jax.vmap(lambda k: jax.random.randint(k, label_shape, 0, max_label))(keys[:, 1])
    return generator.apply({'params': g_params}, z, labels, train=True), labels, keys[:, 2]

  acgan = discriminator.conditioning == 'acgan'
  counts = input_pipeline.attribute_counts(num_classes)
  # Generated labels: uniform over each attribute's classes, independently.
  label_shape, max_label = ((len(counts),), jnp.array(counts)) if len(counts) > 1 else ((), counts[0])

  def d_logits(d_params, d_stats, images, labels, dropout_keys):
    """D on a batch: logits, class logits (AC-GAN) and D's updated batch_stats."""
    # Each example's dropout mask comes from its own key: device-count invariant.
    logits, aux = discriminator.apply(
        {'params': d_params, 'batch_stats': d_stats}, images, labels, train=True,
        dropout_keys=dropout_keys, mutable=['batch_stats', 'intermediates'])
    class_logits = aux['intermediates']['class_logits'][0] if acgan else None
    return logits, class_logits, aux.get('batch_stats', {})

  def d_update(d_params, d_stats, d_opt_state, real_dropout, fakes, fake_labels, fake_dropout,
               images, labels, metrics):
    """One D update (one or two optimiser steps, per config.d_update)."""
    for phase in d_phases[config.d_update]:
      def d_loss_fn(params, phase=phase):
        terms, stats = {}, d_stats
        # D on one example, for the penalties.
        def logit_fn(image, label, key):  # pylint: disable=cell-var-from-loop
          return d_logits(params, d_stats, image[None], label[None], key[None])[0][0]
        if 'real' in phase:
          real_logits, real_classes, stats = d_logits(params, d_stats, images, labels, real_dropout)
          terms['d_loss_real'] = loss.d_real(real_logits).mean()
          terms['d_acc_real'] = (real_logits > 0).mean()
          if acgan:
            terms['d_loss_class_real'] = config.acgan_weight * losses.class_cross_entropy(
                real_classes, labels).mean()
          if config.r1_gamma:
            terms['d_loss_r1'] = 0.5 * config.r1_gamma * losses.r1_penalty(
                logit_fn, images, labels, real_dropout).mean()
        if 'fake' in phase:
          fake_logits, fake_classes, _ = d_logits(params, d_stats, fakes, fake_labels, fake_dropout)
          terms['d_loss_fake'] = loss.d_fake(fake_logits).mean()
          terms['d_acc_fake'] = (fake_logits < 0).mean()
          if acgan:
            terms['d_loss_class_fake'] = config.acgan_weight * losses.class_cross_entropy(
                fake_classes, fake_labels).mean()
          if config.gp_weight:
            gp_keys = jax.vmap(jax.random.fold_in, (0, None))(fake_dropout, 1)
            terms['d_loss_gp'] = config.gp_weight * losses.gradient_penalty(
                logit_fn, images, fakes, gp_keys, fake_labels, fake_dropout).mean()
        return sum(v for k, v in terms.items() if k.startswith('d_loss')), (terms, stats)
      grads, (terms, d_stats) = jax.grad(d_loss_fn, has_aux=True)(d_params)
      grads = lax.pmean(grads, DATA_AXIS)
      updates, d_opt_state = d_tx.update(grads, d_opt_state, d_params)
      d_params = optax.apply_updates(d_params, updates)
      metrics.update(terms)
      # Norm of the averaged gradient, one per D phase ('d_grad_norm' or '_real'/'_fake').
      suffix = '' if len(d_phases[config.d_update]) == 1 else '_' + phase[0]
      metrics['d_grad_norm' + suffix] = optax.tree.norm(grads)
    return d_params, d_stats, d_opt_state

  def step(state: TrainState, batch):
    images, labels = batch['image'], batch['label']
    n_real = images.shape[0]
    n_gen = (config.g_batch_size or config.batch_size) * n_real // config.batch_size
    key = jax.random.fold_in(state.rng, state.step)
    real_key, fake_key, g_key = jax.random.split(key, 3)

    d_params, d_stats, d_opt_state, metrics = (state.d_params, state.d_stats,
                                               state.d_opt_state, {})
    for i in range(config.d_steps):
      # The same real batch each time, with fresh fakes and dropout.
      rk, fk = (real_key, fake_key) if i == 0 else (jax.random.fold_in(real_key, i),
                                                    jax.random.fold_in(fake_key, i))
      fakes, fake_labels, fake_dropout = generate(state.g_params, fk, n_real)
      d_params, d_stats, d_opt_state = d_update(
          d_params, d_stats, d_opt_state, _example_keys(rk, n_real), lax.stop_gradient(fakes),
          fake_labels, fake_dropout, images, labels, metrics)

    def g_loss_fn(params):
      generated, gen_labels, gen_dropout = generate(params, g_key, n_gen)
      logits, classes, _ = d_logits(d_params, d_stats, generated, gen_labels, gen_dropout)
      terms = {'g_loss_adv': loss.g(logits).mean()}
      if acgan:
        terms['g_loss_class'] = config.acgan_weight * losses.class_cross_entropy(
            classes, gen_labels).mean()
      return sum(terms.values()), terms
    (g_loss, g_terms), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    grads = lax.pmean(grads, DATA_AXIS)
    updates, g_opt_state = g_tx.update(grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    # The average starts at G's initial weights; warming the decay up (as TF's
    # ExponentialMovingAverage with num_updates) keeps short runs from sampling near them.
    decay = jnp.minimum(config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema_g_params, g_params)

    if acgan:
      metrics.update(g_terms)
    metrics['g_loss'] = g_loss
    metrics['g_grad_norm'] = optax.tree.norm(grads)
    metrics['d_loss'] = metrics.get('d_loss_real', 0.0) + metrics.get('d_loss_fake', 0.0)
    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                              g_opt_state=g_opt_state, d_opt_state=d_opt_state, ema_g_params=ema,
                              d_stats=d_stats)
    return new_state, lax.pmean(metrics, DATA_AXIS)

  return guard_nonfinite(step)


def guard_nonfinite(step_fn):
  """Wraps a step so that a non-finite metric (loss, gradient norm) or new state is not applied.

  The state then stays as it was; metrics gain 'nonfinite' (1 for a dropped update) and
  'nonfinite/NAME' for each bad metric ('nonfinite/state' for parameters and optimiser state).
  Metrics are pmean'd, so every device takes the same decision.
  """
  def guarded(state, batch):
    new_state, metrics = step_fn(state, batch)
    bad = {f'nonfinite/{k}': ~jnp.isfinite(v).all() for k, v in metrics.items()}
    bad['nonfinite/state'] = ~jnp.all(jnp.stack([
        jnp.isfinite(x).all() for x in jax.tree.leaves(new_state)
        if jnp.issubdtype(x.dtype, jnp.inexact)]))
    dropped = jnp.any(jnp.stack(list(bad.values())))
    state = jax.tree.map(lambda old, new: jnp.where(dropped, old, new), state, new_state)
    metrics = {**metrics, **{k: v.astype(jnp.float32) for k, v in bad.items()},
               'nonfinite': dropped.astype(jnp.float32)}
    return state, metrics

  return guarded


def _mean_metrics(metrics):
  """Means over steps of stacked metrics; 'nonfinite' flags are 1 if any step set them."""
  reduced = {k: jnp.max(v, initial=0) if k.startswith('nonfinite') else jnp.mean(v)
             for k, v in metrics.items()}
  # The first dropped step (the appended 1 keeps argmax defined for a zero-step loop).
  reduced['nonfinite_index'] = jnp.argmax(jnp.append(metrics['nonfinite'], 1))
  return reduced


def make_sharded_step(step_fn, mesh):
  """jit(shard_map) of one step: state replicated and donated, the batch sharded on `data`."""
  sharded = jax.shard_map(step_fn, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                          out_specs=(P(), P()), check_vma=False)
  return jax.jit(sharded, donate_argnums=0)


def make_train_loop(step_fn, mesh, *, scan=None):
  """`(state, batches) -> (state, mean metrics)` for batches [steps, global_batch, ...] on `data`.

  By default the steps run as one lax.scan dispatch, except on XLA:CPU, which runs
  convolutions inside a loop ~30x slower (measured) and whose compile time would grow with
  an unrolled loop: there each step is one asynchronous dispatch of the compiled step, and
  the host only waits when the caller reads the metrics. 'nonfinite_index' is the first
  step whose update was dropped.
  """
  scan = jax.default_backend() != 'cpu' if scan is None else scan
  if scan:
    def loop(state, batches):
      state, metrics = lax.scan(step_fn, state, batches)
      return state, _mean_metrics(metrics)
    sharded = jax.shard_map(loop, mesh=mesh, in_specs=(P(), P(None, DATA_AXIS)),
                            out_specs=(P(), P()), check_vma=False)
    return jax.jit(sharded, donate_argnums=0)

  one_step = make_sharded_step(step_fn, mesh)
  mean = jax.jit(lambda metrics: _mean_metrics(jax.tree.map(lambda *v: jnp.stack(v), *metrics)))

  def dispatch_loop(state, batches):
    metrics = []
    for i in range(len(jax.tree.leaves(batches)[0])):
      state, step_metrics = one_step(state, jax.tree.map(lambda x, i=i: x[i], batches))
      metrics.append(step_metrics)
    return state, mean(metrics)
  return dispatch_loop


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
            'model.num_upsamples': 0, 'model.g_out_kernel': 1}


def check_config(config: ml_collections.ConfigDict):
  """A one-line error for a config value no run can use, before anything is built."""
  for name, minimum in _MINIMUM.items():
    value = functools.reduce(lambda c, key: c[key], name.split('.'), config)
    if value < minimum:
      raise ValueError(f'config.{name}={value} must be at least {minimum}.')
  if config.num_channels not in (0, 1, 3):
    raise ValueError(f'config.num_channels={config.num_channels} must be 1 (gray), 3 (RGB) or 0 '
                     "(the dataset's own).")
  if not 0 <= config.model.d_dropout < 1:
    raise ValueError(f'config.model.d_dropout={config.model.d_dropout} must be in [0, 1).')


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
  if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # Not ignored (a background job).
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_signal)
  try:
    yield received
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (resuming from the newest checkpoint in `workdir`) for `config.num_train_steps`."""
  check_config(config)
  checkpoint.check_writable(workdir)
  mesh = sharding.make_mesh()
  local_batch = sharding.local_batch_size(config.batch_size, mesh)
  sharding.local_batch_size(config.g_batch_size or config.batch_size, mesh, 'g_batch_size')
  info = input_pipeline.get_info(config)
  generator, discriminator = models.create_models(config, info.num_classes, info.image_shape)
  g_tx, d_tx = create_optimizers(config)
  init_fn = functools.partial(init_state, generator=generator, discriminator=discriminator,
                              g_tx=g_tx, d_tx=d_tx, image_shape=info.image_shape,
                              latent_dim=config.model.latent_dim)
  replicated = sharding.replicated(mesh)
  rng = jax.random.PRNGKey(config.seed)
  if config.on_nonfinite not in ('stop', 'restore'):
    raise ValueError(f"Unknown on_nonfinite {config.on_nonfinite!r}; choose 'stop' or 'restore'.")
  manager = checkpoint.create_manager(workdir, config)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                          jax.eval_shape(init_fn, rng))

  def resume():
    """The newest good checkpoint's state (damaged ones are set aside), else a fresh one."""
    state = checkpoint.restore_newest_good(manager, abstract, config, info)
    if state is None:
      return jax.jit(init_fn, out_shardings=replicated)(rng)
    return state

  def batches_from(start_step):
    ds, _ = input_pipeline.create_dataset(config, config.train_split, local_batch,
                                          start_batch=start_step)
    return input_pipeline.numpy_batches(ds, config)

  state = resume()
  start_step = int(state.step)
  is_chief = jax.process_index() == 0
  if start_step >= config.num_train_steps:
    if is_chief:
      print(f'{workdir} is trained to step {start_step} (config.num_train_steps='
            f'{config.num_train_steps}): nothing to do; raise --config.num_train_steps to train '
            'on.', flush=True)
    manager.close()
    return state
  if start_step and is_chief:
    print(f'Resuming from step {start_step} in {manager.directory}.', flush=True)
  batches = batches_from(start_step)
  step_fn = make_train_step(config, generator=generator, discriminator=discriminator,
                            g_tx=g_tx, d_tx=d_tx, num_classes=info.num_classes)
  train_loop = make_train_loop(step_fn, mesh)
  writer = tensorboard.SummaryWriter(workdir) if is_chief else None
  if writer and start_step == 0:
    writer.text('config', '<pre>' + str(config) + '</pre>', 0)
  evaluator = best_manager = None
  if config.eval_every_steps:
    if not config.eval_classifier_dir:
      raise ValueError('eval_every_steps needs --config.eval_classifier_dir, a judge trained with '
                       'python -m cgan_jax.classifier.')
    evaluator = evaluate.Evaluator(config.eval_classifier_dir, info.num_classes, info.image_shape,
                                   config.eval_num_per_class, data_config=config)
    best_manager = evaluate.create_best_manager(workdir, config)

  logging.info('Training %s on %s (%s, %s classes) over %d devices, steps %d..%d.',
               config.model.name, config.dataset, info.image_shape, info.num_classes,
               mesh.devices.size, start_step, config.num_train_steps)
  with _stop_signals() as stop_signals:
    restores = 0  # Since the last checkpoint; bounds on_nonfinite='restore' retries.
    step, t_last, step_last = start_step, time.time(), start_step
    while step < config.num_train_steps:
      k = min(config.steps_per_loop, _next_boundary(step, config) - step)
      local = [next(batches) for _ in range(k)]
      stacked = jax.tree.map(lambda *xs: np.stack(xs), *local)
      state, metrics = train_loop(state, sharding.to_global(stacked, mesh))
      # Waits for the chunk: a dropped (non-finite) update must never reach the saves below.
      if float(jax.device_get(metrics['nonfinite'])):
        flags = jax.device_get(metrics)
        bad_step = step + int(flags['nonfinite_index']) + 1
        names = ', '.join(name[len('nonfinite/'):] for name, bad in sorted(flags.items())
                          if name.startswith('nonfinite/') and bad)
        message = f'Step {bad_step}: non-finite {names}; the update was not applied'
        if config.on_nonfinite == 'stop' or restores >= _MAX_RESTORES:
          manager.wait_until_finished()
          raise NonFiniteError(
              f'{message} and nothing was saved (newest checkpoint: step {manager.latest_step()}, '
              'kept). Lower the learning rates, or set --config.on_nonfinite=restore to go on '
              'from the last checkpoint with other noise.')
        restores += 1
        state = resume()
        # Other noise from here on; the folded key is saved, so resuming stays exact.
        state = state.replace(rng=jax.device_put(jax.random.fold_in(state.rng, bad_step),
                                                 replicated))
        step = int(state.step)
        batches = batches_from(step)
        print(f'Warning: {message}; restored step {step} and going on with other noise '
              f'(retry {restores} of {_MAX_RESTORES}).', flush=True)
        continue
      step += k
      done = step >= config.num_train_steps

      if done or _due(step, config.log_every_steps):
        metrics = {k: v for k, v in jax.device_get(metrics).items() if not k.startswith('nonfinite')}
        elapsed = time.time() - t_last
        steps_per_sec = (step - step_last) / elapsed
        metrics['steps_per_sec'] = steps_per_sec
        metrics['images_per_sec'] = steps_per_sec * config.batch_size
        t_last, step_last = time.time(), step
        eta = (config.num_train_steps - step) / max(steps_per_sec, 1e-9)
        if is_chief:  # One log line per step for the whole run, not one per process.
          print(f'step {step}/{config.num_train_steps}  ' +
                '  '.join(f'{k}={float(v):.4g}' for k, v in sorted(metrics.items())) +
                f'  eta {eta:.0f}s', flush=True)
        if writer:
          for name, value in metrics.items():
            writer.scalar(name, float(value), step)
          writer.scalar('g_learning_rate', config.g_learning_rate, step)
          writer.scalar('d_learning_rate', config.d_learning_rate, step)
      if is_chief and (done or _due(step, config.sample_every_steps)):
        picture = _sample_grid(generator, state, config, info)
        path = os.path.join(workdir, 'samples', f'step_{step:07d}.png')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sample.write_png(path, picture)
        sample.write_png(os.path.join(workdir, 'samples.png'), picture)
        writer.image('samples', picture, step)
      if evaluator and (done or _due(step, config.eval_every_steps)):
        scores = evaluator(generator, jax.device_get(state.ema_g_params), config.model.latent_dim,
                           config.seed)
        per_class = scores.pop('cond_acc_per_class')
        if is_chief:
          print(f'eval {step}  ' + '  '.join(f'{k}={v:.4g}' for k, v in sorted(scores.items())),
                flush=True)
        if writer:
          for name, value in [*scores.items(), *(
              (f'cond_acc_class_{c}', a) for c, a in enumerate(per_class))]:
            writer.scalar(f'eval/{name}', value, step)
        if step not in best_manager.all_steps():  # Already there when a run resumes past it.
          checkpoint.save(best_manager, state, config, info, force=True, metrics=scores)
      if done or _due(step, config.checkpoint_every_steps):
        checkpoint.save(manager, state, config, info, force=done)
        restores = 0
      if writer:
        writer.flush()
      preempted = bool(stop_signals) or manager.reached_preemption(step)
      if jax.process_count() > 1:  # SIGTERM may reach the hosts at different steps.
        preempted = bool(multihost_utils.process_allgather(np.int32(preempted)).any())
      if preempted and not done:
        if step not in manager.all_steps():
          checkpoint.save(manager, state, config, info, force=True)
        manager.wait_until_finished()
        if is_chief:
          why = 'Interrupted' if signal.SIGINT in stop_signals else 'Preempted'
          print(f'{why}: saved a checkpoint at step {step} in {manager.directory}; run the same '
                'command to resume.', flush=True)
        break
  manager.wait_until_finished()
  manager.close()
  if best_manager:
    best_manager.wait_until_finished()
    best_manager.close()
  if writer:
    writer.close()
  return state


def _sample_grid(generator, state: TrainState, config: ml_collections.ConfigDict,
                 info: input_pipeline.DatasetInfo) -> np.ndarray:
  """A grid with one column per class (or attribute combination) from the EMA generator, always
  from the same noise."""
  params = jax.device_get(state.ema_g_params)
  labels = input_pipeline.default_labels(info.num_classes)
  x, _ = sample.class_samples(generator, params, labels, config.num_samples_per_class,
                              config.seed, config.model.latent_dim, info.num_classes)
  return sample.grid(x, num_columns=len(labels))
