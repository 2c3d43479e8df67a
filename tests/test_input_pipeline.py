"""The input pipeline on TFDS (mocked), an image folder, and the embedded digits."""

import logging
import os
import shutil
import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from cgan_jax import image_folder
from cgan_jax import input_pipeline
from tests.conftest import MNIST_5K


def _first_batch(config, batch_size=8, **kwargs):
  ds, info = input_pipeline.create_dataset(config, config.train_split, batch_size, **kwargs)
  return next(ds.as_numpy_iterator()), info


def _check_batch(batch, info, batch_size=8):
  assert batch['image'].shape == (batch_size, *info.image_shape)
  assert batch['image'].dtype == np.float32
  assert -1.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  assert batch['label'].dtype == np.int32
  assert ((0 <= batch['label']) & (batch['label'] < info.num_classes[0])).all()


@pytest.mark.parametrize('name,shape', [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
def test_tfds_mock(tiny_config, name, shape):
  tiny_config.dataset = name
  with tfds.testing.mock_data(num_examples=32):
    batch, info = _first_batch(tiny_config)
  assert info.image_shape == shape and info.num_classes == (10,)
  _check_batch(batch, info)


def _prepare_fashion_mnist(data_dir, monkeypatch, sizes=(('train', 256), ('test', 64))):
  """A real prepared TFDS fashion_mnist in `data_dir`, built offline: every pixel is 20 * label."""
  from tensorflow_datasets.image_classification import mnist as tfds_mnist  # pylint: disable=g-import-not-at-top
  files = {}
  for split, n in sizes:
    labels = (np.arange(n) * 7 % 10).astype(np.uint8)
    images = np.repeat(labels * 20, 28 * 28).astype(np.uint8)
    for kind, header, data in (('data', (0x803, n, 28, 28), images), ('labels', (0x801, n), labels)):
      files[f'{split}_{kind}'] = data_dir / f'{split}_{kind}'  # The IDX files the download holds.
      files[f'{split}_{kind}'].write_bytes(np.array(header, '>i4').tobytes() + data.tobytes())
  monkeypatch.setattr(tfds_mnist, '_TRAIN_EXAMPLES', dict(sizes)['train'])
  monkeypatch.setattr(tfds_mnist, '_TEST_EXAMPLES', dict(sizes)['test'])
  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract',
                      lambda self, urls: {k: str(files[k]) for k in urls})
  tfds.builder('fashion_mnist', data_dir=str(data_dir)).download_and_prepare()
  monkeypatch.undo()  # Reading must not need any of the above.


def test_prepared_tfds_data_dir(tiny_config, tmp_path, monkeypatch):
  _prepare_fashion_mnist(tmp_path, monkeypatch)
  tiny_config.dataset, tiny_config.data_dir = 'fashion_mnist', str(tmp_path)
  ds, info = input_pipeline.create_dataset(tiny_config, 'train', 32)
  stream = ds.as_numpy_iterator()
  batches = [next(stream) for _ in range(3)]
  assert info.image_shape == (28, 28, 1) and info.num_examples == 256
  assert info.class_names[5] == 'Sandal' and info.num_classes == (10,)
  _check_batch(batches[0], info, 32)
  for batch in batches:  # Each image arrives with its own label.
    np.testing.assert_allclose((batch['image'] + 1) * 127.5,
                               np.broadcast_to(20.0 * batch['label'][:, None, None, None],
                                               batch['image'].shape), atol=1e-3)
  assert batches[0]['label'].tolist() != [i * 7 % 10 for i in range(32)]  # Shuffled.
  resumed, _ = input_pipeline.create_dataset(tiny_config, 'train', 32, start_batch=2)
  np.testing.assert_array_equal(next(resumed.as_numpy_iterator())['label'], batches[2]['label'])
  tiny_config.train_split = 'train[:25%]+test[-16:]'  # TFDS's split syntax.
  assert input_pipeline.get_info(tiny_config).num_examples == 80


@pytest.mark.parametrize('dataset,train_size', [('digits', 1500), ('folder', 12)])
def test_split_slices(tiny_config, tmp_path, dataset, train_size):
  """TFDS's split syntax cuts the examples in the order 'train' has them."""
  _write_folder(str(tmp_path))
  tiny_config.dataset = 'digits' if dataset == 'digits' else f'folder:{tmp_path}'

  def labels(split):
    ds, _ = input_pipeline.create_dataset(tiny_config, split, 4, train=False)
    return [int(y) for batch in input_pipeline.numpy_batches(ds, tiny_config) for y in batch['label']]

  whole, first, rest = labels('train'), labels('train[:50%]'), labels('train[50%:]+test[:2]')
  assert len(whole) == train_size and len(rest) == train_size // 2 + 2
  assert first + rest[:-2] == whole
  tiny_config.train_split = 'train[:50%]'
  assert input_pipeline.get_info(tiny_config).num_examples == train_size // 2


class UnsupervisedToy(tfds.core.GeneratorBasedBuilder):
  """A TFDS dataset without supervised keys, its image and class label under other names."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'picture': tfds.features.Image(shape=(8, 8, 1)),
        'digit': tfds.features.ClassLabel(num_classes=3), 'caption': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(6), 'test': self._generate_examples(3)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {'picture': np.full((8, 8, 1), 40 * (i % 3), np.uint8), 'digit': i % 3,
                'caption': str(i)}


def test_tfds_without_supervised_keys(tiny_config, tmp_path):
  tfds.builder('unsupervised_toy', data_dir=str(tmp_path)).download_and_prepare()
  tiny_config.dataset, tiny_config.data_dir = 'unsupervised_toy', str(tmp_path)
  batch, info = _first_batch(tiny_config, batch_size=6)
  assert info.num_classes == (3,) and info.image_shape == (8, 8, 1) and info.num_examples == 6
  np.testing.assert_allclose((batch['image'][:, 0, 0, 0] + 1) * 127.5, 40 * batch['label'],
                             atol=1e-3)


def test_unlabelled_examples_are_a_clear_error(tiny_config):
  """TFDS marks unlabelled examples -1 (stl10's 'unlabelled', imagenet's test): not trained on."""
  def as_dataset(self, split, **kwargs):
    del split, kwargs
    labels = np.array([3, 5, -1, 2], np.int64)
    return tf.data.Dataset.from_tensor_slices(
        {'image': np.zeros((4, 28, 28, 1), np.uint8), 'label': labels})

  tiny_config.dataset = 'mnist'
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    ds, _ = input_pipeline.create_dataset(tiny_config, 'test', 2, train=False)
    batches = input_pipeline.numpy_batches(ds, tiny_config)
    assert list(next(batches)['label']) == [3, 5]
    with pytest.raises(ValueError, match=r"^Dataset 'mnist' has an example labelled -1, outside "
                       r'its classes .*--config.train_split'):
      next(batches)


def test_tfds_images_of_varying_size(tiny_config):
  tiny_config.dataset = 'tf_flowers'  # Image shape (None, None, 3).
  with tfds.testing.mock_data(num_examples=8):
    with pytest.raises(ValueError, match='varying size; set --config.image_size'):
      input_pipeline.get_info(tiny_config)
    tiny_config.image_size = 16
    batch, info = _first_batch(tiny_config, batch_size=4)
  assert info.image_shape == (16, 16, 3) and info.num_classes == (5,)
  _check_batch(batch, info, 4)


def test_digits_is_deterministic_and_resumable(tiny_config):
  ds, info = input_pipeline.create_dataset(tiny_config, 'train', 8)
  stream = ds.as_numpy_iterator()
  batches = [next(stream) for _ in range(3)]
  _check_batch(batches[0], info)
  assert info.image_shape == (8, 8, 1) and info.num_examples == 1500
  again, _ = _first_batch(tiny_config)
  np.testing.assert_array_equal(again['image'], batches[0]['image'])
  resumed, _ = _first_batch(tiny_config, start_batch=2)
  np.testing.assert_array_equal(resumed['image'], batches[2]['image'])
  # Past the first epochs (187.5 batches each), which a resumed run does not read again.
  batches += [next(stream) for _ in range(3, 400)]
  for start in (187, 190, 399):
    resumed, _ = _first_batch(tiny_config, start_batch=start)
    np.testing.assert_array_equal(resumed['image'], batches[start]['image'])
  assert not np.array_equal(batches[375]['label'], batches[0]['label'])  # Reshuffled per epoch.
  other, _ = _first_batch(tiny_config, seed=1)
  assert not np.array_equal(other['image'], batches[0]['image'])


def _write_folder(root, size=12, mode='L', classes=('cat', 'dog', 'eel')):
  rng = np.random.RandomState(0)
  for split in ('train', 'test'):
    for c in classes:
      os.makedirs(os.path.join(root, split, c))
      for i in range(4):
        shape = (size, size) if mode == 'L' else (size, size, 3)
        Image.fromarray(rng.randint(0, 255, shape).astype(np.uint8), mode).save(
            os.path.join(root, split, c, f'{i}.png'))


@pytest.mark.parametrize('mode,channels', [('L', 1), ('RGB', 3)])
def test_folder(tiny_config, tmp_path, mode, channels):
  _write_folder(str(tmp_path), mode=mode)
  tiny_config.dataset = f'folder:{tmp_path}'
  batch, info = _first_batch(tiny_config)
  assert info.image_shape == (12, 12, channels)
  assert info.num_classes == (3,) and info.class_names == ('cat', 'dog', 'eel')
  _check_batch(batch, info)
  tiny_config.image_size = 8
  tiny_config.num_channels = 3
  batch, info = _first_batch(tiny_config)
  assert batch['image'].shape == (8, 8, 8, 3)


def test_folder_with_one_odd_image_among_many(tiny_config, tmp_path):
  _write_folder(str(tmp_path))  # Gray 12x12 images, four per class folder.
  odd = os.path.join(tmp_path, 'train', 'eel', '9.png')  # Listed last in the last folder.
  rgb = np.random.RandomState(1).randint(0, 255, (12, 12, 3)).astype(np.uint8)
  Image.fromarray(rgb).save(odd)
  tiny_config.dataset = f'folder:{tmp_path}'
  assert input_pipeline.get_info(tiny_config).image_shape == (12, 12, 3)  # One colour image: RGB.
  batch, info = _first_batch(tiny_config, batch_size=13)
  _check_batch(batch, info, batch_size=13)
  Image.fromarray(rgb[:, :10]).save(odd)
  with pytest.raises(ValueError, match='varying size; set --config.image_size'):
    input_pipeline.get_info(tiny_config)


def test_folder_of_mixed_sizes_needs_image_size(tiny_config, tmp_path):
  _write_folder(str(tmp_path / 'a'), size=12)
  os.rename(tmp_path / 'a' / 'train', tmp_path / 'train')
  _write_folder(str(tmp_path / 'b'), size=16)
  os.rename(tmp_path / 'b' / 'test', tmp_path / 'test')
  shutil.rmtree(tmp_path / 'a')  # Their other splits: not splits of this folder.
  shutil.rmtree(tmp_path / 'b')
  tiny_config.dataset = f'folder:{tmp_path}'
  with pytest.raises(ValueError, match='varying size; set --config.image_size'):
    input_pipeline.get_info(tiny_config)
  tiny_config.image_size = 8
  batch, info = _first_batch(tiny_config)
  _check_batch(batch, info)
  assert info.image_shape == (8, 8, 1)


@pytest.mark.skipif(not os.path.isdir(MNIST_5K), reason='needs ../shared/data/mnist-5k')
def test_real_mnist_folder(tiny_config):
  tiny_config.dataset = f'folder:{MNIST_5K}'
  batch, info = _first_batch(tiny_config, batch_size=64)
  assert info.image_shape == (28, 28, 1) and info.num_examples == 4500
  _check_batch(batch, info, 64)
  assert len(set(batch['label'].tolist())) > 5


def test_unreadable_image_is_named(tiny_config, tmp_path):
  _write_folder(str(tmp_path))
  (tmp_path / 'test' / 'dog' / '9.png').write_text('not an image')
  tiny_config.dataset = f'folder:{tmp_path}'
  ds, _ = input_pipeline.create_dataset(tiny_config, 'test', 4, train=False)
  with pytest.raises(ValueError, match=r"test/dog/9\.png is not a readable image \(Unidentified"
                                       r"ImageError.*\); fix or remove it\.$"):
    list(input_pipeline.numpy_batches(ds, tiny_config))
  ds, _ = input_pipeline.create_dataset(tiny_config, 'train', 4, train=False)
  assert sum(len(b['label']) for b in input_pipeline.numpy_batches(ds, tiny_config)) == 12


def test_folder_without_split_level_is_the_train_split(tiny_config, tmp_path):
  _write_folder(str(tmp_path))
  tiny_config.dataset = f'folder:{tmp_path / "train"}'  # PATH/<label>/*.png, as torchvision reads.
  batch, info = _first_batch(tiny_config, batch_size=4)
  assert info.num_examples == 12 and info.class_names == ('cat', 'dog', 'eel')
  _check_batch(batch, info, 4)
  with pytest.raises(ValueError, match=r"no split 'test'; it has \['train'\]"):
    input_pipeline.create_dataset(tiny_config, 'test', 4, train=False)


@pytest.mark.parametrize('flat', [False, True])
def test_hidden_folders_are_not_classes(tiny_config, tmp_path, flat):
  _write_folder(str(tmp_path))
  root = tmp_path / 'train' if flat else tmp_path
  for extra in (root / '.ipynb_checkpoints', root / '__MACOSX' / 'x',
                (root if flat else root / 'train') / '.ipynb_checkpoints'):
    extra.mkdir(parents=True, exist_ok=True)
  (root / '__MACOSX' / 'x' / '._0.png').write_bytes(b'AppleDouble, not an image')
  tiny_config.dataset = f'folder:{root}'
  batch, info = _first_batch(tiny_config, batch_size=4)
  assert info.class_names == ('cat', 'dog', 'eel') and info.num_examples == 12
  _check_batch(batch, info, 4)


def test_folder_view_is_removed_without_its_targets(tmp_path):
  _write_folder(str(tmp_path / 'data'))
  view = image_folder._folder_view({'train': str(tmp_path / 'data' / 'train')})
  assert sorted(os.listdir(os.path.join(view, 'train'))) == ['cat', 'dog', 'eel']
  shutil.rmtree(view)  # As at exit.
  assert len(list((tmp_path / 'data').glob('*/*/*.png'))) == 24


def _class_counts(config, split='train'):
  ds, info = input_pipeline.create_dataset(config, split, 1, train=False)
  labels = [int(b['label'][0]) for b in input_pipeline.numpy_batches(ds, config)]
  return {name: labels.count(i) for i, name in enumerate(info.class_names)}


@pytest.mark.parametrize('flat', [False, True])
def test_images_in_subfolders_of_a_class_are_read(tiny_config, tmp_path, flat):
  _write_folder(str(tmp_path))
  cat = tmp_path / 'train' / 'cat'
  (cat / 'sub' / 'deeper').mkdir(parents=True)
  os.rename(cat / '0.png', cat / 'sub' / '0.png')
  os.rename(cat / '1.png', cat / 'sub' / 'deeper' / '2.png')  # Same name as cat/2.png.
  Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / 'test' / 'dog' / 'sub.png')
  (tmp_path / 'test' / 'dog' / 'big').mkdir()  # Unread before: its size made sizes vary.
  os.rename(tmp_path / 'test' / 'dog' / 'sub.png', tmp_path / 'test' / 'dog' / 'big' / 'x.png')
  os.symlink(cat, cat / 'sub' / 'loop')  # A link back up the tree is read once.
  tiny_config.dataset = f'folder:{tmp_path / "train" if flat else tmp_path}'
  if flat:
    assert _class_counts(tiny_config) == {'cat': 4, 'dog': 4, 'eel': 4}
  else:
    with pytest.raises(ValueError, match='varying size'):
      input_pipeline.get_info(tiny_config)
    tiny_config.image_size = 12
    assert _class_counts(tiny_config) == {'cat': 4, 'dog': 4, 'eel': 4}
    assert _class_counts(tiny_config, 'test') == {'cat': 4, 'dog': 5, 'eel': 4}


def test_linked_class_folders_are_read(tiny_config, tmp_path):
  _write_folder(str(tmp_path / 'data'))
  for name in ('cat', 'dog', 'eel'):
    (tmp_path / 'linked' / name).parent.mkdir(exist_ok=True)
    os.symlink(tmp_path / 'data' / 'train' / name, tmp_path / 'linked' / name)
  tiny_config.dataset = f'folder:{tmp_path / "linked"}'
  assert _class_counts(tiny_config) == {'cat': 4, 'dog': 4, 'eel': 4}


def test_classes_a_split_lacks_are_named(tiny_config, tmp_path, caplog):
  """A class the held-out split lacks is a warning (once); one training lacks is an error."""
  _write_folder(str(tmp_path))
  shutil.copytree(tmp_path / 'train' / 'eel', tmp_path / 'train' / 'fox')
  tiny_config.dataset = f'folder:{tmp_path}'
  with caplog.at_level(logging.WARNING):
    assert input_pipeline.get_info(tiny_config).num_classes == (4,)
    input_pipeline.get_info(tiny_config)
  assert caplog.text.count("split 'test' has no images of class 'fox'; that class is not "
                           'evaluated there.') == 1
  shutil.copytree(tmp_path / 'test' / 'eel', tmp_path / 'test' / 'gnu')
  with pytest.raises(ValueError, match=r"split 'train' has no class folder 'gnu', which other "
                                       r'splits have; every class needs training images'):
    input_pipeline.get_info(tiny_config)
  tiny_config.train_split = 'train[:50%]+test'  # Either split's images train.
  assert input_pipeline.get_info(tiny_config).num_classes == (5,)


@pytest.mark.parametrize('content,message', [
    ('bmp', r"class folder 'fox' has only 4 files tfds.ImageFolder cannot read \(\.bmp: convert "
            r"them to PNG\); add images or remove the folder\.$"),
    ('nothing', r"class folder 'fox' has no PNG or JPEG images; add images or remove the folder"),
])
def test_class_folder_without_images_is_named(tiny_config, tmp_path, content, message):
  _write_folder(str(tmp_path))
  (tmp_path / 'train' / 'fox').mkdir()
  if content == 'bmp':
    for path in (tmp_path / 'train' / 'eel').glob('*.png'):
      Image.open(path).save(tmp_path / 'train' / 'fox' / path.with_suffix('.bmp').name)
  tiny_config.dataset = f'folder:{tmp_path / "train"}'
  with pytest.raises(ValueError, match=message):
    input_pipeline.get_info(tiny_config)


@pytest.mark.parametrize('layout,message', [
    ('images_at_top', r'has images directly in it; .* one subfolder per class'),
    ('mixed', r"mixes class folders with images \('cat'\) and folders without \('test'\)"),
    ('unreadable', r'No image under .* can be read \(damaged, or not PNG or JPEG inside\)'),
])
def test_folder_layout_errors(tiny_config, tmp_path, layout, message):
  _write_folder(str(tmp_path))
  if layout == 'images_at_top':
    shutil.copy(next((tmp_path / 'train' / 'cat').glob('*.png')), tmp_path / 'stray.png')
  elif layout == 'mixed':
    shutil.copytree(tmp_path / 'train' / 'cat', tmp_path / 'cat')
  else:
    for path in tmp_path.glob('*/*/*.png'):
      path.write_text('not an image')
  tiny_config.dataset = f'folder:{tmp_path}'
  with pytest.raises(ValueError, match=message):
    input_pipeline.get_info(tiny_config)


def test_missing_split_names_the_field_to_set(tiny_config, tmp_path):
  _write_folder(str(tmp_path))
  os.rename(tmp_path / 'test', tmp_path / 'holdout')
  tiny_config.dataset = f'folder:{tmp_path}'
  with pytest.raises(ValueError, match=r"no split 'test'; it has \['holdout', 'train'\]; "
                     r"set --config.eval_split to one of them"):
    input_pipeline.create_dataset(tiny_config, tiny_config.eval_split, 8, train=False)


def test_empty_split_is_a_clear_error(tiny_config, tmp_path):
  _write_folder(str(tmp_path))
  for path in (tmp_path / 'train').glob('*/*.png'):
    path.unlink()
  tiny_config.dataset = f'folder:{tmp_path}'
  with pytest.raises(ValueError, match=r"no images in split 'train'; add some, or set "
                     r"--config.train_split to one of \['test'\]\.$"):
    input_pipeline.create_dataset(tiny_config, tiny_config.train_split, 8)


def test_formats_image_folder_cannot_read_are_reported(tiny_config, tmp_path, caplog):
  _write_folder(str(tmp_path))
  for path in (tmp_path / 'test').glob('*/*.png'):
    Image.open(path).save(path.with_suffix('.bmp'))
    path.unlink()
  tiny_config.dataset = f'folder:{tmp_path}'
  with caplog.at_level(logging.WARNING):
    assert input_pipeline.get_info(tiny_config).num_examples == 12
  assert 'skipping 12 .bmp files; tfds.ImageFolder reads only PNG and JPEG' in caplog.text
  shutil.rmtree(tmp_path / 'train')
  with pytest.raises(ValueError, match=r'has 12 \.bmp files and no PNG or JPEG ones.*convert them'):
    input_pipeline.get_info(tiny_config)


@pytest.mark.parametrize('dataset,message', [
    ('no_such_dataset_xyz', 'Unknown dataset'),
    ('folder:/no/such/dir', 'does not exist'),
    ('folder:' + __file__, r'is a file, not a folder \(extract an archive first\)'),
])
def test_bad_dataset_is_a_clear_error(tiny_config, dataset, message):
  tiny_config.dataset = dataset
  with pytest.raises(ValueError, match=message):
    input_pipeline.get_info(tiny_config)


def _clear_proxies(monkeypatch):
  for name in list(os.environ):
    if name.lower().endswith('_proxy'):
      monkeypatch.delenv(name)


def _no_dns(host, *args, **kwargs):
  raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')


def test_offline_tfds_download_fails_at_once(tiny_config, tmp_path, monkeypatch):
  _clear_proxies(monkeypatch)
  monkeypatch.setattr(socket, 'getaddrinfo', _no_dns)
  tiny_config.dataset, tiny_config.data_dir = 'fashion_mnist', str(tmp_path)
  with pytest.raises(RuntimeError, match=r'not prepared in .*no download host resolves '
                     r'\(fashion-mnist\.s3.*offline\?\); point --config\.data_dir'):
    input_pipeline.get_info(tiny_config)


def test_download_hosts_are_only_unreachable_without_dns_and_proxy(tmp_path, monkeypatch):
  builder = tfds.builder('mnist', data_dir=str(tmp_path))
  _clear_proxies(monkeypatch)
  monkeypatch.setattr(socket, 'getaddrinfo', lambda host, *a, **k: [('resolved', host)])
  assert input_pipeline._unresolvable_download_hosts(builder) == []
  monkeypatch.setattr(socket, 'getaddrinfo', _no_dns)
  assert input_pipeline._unresolvable_download_hosts(builder) == ['storage.googleapis.com']
  monkeypatch.setenv('HTTPS_PROXY', 'http://proxy:3128')
  assert input_pipeline._unresolvable_download_hosts(builder) == []
