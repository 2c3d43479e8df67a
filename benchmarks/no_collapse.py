"""Trains every README training command and every config on given data; reports collapses.

Each command is run as written (the README's `python -m cgan_jax.main ...` and local
`./launch.sh ...` lines, and `python -m cgan_jax.main --config=configs/NAME.py` for every config),
with its dataset and workdir replaced, and optionally its steps capped. A run collapses when the
trainer prints a collapse warning (cgan_jax/collapse.py: D has won, or G draws blank or identical
images). With a judge per dataset (python -m cgan_jax.classifier, trained on images the GAN did
not see: pass --train_split for the GAN's part), `evaluate` scores each run too.

  python benchmarks/no_collapse.py --datasets=folder:PATH/mnist-5k,digits \\
      --judges=runs/judge_mnist,runs/judge_digits --train_split='train[:50%]' \\
      --max_steps=2000 --out=runs/no_collapse > no_collapse.jsonl

One JSON line per run: the command, the dataset, the steps run, seconds, every warning, and
the judge's conditional accuracy and FD ratio (generated FD / real held-out FD).
"""

import argparse
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Commands that need a machine of their own (TPU pods, SLURM allocations) are not run.
_REMOTE = re.compile(r'--target=(tpu|slurm)|--dry_run')


def readme_commands(path: str) -> list:
  """The README's local training command lines, continuation lines joined."""
  text = open(path).read()
  commands = []
  for block in re.findall(r'```bash\n(.*?)```', text, re.S):
    for line in block.replace('\\\n', ' ').splitlines():
      line = re.sub(r'\[[^\]]*\]', '', line).strip()  # Optional [--flag ...] placeholders.
      if (line.startswith('python -m cgan_jax.main') or line.startswith('./launch.sh')) and (
          not _REMOTE.search(line)):
        commands.append(line)
      elif '&& ./launch.sh' in line:  # The install-and-train line: its launch part.
        commands.append('./launch.sh' + line.split('&& ./launch.sh', 1)[1])
  return commands


def config_commands() -> list:
  return [f'python -m cgan_jax.main --config={os.path.relpath(p, REPO)}'
          for p in sorted(glob.glob(os.path.join(REPO, 'configs', '*.py')))
          if not os.path.basename(p).startswith('__')]


def unique(commands) -> list:
  """The commands less those that run the same as an earlier one once adapted."""
  seen, kept = set(), []
  for command in commands:
    key = tuple(adapt(command, '', '', '', 0))
    if key not in seen:
      seen.add(key)
      kept.append(command)
  return kept


def adapt(command: str, dataset: str, workdir: str, train_split: str, max_steps: int) -> list:
  """The command's argv with its dataset, workdir and split replaced and its steps capped."""
  argv = [a for a in shlex.split(command)
          if not a.startswith(('--workdir=', '--config.dataset=', '--config.train_split='))]
  if argv[:3] == ['python', '-m', 'cgan_jax.main']:
    argv[0] = sys.executable
  argv += [f'--workdir={workdir}', f'--config.dataset={dataset}']
  if train_split:
    argv.append(f'--config.train_split={train_split}')
  if max_steps:
    argv.append(f'--config.num_train_steps={max_steps}')
  return argv


def judge(workdir: str, judge_dir: str) -> dict:
  """The judge's conditional accuracy and FD ratio of the run's EMA samples, or why not."""
  result = subprocess.run([sys.executable, '-m', 'cgan_jax.evaluate', f'--workdir={workdir}',
                           f'--classifier={judge_dir}'], cwd=REPO, capture_output=True, text=True)
  lines = [l for l in result.stdout.splitlines() if l.startswith('{')]
  if result.returncode or not lines:
    errors = [l for l in (result.stdout + result.stderr).splitlines() if l.startswith('Error:')]
    return {'judge_error': errors[-1] if errors else f'exit code {result.returncode}'}
  scores = json.loads(lines[-1])
  generated, real = scores['generated'], scores['real']
  return {'cond_acc': round(generated['cond_acc'], 4), 'real_cond_acc': round(real['cond_acc'], 4),
          'fd_ratio': round(generated['fd'] / real['fd'], 3), 'recall': round(generated['recall'], 3)}


def run(command: str, dataset: str, out: str, index: int, args, judge_dir: str) -> dict:
  workdir = os.path.join(out, f'run{index}')
  argv = adapt(command, dataset, workdir, args.train_split, args.max_steps)
  start = time.time()
  result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
  text = result.stdout + result.stderr
  steps = re.findall(r'^step (\d+)/', result.stdout, re.M)
  entry = {'command': command, 'dataset': dataset, 'exit_code': result.returncode,
           'steps': int(steps[-1]) if steps else 0, 'seconds': round(time.time() - start, 1),
           'warnings': re.findall(r'^Warning: (Step .*)$', text, re.M)}
  if result.returncode:
    entry['error'] = ([l for l in text.splitlines() if l.startswith('Error')] or text.splitlines()[-1:])[-1]
  elif judge_dir:
    entry.update(judge(workdir, judge_dir))
  entry['collapsed'] = bool(entry['warnings'])
  return entry


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--datasets', required=True, help="Comma-separated config.dataset values.")
  parser.add_argument('--judges', default='', help='Comma-separated judge workdirs, one per dataset.')
  parser.add_argument('--train_split', default='', help="The GAN's split, e.g. 'train[:50%%]'.")
  parser.add_argument('--max_steps', type=int, default=0, help='Cap on every run\'s steps; 0 = none.')
  parser.add_argument('--only', default='', help='Run only commands containing this text.')
  parser.add_argument('--skip', default='', help='Leave out commands containing this text.')
  parser.add_argument('--out', required=True, help='Folder of the runs\' workdirs.')
  args = parser.parse_args()
  datasets = args.datasets.split(',')
  judges = args.judges.split(',') if args.judges else [''] * len(datasets)
  if len(judges) != len(datasets):
    parser.error('give one --judges entry per --datasets entry.')
  commands = unique(c for c in readme_commands(os.path.join(REPO, 'README.md')) + config_commands()
                    if args.only in c and not (args.skip and args.skip in c))
  index = 0
  for dataset, judge_dir in zip(datasets, judges):
    for command in commands:
      print(json.dumps(run(command, dataset, os.path.abspath(args.out), index, args,
                           judge_dir and os.path.abspath(judge_dir))), flush=True)
      index += 1


if __name__ == '__main__':
  main()
