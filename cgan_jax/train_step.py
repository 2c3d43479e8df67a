"""The pure data-parallel GAN train step, (state, batch) -> (state, metrics), and its loop."""

import functools
from typing import Any, Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax
from jax.sharding import PartitionSpec as P

from cgan_jax import augment
from cgan_jax import conditioning
from cgan_jax import losses
from cgan_jax import models
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
  augment_p: jax.Array  # Chance of each augmentation transform; ADA adapts it (augment_target).


def check_lr_schedule(lr_schedule: str):
  """A one-line error for an unknown config.lr_schedule."""
  if lr_schedule not in ('constant', 'linear'):
    raise ValueError(f"Unknown lr_schedule {lr_schedule!r}; choose 'constant' or 'linear'.")


def learning_rate(config: ml_collections.ConfigDict, peak: float, updates_per_step: int = 1):
  """`peak`, constant or decayed linearly to 0 at num_train_steps (SNGAN's schedule)."""
  check_lr_schedule(config.lr_schedule)
  if config.lr_schedule == 'linear':
    return optax.linear_schedule(peak, 0.0, config.num_train_steps * updates_per_step)
  return peak


def create_optimizers(config: ml_collections.ConfigDict):
  """Adam for G and for D, each with its own learning rate (schedule) and betas."""
  g_tx = optax.adam(learning_rate(config, config.g_learning_rate), b1=config.g_b1, b2=config.g_b2)
  d_updates_per_step = config.d_steps * len(_D_PHASES.get(config.d_update, ()))
  d_tx = optax.adam(learning_rate(config, config.d_learning_rate, d_updates_per_step),
                    b1=config.d_b1, b2=config.d_b2)
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
               image_shape, latent_dim: int, augment_probability: float = 1.0) -> TrainState:
  """Initialises parameters and optimiser states (pure: jit it, or eval_shape it)."""
  g_rng, d_rng, rng = jax.random.split(rng, 3)
  z = jnp.zeros((1, latent_dim), jnp.float32)
  num_attributes = len(generator.num_classes)
  labels = jnp.zeros((1, num_attributes) if num_attributes > 1 else (1,), jnp.int32)
  images = jnp.zeros((1, *image_shape), jnp.float32)
  g_params = generator.init(g_rng, z, labels, train=False)['params']
  d_variables = discriminator.init(d_rng, images, labels, train=False)
  d_params = d_variables['params']
  return TrainState(
      step=jnp.zeros((), jnp.int32), rng=rng, g_params=g_params, d_params=d_params,
      g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params), ema_g_params=g_params,
      d_stats=d_variables.get('batch_stats', {}),
      augment_p=jnp.asarray(augment_probability, jnp.float32))


def initial_state(init_fn, rng, config: ml_collections.ConfigDict, sharding) -> TrainState:
  """A fresh run's state on `sharding`: `init_fn` jitted, then model.embed_init_file's tables."""
  state = jax.jit(init_fn, out_shardings=sharding)(rng)
  if not config.model.embed_init_file:
    return state
  g_params, d_params, ema_g_params = conditioning.load_pretrained_tables(
      (state.g_params, state.d_params, state.ema_g_params), config.model.embed_init_file)
  return state.replace(g_params=g_params, d_params=d_params, ema_g_params=ema_g_params)


def _example_keys(key, n_local: int):
  """One key per example, indexed by its position in the global batch.

  Noise and dropout therefore do not depend on how the batch is split over devices.
  """
  first = lax.axis_index(DATA_AXIS) * n_local
  return jax.vmap(jax.random.fold_in, (None, 0))(key, first + jnp.arange(n_local))


_AUGMENT_SALT = 0x5A17  # Folded into an example's dropout key for its augmentation key.

# config.d_update: D's real and fake terms in one optimiser step, or in two (the Keras tutorial).
_D_PHASES = {'joint': (('real', 'fake'),), 'separate': (('real',), ('fake',))}


def check_d_update(d_update: str):
  """A one-line error for an unknown config.d_update."""
  if d_update not in _D_PHASES:
    raise ValueError(f"Unknown d_update {d_update!r}; choose one of {sorted(_D_PHASES)}.")


class StepParts(NamedTuple):
  """What the step's pieces need besides the state and batch, fixed for a run."""
  config: ml_collections.ConfigDict
  generator: nn.Module
  discriminator: nn.Module
  g_tx: Any
  d_tx: Any
  loss: losses.GANLoss
  num_classes: tuple  # Class counts per attribute: generated labels are uniform over each.
  transforms: tuple = ()  # config.augment's transforms, applied to every image D sees.

  @property
  def acgan(self) -> bool:
    return self.discriminator.conditioning == 'acgan'


class Examples(NamedTuple):
  """A batch as D sees it: images, their labels, and one dropout key per example."""
  images: jax.Array
  labels: jax.Array
  dropout_keys: jax.Array


def generate(parts: StepParts, g_params, key, n: int) -> Examples:
  """n generated images with random labels, plus D's dropout keys for them."""
  keys = jax.vmap(lambda k: jax.random.split(k, 3))(_example_keys(key, n))
  z = jax.vmap(lambda k: jax.random.normal(k, (parts.config.model.latent_dim,)))(keys[:, 0])
  # Labels uniform over each attribute's classes, independently.
  counts = parts.num_classes
  shape, high = ((len(counts),), jnp.array(counts)) if len(counts) > 1 else ((), counts[0])
  labels = jax.vmap(lambda k: jax.random.randint(k, shape, 0, high))(keys[:, 1])
  images = parts.generator.apply({'params': g_params}, z, labels, train=True)
  return Examples(images, labels, keys[:, 2])


def d_logits(parts: StepParts, augment_p, d_params, d_stats, images, labels, dropout_keys):
  """D on a batch (each transform of config.augment applied with chance `augment_p`): logits,
  class logits (AC-GAN) and D's updated batch_stats."""
  # Each example's dropout mask and augmentation come from its own key: device-count invariant.
  if parts.transforms:
    augment_keys = jax.vmap(jax.random.fold_in, (0, None))(dropout_keys, _AUGMENT_SALT)
    images = augment.augment(images, augment_keys, parts.transforms, augment_p)
  logits, aux = parts.discriminator.apply(
      {'params': d_params, 'batch_stats': d_stats}, images, labels, train=True,
      dropout_keys=dropout_keys, mutable=['batch_stats', 'intermediates'])
  class_logits = aux['intermediates']['class_logits'][0] if parts.acgan else None
  return logits, class_logits, aux.get('batch_stats', {})


def d_loss(d_params, parts: StepParts, augment_p, d_stats, phase, real: Examples,
           fake: Examples):
  """D's loss on the terms of `phase` ('real', 'fake' or both): (loss, (terms, new d_stats)).

  Every image D sees passes through `d` (a batch) or `d_one` (one example, for the penalties).
  """
  config, loss, terms, stats = parts.config, parts.loss, {}, d_stats

  def d(images, labels, keys):
    return d_logits(parts, augment_p, d_params, d_stats, images, labels, keys)

  def d_one(image, label, key):
    return d(image[None], label[None], key[None])[0][0]

  if 'real' in phase:
    real_logits, real_classes, stats = d(*real)
    terms['d_loss_real'] = loss.d_real(real_logits).mean()
    terms['d_acc_real'] = (real_logits > 0).mean()
    if parts.acgan:
      terms['d_loss_class_real'] = config.acgan_weight * losses.class_cross_entropy(
          real_classes, real.labels).mean()
    if config.r1_gamma:
      terms['d_loss_r1'] = 0.5 * config.r1_gamma * losses.r1_penalty(d_one, *real).mean()
  if 'fake' in phase:
    fake_logits, fake_classes, _ = d(*fake)
    terms['d_loss_fake'] = loss.d_fake(fake_logits).mean()
    terms['d_acc_fake'] = (fake_logits < 0).mean()
    if parts.acgan:
      terms['d_loss_class_fake'] = config.acgan_weight * losses.class_cross_entropy(
          fake_classes, fake.labels).mean()
    if config.gp_weight:
      gp_keys = jax.vmap(jax.random.fold_in, (0, None))(fake.dropout_keys, 1)
      terms['d_loss_gp'] = config.gp_weight * losses.gradient_penalty(
          d_one, real.images, fake.images, gp_keys, fake.labels, fake.dropout_keys).mean()
  return sum(v for k, v in terms.items() if k.startswith('d_loss')), (terms, stats)


def d_update(parts: StepParts, augment_p, d_params, d_stats, d_opt_state, real: Examples,
             fake: Examples):
  """One D update (one or two optimiser steps, per config.d_update): the new D and its metrics."""
  phases, metrics = _D_PHASES[parts.config.d_update], {}
  for phase in phases:
    grads, (terms, d_stats) = jax.grad(d_loss, has_aux=True)(
        d_params, parts, augment_p, d_stats, phase, real, fake)
    grads = lax.pmean(grads, DATA_AXIS)
    updates, d_opt_state = parts.d_tx.update(grads, d_opt_state, d_params)
    d_params = optax.apply_updates(d_params, updates)
    metrics.update(terms)
    # Norm of the averaged gradient, one per D phase ('d_grad_norm' or '_real'/'_fake').
    suffix = '' if len(phases) == 1 else '_' + phase[0]
    metrics['d_grad_norm' + suffix] = optax.tree.norm(grads)
  return d_params, d_stats, d_opt_state, metrics


def g_loss(g_params, parts: StepParts, augment_p, d_params, d_stats, key, n: int):
  """G's loss on n generated images, judged by the updated D: (loss, terms)."""
  fake = generate(parts, g_params, key, n)
  logits, classes, _ = d_logits(parts, augment_p, d_params, d_stats, *fake)
  terms = {'g_loss_adv': parts.loss.g(logits).mean()}
  if parts.acgan:
    terms['g_loss_class'] = parts.config.acgan_weight * losses.class_cross_entropy(
        classes, fake.labels).mean()
  return sum(terms.values()), terms


def g_update(parts: StepParts, state: TrainState, augment_p, d_params, d_stats, key, n: int):
  """One G update against D's new parameters: G's new parameters, optimiser state and metrics."""
  (loss, terms), grads = jax.value_and_grad(g_loss, has_aux=True)(
      state.g_params, parts, augment_p, d_params, d_stats, key, n)
  grads = lax.pmean(grads, DATA_AXIS)
  updates, g_opt_state = parts.g_tx.update(grads, state.g_opt_state, state.g_params)
  g_params = optax.apply_updates(state.g_params, updates)
  metrics = dict(terms) if parts.acgan else {}
  metrics['g_loss'] = loss
  metrics['g_grad_norm'] = optax.tree.norm(grads)
  return g_params, g_opt_state, metrics


def ema_update(ema_g_params, g_params, step, ema_decay: float):
  """The EMA of G's weights after an update at `step`."""
  # The average starts at G's initial weights; warming the decay up (as TF's
  # ExponentialMovingAverage with num_updates) keeps short runs from sampling near them.
  decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema_g_params, g_params)


def train_step(parts: StepParts, state: TrainState, batch):
  """The per-device step: config.d_steps D updates, one G update, the EMA; metrics pmean'd."""
  config = parts.config
  real_images, real_labels = batch['image'], batch['label']
  n_real = real_images.shape[0]
  n_gen = (config.g_batch_size or config.batch_size) * n_real // config.batch_size
  key = jax.random.fold_in(state.rng, state.step)
  real_key, fake_key, g_key = jax.random.split(key, 3)
  # ADA's chance of augmenting is carried in the state; a fixed one is the config's.
  augment_p = state.augment_p if config.augment_target else config.augment_probability

  d_params, d_stats, d_opt_state, d_metrics = (state.d_params, state.d_stats, state.d_opt_state,
                                                {})
  for i in range(config.d_steps):
    # The same real batch each time, with fresh fakes and dropout.
    rk, fk = (real_key, fake_key) if i == 0 else (jax.random.fold_in(real_key, i),
                                                  jax.random.fold_in(fake_key, i))
    fake = generate(parts, state.g_params, fk, n_real)
    fake = fake._replace(images=lax.stop_gradient(fake.images))
    real = Examples(real_images, real_labels, _example_keys(rk, n_real))
    d_params, d_stats, d_opt_state, d_metrics = d_update(
        parts, augment_p, d_params, d_stats, d_opt_state, real, fake)

  g_params, g_opt_state, g_metrics = g_update(parts, state, augment_p, d_params, d_stats, g_key,
                                              n_gen)
  ema = ema_update(state.ema_g_params, g_params, state.step, config.ema_decay)
  metrics = {**d_metrics, **g_metrics}
  if config.augment_target:
    augment_p = adapt_augment_p(augment_p, lax.pmean(d_metrics['d_acc_real'], DATA_AXIS), config)
    metrics['augment_p'] = augment_p
  # What D minimises, as g_loss is what G minimises: class and penalty terms included.
  metrics['d_loss'] = sum(v for k, v in metrics.items() if k.startswith('d_loss_'))
  new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                            g_opt_state=g_opt_state, d_opt_state=d_opt_state, ema_g_params=ema,
                            d_stats=d_stats, augment_p=jnp.asarray(augment_p, jnp.float32))
  return new_state, lax.pmean(metrics, DATA_AXIS)


def adapt_augment_p(augment_p, d_acc_real, config: ml_collections.ConfigDict):
  """ADA's step (Karras et al. 2020): the chance of augmenting rises while D's sign on real
  images averages above config.augment_target (D overfits) and falls below it, by one batch's
  share of config.augment_ada_images per step."""
  sign_real = 2 * d_acc_real - 1  # The mean of sign(D(real)), as D's logits are never exactly 0.
  rate = config.batch_size / config.augment_ada_images
  return jnp.clip(augment_p + jnp.sign(sign_real - config.augment_target) * rate, 0.0, 1.0)


def make_train_step(config: ml_collections.ConfigDict, *, generator: nn.Module,
                    discriminator: nn.Module, g_tx, d_tx, num_classes: tuple):
  """Returns the per-device step `(state, batch) -> (state, metrics)` over the `data` axis.

  `num_classes` has one class count per attribute (labels (B,) for one, (B, attributes) else).
  """
  check_d_update(config.d_update)
  parts = StepParts(config=config, generator=generator, discriminator=discriminator, g_tx=g_tx,
                    d_tx=d_tx, loss=losses.get_loss(config.loss),
                    num_classes=num_classes,
                    transforms=augment.parse_policy(config.augment))
  return guard_nonfinite(functools.partial(train_step, parts))


class Trainer(NamedTuple):
  """The pieces a run is built from, made for one config and dataset."""
  generator: nn.Module
  init_fn: Callable  # rng -> a TrainState (pure, random tables: initial_state loads embed files).
  step_fn: Callable  # The per-device step (state, batch) -> (state, metrics).


def build(config: ml_collections.ConfigDict, num_classes: tuple, image_shape) -> Trainer:
  """The models, optimisers, state initialiser and per-device step for `config`."""
  generator, discriminator = models.create_models(config, num_classes, image_shape)
  g_tx, d_tx = create_optimizers(config)
  init_fn = functools.partial(
      init_state, generator=generator, discriminator=discriminator, g_tx=g_tx, d_tx=d_tx,
      image_shape=tuple(image_shape), latent_dim=config.model.latent_dim,
      augment_probability=config.augment_probability)
  step_fn = make_train_step(config, generator=generator, discriminator=discriminator, g_tx=g_tx,
                            d_tx=d_tx, num_classes=num_classes)
  return Trainer(generator=generator, init_fn=init_fn, step_fn=step_fn)


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
  # check_vma=False: the fast layers' custom VJPs give per-device weight gradients of replicated
  # weights (pmean'd in the step), a type JAX's varying-axes check rejects.
  sharded = jax.shard_map(step_fn, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                          out_specs=(P(), P()), check_vma=False)
  return jax.jit(sharded, donate_argnums=0)


def make_train_loop(step_fn, mesh, *, scan=None, on_compiled=None):
  """`(state, batches) -> (state, mean metrics)` for batches [steps, global_batch, ...] on `data`.

  By default the steps run as one lax.scan dispatch, except on XLA:CPU, which runs
  convolutions inside a loop many times slower than outside one, and whose compile time would
  grow with an unrolled loop: there each step is one asynchronous dispatch of the compiled step
  (synchronous after host_memory.keep_freed_memory), and the host only waits when the caller
  reads the metrics. 'nonfinite_index' is the first step whose update was dropped.
  `on_compiled()`, if given, runs once the first call has compiled and before anything is
  dispatched (host_memory.release_after_compile).
  """
  scan = jax.default_backend() != 'cpu' if scan is None else scan
  if scan:
    def loop(state, batches):
      state, metrics = lax.scan(step_fn, state, batches)
      return state, _mean_metrics(metrics)
    sharded = jax.shard_map(loop, mesh=mesh, in_specs=(P(), P(None, DATA_AXIS)),
                            out_specs=(P(), P()), check_vma=False)
    return _compile_first(jax.jit(sharded, donate_argnums=0), on_compiled)

  one_step = _compile_first(make_sharded_step(step_fn, mesh), on_compiled)
  mean = jax.jit(lambda metrics: _mean_metrics(jax.tree.map(lambda *v: jnp.stack(v), *metrics)))

  def dispatch_loop(state, batches):
    metrics = []
    for i in range(len(jax.tree.leaves(batches)[0])):
      state, step_metrics = one_step(state, jax.tree.map(lambda x, i=i: x[i], batches))
      metrics.append(step_metrics)
    return state, mean(metrics)
  return dispatch_loop


def _compile_first(jitted, on_compiled):
  """`jitted`, whose first call compiles ahead of time and runs `on_compiled()` before it
  dispatches (later calls find the executable in jit's cache)."""
  if on_compiled is None:
    return jitted
  compiled = False

  def call(*args):
    nonlocal compiled
    if not compiled:
      jitted.lower(*args).compile()
      on_compiled()
      compiled = True
    return jitted(*args)
  return call
