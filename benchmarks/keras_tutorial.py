"""The Keras cDCGAN tutorial's training iteration as one tf.function, for side-by-side timing.

Same models (Embedding -> Dense label map, Conv2D / Conv2DTranspose, LeakyReLU 0.2,
dropout 0.4), Adam(2e-4, 0.5), binary cross-entropy, and the same iteration: D on a
real half-batch, D on a generated half-batch, then G through the frozen D on a full batch.
Run alone: python -m benchmarks.keras_tutorial [--steps N]; prints one JSON line. With
--serve '{"batch_size": ...}' it times iterations on request, for cgan_jax.benchmark --keras.
"""

import json
import resource
import statistics
import sys
import time

import tensorflow as tf
import keras
from keras import layers


def discriminator(image_shape, num_classes):
  label = keras.Input((1,))
  m = layers.Embedding(num_classes, 50)(label)
  m = layers.Dense(image_shape[0] * image_shape[1])(m)
  m = layers.Reshape((image_shape[0], image_shape[1], 1))(m)
  image = keras.Input(image_shape)
  x = layers.Concatenate()([image, m])
  for _ in range(2):
    x = layers.Conv2D(128, (3, 3), strides=(2, 2), padding='same')(x)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
  x = layers.Dropout(0.4)(layers.Flatten()(x))
  return keras.Model([image, label], layers.Dense(1, activation='sigmoid')(x))


def generator(image_shape, num_classes, latent_dim):
  h, w = image_shape[0] // 4, image_shape[1] // 4
  label = keras.Input((1,))
  m = layers.Embedding(num_classes, 50)(label)
  m = layers.Reshape((h, w, 1))(layers.Dense(h * w)(m))
  z = keras.Input((latent_dim,))
  x = layers.LeakyReLU(negative_slope=0.2)(layers.Dense(128 * h * w)(z))
  x = layers.Concatenate()([layers.Reshape((h, w, 128))(x), m])
  for _ in range(2):
    x = layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding='same')(x)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
  out = layers.Conv2D(image_shape[2], (7, 7), activation='tanh', padding='same')(x)
  return keras.Model([z, label], out)


def make_iteration(batch_size, g_batch_size, image_shape, num_classes, latent_dim):
  """Returns run(steps): `steps` tutorial iterations on a fixed synthetic real batch."""
  d, g = discriminator(image_shape, num_classes), generator(image_shape, num_classes, latent_dim)
  d_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
  g_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
  bce = keras.losses.BinaryCrossentropy()
  images = tf.random.uniform((batch_size, *image_shape), -1.0, 1.0)
  labels = tf.random.uniform((batch_size, 1), 0, num_classes, tf.int32)

  def fake_inputs(n):
    return [tf.random.normal((n, latent_dim)), tf.random.uniform((n, 1), 0, num_classes, tf.int32)]

  def d_step(x, y, target):
    with tf.GradientTape() as tape:
      loss = bce(tf.fill((x.shape[0], 1), target), d([x, y], training=True))
    d_opt.apply_gradients(zip(tape.gradient(loss, d.trainable_variables), d.trainable_variables))

  @tf.function(jit_compile=False)
  def iteration():
    d_step(images, labels, 1.0)
    z, y = fake_inputs(batch_size)
    d_step(g([z, y], training=False), y, 0.0)
    z, y = fake_inputs(g_batch_size)
    with tf.GradientTape() as tape:
      loss = bce(tf.ones((g_batch_size, 1)), d([g([z, y], training=True), y], training=True))
    g_opt.apply_gradients(zip(tape.gradient(loss, g.trainable_variables), g.trainable_variables))
    return loss

  def run(steps):
    for _ in range(steps):
      loss = iteration()
    return float(loss)
  return run


def serve(batch_size, g_batch_size, image_shape, num_classes, latent_dim):
  """Times `steps` iterations per line read from stdin; answers each with the seconds taken,
  and with its peak memory as JSON once stdin ends."""
  run = make_iteration(batch_size, g_batch_size, tuple(image_shape), num_classes, latent_dim)
  run(1)  # Traces the tf.function.
  print('ready', flush=True)
  for line in sys.stdin:
    t = time.perf_counter()
    run(int(line))
    print(time.perf_counter() - t, flush=True)
  print(json.dumps({'peak_host_memory_bytes':
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)


def main():
  if '--serve' in sys.argv:
    serve(**json.loads(sys.argv[sys.argv.index('--serve') + 1]))
    return
  steps = int(sys.argv[sys.argv.index('--steps') + 1]) if '--steps' in sys.argv else 10
  run = make_iteration(64, 128, (28, 28, 1), 10, 100)
  run(1)
  times = []
  for _ in range(5):
    t = time.perf_counter()
    run(steps)
    times.append(time.perf_counter() - t)
  per_sec = steps / statistics.median(times)
  print(json.dumps({'iterations_per_sec': per_sec, 'real_images_per_sec': 64 * per_sec,
                    'n_batch_images_per_sec': 128 * per_sec}))


if __name__ == '__main__':
  main()
