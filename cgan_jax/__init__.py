"""cgan_jax: class-conditional GANs in JAX/Flax."""

import os

# TensorFlow only feeds data here; its C++ start-up chatter is noise to a user.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
