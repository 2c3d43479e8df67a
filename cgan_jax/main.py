"""Trains a class-conditional GAN: python -m cgan_jax.main --config=configs/NAME.py --workdir=DIR."""

import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from cgan_jax import train

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               'configs', 'digits.py')

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', _DEFAULT_CONFIG, 'Training configuration file.',
                                lock_config=True)
flags.DEFINE_string('workdir', 'runs/digits', 'Where checkpoints, logs and samples go.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ValueError, RuntimeError, PermissionError, FileNotFoundError) as e:
    raise SystemExit(f'Error: {e}') from None


if __name__ == '__main__':
  app.run(main)
