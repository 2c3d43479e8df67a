"""cgan_jax: class-conditional GANs in JAX/Flax."""

import os

# TensorFlow only feeds data here; its C++ start-up chatter is noise to a user.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# oneDNN speeds up TF's matmuls and convs, and none run here (the input pipeline is as fast
# without it); off, TF no longer prints its "oneDNN custom operations are on" notice at every
# start, which TF_CPP_MIN_LOG_LEVEL does not hide.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
