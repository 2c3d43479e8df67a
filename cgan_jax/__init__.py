"""cgan_jax: class-conditional GANs in JAX/Flax."""

import os

from cgan_jax import host_memory

# TensorFlow only feeds data here; its C++ start-up chatter is noise to a user.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Before JAX and TensorFlow start their threads, which would otherwise get arenas of their own.
host_memory.keep_freed_memory()
