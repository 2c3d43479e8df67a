"""Trains a class-conditional GAN: python -m cgan_jax.main --config=configs/NAME.py --workdir=DIR.

On several hosts, run the same command once per host (see launch.sh); the processes
join through `jax.distributed.initialize` and train one model together.
"""

import os

from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from cgan_jax import checkpoint
from cgan_jax import cli
from cgan_jax import host_memory
from cgan_jax import train


def _env_int(name):
  value = os.environ.get(name)
  return int(value) if value else None


FLAGS = flags.FLAGS
cli.define_config_flag(os.path.join(cli.CONFIGS_DIR, 'digits.py'), 'Training configuration file.')
flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and samples go; by default '
                    'runs/<config file name>, e.g. runs/mnist for --config=configs/mnist.py.')
flags.DEFINE_enum('distributed', 'auto', ['auto', 'yes', 'no'],
                  'Join a multi-process run with jax.distributed.initialize: auto does so when '
                  'the flags below ask for several processes or a SLURM/Open MPI/TPU pod job is '
                  'detected.')
flags.DEFINE_string('coordinator_address', os.environ.get('JAX_COORDINATOR_ADDRESS'),
                    'host:port of process 0 (env JAX_COORDINATOR_ADDRESS); auto-detected on '
                    'TPU pods and SLURM.')
flags.DEFINE_integer('num_processes', _env_int('JAX_NUM_PROCESSES'),
                     'Number of processes (env JAX_NUM_PROCESSES); auto-detected on TPU pods and SLURM.')
flags.DEFINE_integer('process_id', _env_int('JAX_PROCESS_ID'),
                     'This process, 0..num_processes-1 (env JAX_PROCESS_ID); auto-detected on TPU '
                     'pods and SLURM.')


def _cluster_detected() -> bool:
  """Whether this process is one of several started by SLURM, Open MPI or on a TPU pod."""
  if (_env_int('SLURM_STEP_NUM_TASKS') or 1) > 1:  # Inside `srun` with several tasks.
    return True
  if (_env_int('OMPI_COMM_WORLD_SIZE') or 1) > 1:
    return True
  hosts = os.environ.get('TPU_PROCESS_ADDRESSES') or os.environ.get('TPU_WORKER_HOSTNAMES') or ''
  return ',' in hosts


def _maybe_initialize_distributed():
  """Calls jax.distributed.initialize when this is one process of several."""
  explicit = (FLAGS.coordinator_address is not None or (FLAGS.num_processes or 1) > 1 or
              FLAGS.process_id is not None)
  if FLAGS.distributed == 'no' or (FLAGS.distributed == 'auto' and not explicit and
                                   not _cluster_detected()):
    return
  # Unset arguments are filled in by JAX's cluster detection (TPU pod, SLURM, Open MPI).
  jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                             num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)


def _default_workdir() -> str:
  """runs/NAME for --config=.../NAME.py, so that runs of different configs do not collide."""
  name = os.path.splitext(os.path.basename(config_flags.get_config_filename(FLAGS['config'])))[0]
  return os.path.join('runs', name)


def main(argv):
  cli.no_arguments(argv)
  if FLAGS.config.reuse_host_memory:
    host_memory.keep_freed_memory()
  try:
    _maybe_initialize_distributed()
  except (ValueError, RuntimeError) as e:
    raise SystemExit(f'Error: could not join the multi-process run ({e}); check '
                     '--coordinator_address, --num_processes and --process_id.') from None
  logging.info('JAX process %d/%d, %d of %d devices local: %s', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.local_devices())
  workdir = FLAGS.workdir or _default_workdir()
  with cli.one_line_errors(ValueError, RuntimeError, PermissionError, FileNotFoundError):
    with checkpoint.disk_full_errors(workdir):
      train.train_and_evaluate(FLAGS.config, workdir)


if __name__ == '__main__':
  cli.run(main)
