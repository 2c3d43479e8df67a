"""benchmarks/no_collapse.py: which command lines it finds in the README and how it adapts them."""

from benchmarks import no_collapse


def test_readme_commands_are_the_local_training_lines(tmp_path):
  readme = tmp_path / 'README.md'
  readme.write_text('```bash\npython3 -m venv .venv && pip install -e . && ./launch.sh\n'
                    'python -m cgan_jax.main --config=configs/mnist.py \\\n  --config.image_size=32\n'
                    'python -m cgan_jax.sample --workdir=runs/mnist\n'
                    './launch.sh --target=slurm --workdir=/shared/runs\n'
                    'python -m cgan_jax.main --config=configs/mnist.py [--config.FIELD=VALUE ...]\n```\n')
  assert no_collapse.readme_commands(str(readme)) == [
      './launch.sh', 'python -m cgan_jax.main --config=configs/mnist.py    --config.image_size=32',
      'python -m cgan_jax.main --config=configs/mnist.py']


def test_adapt_replaces_dataset_workdir_and_split_and_caps_steps():
  argv = no_collapse.adapt('./launch.sh --workdir=runs/x --config.dataset=mnist --config.seed=3',
                           'digits', '/tmp/w', 'train[:50%]', 100)
  assert argv == ['./launch.sh', '--config.seed=3', '--workdir=/tmp/w', '--config.dataset=digits',
                  '--config.train_split=train[:50%]', '--config.num_train_steps=100']


def test_commands_that_run_the_same_are_kept_once():
  commands = ['python -m cgan_jax.main --config=configs/mnist.py --workdir=runs/mnist',
              'python -m cgan_jax.main --config=configs/mnist.py', './launch.sh']
  assert no_collapse.unique(commands) == [commands[0], commands[2]]
