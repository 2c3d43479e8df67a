"""tf.data input: TFDS datasets, image folders and scikit-learn's digits, sharded per host."""

import functools
import re
import socket
import types
from typing import Optional
import urllib.parse
import urllib.request

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cgan_jax import image_folder
from cgan_jax.image_folder import FOLDER_PREFIX
# The label helpers live in labels.py (no TensorFlow); the names stay importable from here.
from cgan_jax.labels import DatasetInfo, label_keys  # pylint: disable=unused-import
from cgan_jax.labels import default_labels, num_classes_from_json  # pylint: disable=unused-import

_LABEL_OUT_OF_RANGE = 'label out of range:'  # Marks the input pipeline's label check.
_CACHE_BYTES = 2 << 30  # Datasets smaller than this (decoded) are cached in memory.
_TFDS_MIRROR = 'storage.googleapis.com'  # Where TFDS fetches prepared datasets from first.
_TFDS_REMEDY = ("point --config.data_dir at a prepared copy, or use --config.dataset='folder:PATH' "
                'for local images.')


def tensorflow_on_host():
  """Keeps TensorFlow off the accelerators JAX uses (tf.data runs on the host). Called before
  TensorFlow first runs anything: after that its devices are fixed."""
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TensorFlow runs already, with the devices it was given then.
    pass


class _Source:
  """An unbatched dataset of {'image': uint8 HWC, 'label': int} with its metadata."""

  def __init__(self, config: ml_collections.ConfigDict, prepare: bool = True):
    tensorflow_on_host()
    self.config = config
    name = config.dataset
    keys = label_keys(config)
    if keys not in ((), ('label',)) and (name == 'digits' or name.startswith(FOLDER_PREFIX)):
      raise ValueError(f'config.labels={config.labels!r}: dataset {name!r} has one class label, '
                       "'label'; several attributes need a TFDS dataset with several of them.")
    if name == 'digits':
      self._init_digits()
    elif name.startswith(FOLDER_PREFIX):
      self._init_folder(name[len(FOLDER_PREFIX):])
    else:
      self._init_tfds(name, prepare)

  # scikit-learn's bundled 8x8 digits: the embedded default, no download needed.
  def _init_digits(self):
    from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
    digits = sk_datasets.load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    num_test = 297  # Held out for the classifier and metrics; 1500 examples train.
    self._splits = {'train': (images[:-num_test], labels[:-num_test]),
                    'test': (images[-num_test:], labels[-num_test:])}
    self.num_classes, self.class_names = (10,), tuple(str(i) for i in range(10))
    self.native_shape = (8, 8, 1)
    self.split_sizes = {k: len(v[1]) for k, v in self._splits.items()}
    self._read = self._read_digits

  def _read_digits(self, split, seed):
    del seed
    return self._read_slices(split, lambda name: tf.data.Dataset.from_tensor_slices(
        {'image': self._splits[name][0], 'label': self._splits[name][1]}))

  # A folder of class subfolders: PATH/<split>/<label>/*.png (the tfds.ImageFolder layout), or
  # PATH/<label>/*.png (torchvision's and Keras' layout), read as one split, 'train'.
  def _init_folder(self, path):
    folder = image_folder.layout(path, self.config.train_split)
    builder = tfds.ImageFolder(folder.root)
    self._builder = builder
    self.num_classes = (builder.info.features['label'].num_classes,)
    self.class_names = tuple(builder.info.features['label'].names)
    self.split_sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
    self.native_shape = image_folder.image_shape_from_headers(folder.path, folder.files)
    self._read = self._read_folder

  def _read_folder(self, split, seed):
    # ImageFolder has no sub-split API, so slices are taken here.
    ds = self._read_slices(
        split, lambda name: self._builder.as_dataset(split=name, shuffle_files=False))
    channels = self.native_shape[-1]
    return ds.map(lambda ex: {'image': _to_channels(ex['image'], channels), 'label': ex['label']},
                  num_parallel_calls=tf.data.AUTOTUNE)

  # Any TFDS image-classification dataset.
  def _init_tfds(self, name, prepare):
    try:
      builder = tfds.builder(name, data_dir=self.config.data_dir)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(
          f'Unknown dataset {name!r} ({type(e).__name__}); use a TFDS name such as mnist, '
          f"fashion_mnist or cifar10, 'digits', or 'folder:PATH'.") from None
    features = builder.info.features
    images = sorted(k for k, f in features.items() if isinstance(f, tfds.features.Image))
    class_labels = sorted(k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel))
    if not class_labels:
      raise ValueError(f'Dataset {name!r} has no class label feature; a conditional GAN needs one.')
    # The (image, label) pair the dataset declares, else the only (or the conventional) one.
    supervised = builder.info.supervised_keys or ()
    image_key, label_key = (
        supervised if len(supervised) == 2 and all(isinstance(k, str) for k in supervised) else
        (images[0] if len(images) == 1 else 'image',
         class_labels[0] if len(class_labels) == 1 else 'label'))
    keys = label_keys(self.config) or (label_key,)
    for key in keys:
      if key not in class_labels:
        raise ValueError(f'Dataset {name!r} has no class label {key!r}; set config.labels to '
                         f'some of {class_labels}.')
    if image_key not in images:
      raise ValueError(f'Dataset {name!r} has no image feature {image_key!r} (it has {images}); '
                       'a conditional GAN of images needs one.')
    if prepare:
      _prepare(builder, name)
    self._builder, self._keys = builder, (image_key, keys)
    counts = tuple(features[k].num_classes for k in keys)
    names = tuple(tuple(features[k].names) for k in keys)
    self.num_classes, self.class_names = counts, (names[0] if len(counts) == 1 else names)
    self.native_shape = tuple(features[image_key].shape)
    self.split_sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
    self._read = self._read_tfds

  def _read_tfds(self, split, seed):
    image_key, keys = self._keys
    ds = self._builder.as_dataset(
        split=tfds.split_for_jax_process(split), shuffle_files=True,
        read_config=tfds.ReadConfig(shuffle_seed=seed))

    def select(ex):
      labels = [ex[k] for k in keys]
      return {'image': ex[image_key], 'label': labels[0] if len(labels) == 1 else tf.stack(labels)}
    return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)

  def _field(self, split):
    return next((f for f in ('train_split', 'eval_split') if self.config[f] == split), None)

  def _slices(self, split: str) -> list:
    """(split name, first example, count) parts of `split` in TFDS's syntax: 'train',
    'train[:90%]', 'a+b'."""
    try:
      parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(
          {name: types.SimpleNamespace(num_examples=n) for name, n in self.split_sizes.items()})
    except ValueError:
      field = self._field(split)
      remedy = (f"; set --config.{field} to one of them or a slice of one, e.g. 'train[90%:]'"
                if field else '')
      raise ValueError(f'Dataset {self.config.dataset!r} has no split {split!r}; '
                       f'it has {sorted(self.split_sizes)}{remedy}.') from None
    return [(part.splitname, part.from_ or 0,
             len(range(self.split_sizes[part.splitname])[part.from_:part.to])) for part in parts]

  def num_examples(self, split: str) -> int:
    """Examples in `split` over all hosts; 0 when the dataset does not say."""
    if not self.split_sizes:  # tfds.testing.mock_data has no split metadata.
      return 0
    return sum(count for _, _, count in self._slices(split))

  def _read_slices(self, split, read_whole):
    """`split` from whole named splits (`read_whole(name)`), sliced; this host's share."""
    parts = [read_whole(name).skip(first).take(count) for name, first, count in self._slices(split)]
    ds = functools.reduce(tf.data.Dataset.concatenate, parts)
    return ds.shard(jax.process_count(), jax.process_index())  # Every process_count-th example.

  def read(self, split: str, seed: int) -> tf.data.Dataset:
    if self.split_sizes and self.num_examples(split) == 0:  # Empty class folders, 'train[:0]'.
      field = self._field(split)
      others = sorted(k for k, n in self.split_sizes.items() if n)
      remedy = f', or set --config.{field} to one of {others}' if field and others else ''
      raise ValueError(f'Dataset {self.config.dataset!r} has no images in split {split!r}; '
                       f'add some{remedy}.')
    return self._read(split, seed)


def _prepare(builder, name: str):
  """builder.download_and_prepare(), failing in one line (at once when offline)."""
  # tfds.testing.mock_data stubs the download: then nothing is fetched and nothing to check.
  stubbed = type(builder).download_and_prepare.__module__.startswith('tensorflow_datasets.testing')
  if not (stubbed or builder.is_prepared()) and (hosts := _unresolvable_download_hosts(builder)):
    # TFDS would retry each download with backoff for minutes before failing.
    raise RuntimeError(
        f'TFDS dataset {name!r} is not prepared in {builder.data_dir} '
        f'and no download host resolves ({", ".join(hosts)}: offline?); {_TFDS_REMEDY}')
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(
        f'Could not download or prepare TFDS dataset {name!r} ({type(e).__name__}: '
        f'{str(e).splitlines()[0][:200] if str(e) else ""}); {_TFDS_REMEDY}') from None


def _unresolvable_download_hosts(builder) -> list:
  """The hosts a TFDS dataset downloads from, if none of them (nor TFDS's mirror) resolves; else [].

  Only a failed DNS lookup counts, and only without a proxy (which would resolve them itself).
  """
  if set(urllib.request.getproxies()) - {'no'}:  # *_proxy variables (no_proxy only exempts).
    return []
  try:
    hosts = {urllib.parse.urlparse(url).hostname for url in builder.url_infos or {}} - {None}
  except Exception:  # pylint: disable=broad-except
    return []  # No registered URLs to check: leave it to TFDS.
  if not hosts:
    return []
  for host in sorted(hosts | {_TFDS_MIRROR}):
    try:
      socket.getaddrinfo(host, 443)
      return []
    except OSError:
      pass
  return sorted(hosts)


def _to_channels(image, channels):
  """Converts a uint8 image to `channels` (1 or 3) channels."""
  have = image.shape[-1]
  if have == channels:
    return image
  if channels == 1:
    return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)
  return tf.image.grayscale_to_rgb(image)


def _target_shape(config, source):
  height, width, channels = source.native_shape
  if config.image_size:
    height = width = config.image_size
  if height is None or width is None:
    raise ValueError(f'Dataset {config.dataset!r} has images of varying size; set --config.image_size.')
  return (height, width, config.num_channels or channels)


def get_info(config: ml_collections.ConfigDict, prepare: bool = True) -> DatasetInfo:
  """Metadata of `config.dataset` (classes, image shape) without reading the images; without
  `prepare`, a TFDS dataset is not downloaded either (its number of examples may then be 0)."""
  return _info(config, _Source(config, prepare))


def _info(config: ml_collections.ConfigDict, source: _Source) -> DatasetInfo:
  return DatasetInfo(
      num_classes=source.num_classes, image_shape=_target_shape(config, source),
      num_examples=source.num_examples(config.train_split), class_names=source.class_names)


def create_dataset(config: ml_collections.ConfigDict, split: str, local_batch_size: int, *,
                   train: bool = True, start_batch: int = 0, seed: Optional[int] = None):
  """This host's batches of {'image': float32 in [-1, 1], 'label': int32}, and the DatasetInfo.

  With `train`, the data is shuffled (deterministically for `seed`) and repeated, and
  the first `start_batch` batches are skipped, so a resumed run sees the same stream.
  """
  source = _Source(config)
  info = _info(config, source)
  shape = info.image_shape
  seed = config.seed if seed is None else seed
  ds = source.read(split, seed)
  # Images of varying size (None in native_shape) are not cached: their size is unknown.
  if None not in source.native_shape and (
      0 < source.num_examples(split) * np.prod(source.native_shape) < _CACHE_BYTES):
    ds = ds.cache()
  if train:
    ds = _shuffled_epochs(ds, config.shuffle_buffer, seed, skip=start_batch * local_batch_size)

  counts = tf.constant(info.num_classes, tf.int32)

  def preprocess(example):
    image = _to_channels(example['image'], shape[-1])
    image = tf.cast(image, tf.float32)
    if image.shape[0] != shape[0] or image.shape[1] != shape[1]:
      image = tf.image.resize(image, shape[:2], antialias=True)
    image = tf.ensure_shape(image / 127.5 - 1.0, shape)
    # Unlabelled examples (TFDS marks them -1) would train on a NaN embedding.
    label = tf.cast(example['label'], tf.int32)
    in_range = tf.reduce_all((label >= 0) & (label < (counts if label.shape.rank else counts[0])))
    with tf.control_dependencies([tf.debugging.Assert(in_range, [_LABEL_OUT_OF_RANGE, label])]):
      label = tf.identity(label)
    return {'image': image, 'label': label}

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch_size, drop_remainder=train)
  options = tf.data.Options()
  options.deterministic = True
  # tf.data's autotuning thread can hold up the iterator's teardown at the end of a run for tens
  # of seconds while the disk is busy (a timed wait the teardown does not cut short). Without it
  # AUTOTUNE takes tf.data's defaults: maps still run on every core, as fast.
  options.autotune.enabled = False
  options.experimental_optimization.map_parallelization = True
  ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
  return ds, info


def _shuffled_epochs(ds: tf.data.Dataset, buffer_size: int, seed: int, skip: int):
  """`ds` repeated, each epoch shuffled with a seed of its own, from example `skip` on.

  A resumed run starts at its epoch: the epochs before it are not read (nor decoded) again,
  only the examples of that epoch before `skip` are.
  """
  size = int(ds.cardinality())
  if size <= 0:  # Size unknown: one shuffle over the repeated stream, read up to `skip`.
    return ds.repeat().shuffle(buffer_size, seed=seed).skip(skip)
  first_epoch, offset = divmod(skip, size)
  epochs = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
  return epochs.flat_map(
      lambda epoch: ds.shuffle(buffer_size, seed=seed * 1_000_003 + epoch)).skip(offset)


def numpy_batches(ds: tf.data.Dataset, config: ml_collections.ConfigDict):
  """`ds.as_numpy_iterator()`, an image that cannot be decoded raised as a one-line ValueError."""
  try:
    yield from ds.as_numpy_iterator()
  except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
    if _LABEL_OUT_OF_RANGE in (e.message or ''):
      raise ValueError(_label_message(config, e.message)) from None
    raise ValueError(_unreadable_image_message(config, e)) from None


def _label_message(config, error_message: str) -> str:
  label = error_message.split(_LABEL_OUT_OF_RANGE, 1)[1].splitlines()[0].strip(' []')
  return (f'Dataset {config.dataset!r} has an example labelled {label}, outside its classes '
          f'(unlabelled examples?); train on labelled splits only (--config.train_split, '
          f'--config.eval_split).')


def _unreadable_image_message(config, error) -> str:
  """Names the first file PIL cannot read in a folder dataset (found only after a failure)."""
  if config.dataset.startswith(FOLDER_PREFIX):
    path = config.dataset[len(FOLDER_PREFIX):]
    return image_folder.first_unreadable_message(path) or (
        f'TensorFlow could not decode an image under {path!r} that PIL reads; check that its '
        'files are PNG or JPEG inside (not renamed from another format).')
  detail = re.sub(r'\{\{[^}]*\}\}\s*', '', (error.message or str(error)).strip()).splitlines()
  detail = detail[0][:200] if detail else type(error).__name__
  return (f'Could not read the images of {config.dataset!r} ({detail}); check that its files '
          'are intact (prepare the TFDS dataset again).')
