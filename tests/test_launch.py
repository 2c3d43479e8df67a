"""launch.sh prints the exact command for each target, and runs what it prints."""

import os
import subprocess

import pytest

from tests import conftest

LAUNCH = os.path.join(conftest.REPO, 'launch.sh')
# Prints each argument it was given on its own line, as gcloud/srun would receive them.
_ECHO_ARGS = '#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n'


@pytest.fixture
def fake_bin(tmp_path):
  """A PATH directory with stand-ins for gcloud, srun and scontrol."""
  for name in ('gcloud', 'srun'):
    (tmp_path / name).write_text(_ECHO_ARGS)
  (tmp_path / 'scontrol').write_text('#!/bin/sh\necho node017\necho node018\n')
  for f in tmp_path.iterdir():
    f.chmod(0o755)
  return str(tmp_path)


def _launch(args, fake_bin, **env):
  env = dict(os.environ, PATH=fake_bin + os.pathsep + os.environ['PATH'], PYTHON='python3', **env)
  return subprocess.run(['bash', LAUNCH, *args], env=env, capture_output=True, text=True,
                        check=False)


def _printed_args(command, fake_bin):
  """The arguments the printed command line passes when pasted into a shell."""
  env = dict(os.environ, PATH=fake_bin + os.pathsep + os.environ['PATH'], HOME='/home/me')
  out = subprocess.run(['bash', '-c', command], env=env, capture_output=True, text=True, check=True)
  return out.stdout.splitlines()


def test_tpu_dry_run_prints_exact_command(fake_bin):
  args = ['--target=tpu', '--tpu=my-pod', '--zone=us-central2-b', '--project=my-proj',
          '--repo=https://github.com/me/cgan_jax.git', '--ref=v1', '--config=configs/mnist.py',
          '--config.dataset=folder:/data/my images', '--workdir=/mnt/$HOME/run']
  result = _launch(args + ['--dry_run'], fake_bin)
  assert result.returncode == 0, result.stderr
  remote = ("set -e; [ -d cgan_jax ] || git clone -q https://github.com/me/cgan_jax.git cgan_jax; "
            "cd cgan_jax; git fetch -q origin; git checkout -q v1; "
            "python3 -m pip install -q -e . 'jax[tpu]'; "
            "python3 -m cgan_jax.main --distributed=yes --config=configs/mnist.py "
            "'--config.dataset=folder:/data/my images' '--workdir=/mnt/$HOME/run'")
  expected = ('gcloud compute tpus tpu-vm ssh my-pod --zone=us-central2-b --project=my-proj '
              '--worker=all --command="' + remote.replace('$', '\\$') + '"')
  assert result.stdout.strip() == expected

  # Pasting the printed line passes gcloud exactly what launch.sh passes when it runs it.
  ran = _launch(args, fake_bin)
  assert ran.returncode == 0, ran.stderr
  passed = ran.stdout.splitlines()[1:]
  assert passed == _printed_args(expected, fake_bin)
  assert passed[-1] == '--command=' + remote


def test_tpu_needs_name_and_zone(fake_bin):
  result = _launch(['--target=tpu', '--zone=z', '--repo=r', '--dry_run'], fake_bin)
  assert result.returncode == 2
  assert '--tpu=NAME and --zone=ZONE' in result.stderr


def test_slurm_dry_run_prints_exact_command(fake_bin):
  env = {'SLURM_JOB_ID': '1234', 'SLURM_NTASKS': '16', 'SLURM_JOB_NODELIST': 'node[017-018]'}
  result = _launch(['--target=slurm', '--dry_run', '--config=configs/mnist.py'], fake_bin, **env)
  assert result.returncode == 0, result.stderr
  port = 61440 + 1234 % 4096
  assert result.stdout.strip() == (
      'srun --kill-on-bad-exit=1 python3 -m cgan_jax.main --distributed=yes '
      f'--coordinator_address=node017:{port} --num_processes=16 --config=configs/mnist.py')
  ran = _launch(['--target=slurm', '--port=5000', '--workdir=a b'], fake_bin, **env)
  assert ran.stdout.splitlines()[1:] == [
      '--kill-on-bad-exit=1', 'python3', '-m', 'cgan_jax.main', '--distributed=yes',
      '--coordinator_address=node017:5000', '--num_processes=16', '--workdir=a b']


def test_slurm_outside_allocation_is_an_error(fake_bin):
  env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
  result = subprocess.run(['bash', LAUNCH, '--target=slurm'], env=env, capture_output=True,
                          text=True, check=False)
  assert result.returncode == 2 and 'sbatch or salloc' in result.stderr


def test_local_and_devices_dry_run(fake_bin):
  assert _launch(['--dry_run'], fake_bin).stdout == 'python3 -m cgan_jax.main\n'
  result = _launch(['--target=devices', '--cpu_devices=4', '--dry_run', '--workdir=w'], fake_bin,
                   XLA_FLAGS='')
  assert result.stdout.splitlines() == [
      'JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=4',
      'python3 -m cgan_jax.main --workdir=w']
  assert _launch(['--target=nope'], fake_bin).returncode == 2


def test_help_prints_the_targets(fake_bin):
  result = _launch(['--help'], fake_bin)
  assert result.returncode == 0
  assert result.stdout.splitlines()[0].startswith('Starts training here, on simulated CPU devices')
  assert '--target=slurm' in result.stdout and result.stdout.splitlines()[-1] == (
      'The training flags: python -m cgan_jax.main --help.')


@pytest.mark.parametrize('args,message', [
    (['--cpu_devices=4'], '--cpu_devices goes with --target=devices.'),
    (['--target=devices', '--zone=z'], '--tpu, --zone, --project, --repo and --ref go with '
     '--target=tpu.'),
    (['--port=5'], '--port goes with --target=slurm.'),
    (['--target', 'tpu'], "write --target=VALUE (with '=')."),
])
def test_a_flag_of_another_target_is_an_error_not_ignored(fake_bin, args, message):
  result = _launch([*args, '--dry_run'], fake_bin)
  assert result.returncode == 2 and result.stderr == f'launch.sh: {message}\n'
  assert result.stdout == ''
