"""Layers that XLA compiles well on every platform."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _phase_taps(kernel_size: int, stride: int):
  """For each output phase of a SAME transposed conv: its kernel taps and input offset."""
  pad_lo = int(np.ceil((kernel_size + stride - 2) / 2)) if stride <= kernel_size - 1 else kernel_size - 1
  taps, offsets = [], []
  for r in range(stride):
    first = (pad_lo - r) % stride
    taps.append([first + stride * m for m in range(kernel_size // stride)])
    offsets.append((r + first - pad_lo) // stride)
  return np.array(taps), np.array(offsets)


class ConvTransposeSubpixel(nn.Module):
  """`nn.ConvTranspose(padding='SAME')`, computed per output phase and then depth-to-space.

  Same parameters, same function. The weight gradient of a strided transposed conv is
  pathologically slow on XLA:CPU; here each of the s*s output phases is a small stride-1
  product with (k/s)^2 taps of the kernel, which does no multiplications by inserted zeros.
  `impl` 'matmul' gathers each phase's taps as shifted slices (im2col) and multiplies all
  phases in one batched matmul (`_phase_products`): every gradient is a matmul or a slice,
  which XLA:CPU runs far faster than the per-phase convs of 'conv'. 'winograd' computes the
  phases with Winograd's F(m, t) algorithm (`_winograd_products`) on windows they all share
  (each phase's tiles shifted to start where the others' do), so one transformed input feeds a
  single product per point with every phase's filters side by side: for kernel 4 stride 2 (two
  taps a phase) on the tutorial's 14x14 input, 3x3 tiles of 5x5 outputs take 6*6 products of 4F
  columns each, 0.41x the multiplications of the direct phases, with one input transform
  instead of four. 'conv' is one stride-1 conv per phase. 'auto' picks 'winograd' on CPU for
  two taps a phase, else 'matmul'; 'conv' elsewhere.
  """
  features: int
  kernel_size: int = 4
  stride: int = 2
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  use_bias: bool = True  # False before a batch norm, which would cancel it.
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.stride
    if k % s:
      raise ValueError(f'kernel_size {k} must be a multiple of stride {s}.')
    cin, t = x.shape[-1], k // s
    impl = self.impl
    if impl == 'auto':
      impl = ('winograd' if t == 2 else 'matmul') if jax.default_backend() == 'cpu' else 'conv'
    if impl == 'winograd' and t > len(_WINOGRAD_POINTS) + 1:
      raise ValueError(f"impl='winograd' takes at most {len(_WINOGRAD_POINTS) + 1} taps per phase "
                       f'(kernel_size / stride), got {t}: use impl="matmul".')
    kernel = self.param('kernel', self.kernel_init, (k, k, cin, self.features))
    bias = (self.param('bias', nn.initializers.zeros, (self.features,)) if self.use_bias
            else jnp.zeros((self.features,)))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    taps, offsets = _phase_taps(k, s)
    n, height, width = x.shape[:3]
    if impl == 'winograd':
      offsets = tuple(int(o) for o in offsets)
      tiles = _winograd_tiles(x.shape, offsets, t, s * s * self.features)
      filters = _winograd_filter(kernel, taps, tiles)
      return _winograd_products(x, filters, offsets, s, tiles, t) + bias
    phase_kernels = [kernel[taps[ry]][:, taps[rx]] for ry in range(s) for rx in range(s)]
    phase_offsets = [(int(offsets[ry]), int(offsets[rx])) for ry in range(s) for rx in range(s)]
    if impl == 'matmul':
      phases = _phase_products(
          x, jnp.stack(phase_kernels).reshape(s * s, t * t * cin, self.features),
          tuple(phase_offsets), t)
    else:
      # Padded on one side only: a symmetric padding makes XLA:CPU's weight gradient
      # orders of magnitude slower.
      phases = jnp.stack([
          jax.lax.conv_general_dilated(
              x, sub, window_strides=(1, 1), padding=[(-oy, oy + t - 1), (-ox, ox + t - 1)],
              dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
          for sub, (oy, ox) in zip(phase_kernels, phase_offsets)])
    phases = phases.reshape(s, s, n, height, width, self.features).transpose(2, 3, 0, 4, 1, 5)
    return phases.reshape(n, height * s, width * s, self.features) + bias


def _phase_patches(x, phase_offsets, t: int):
  """[phases, N*H*W, t*t*C]: for each phase, its t x t input taps side by side (im2col)."""
  n, height, width, cin = x.shape
  offsets = [o for pair in phase_offsets for o in pair]
  # Input padding that covers every phase's taps: a phase at offset o reads rows o + 0..t-1.
  lo, hi = max(0, -min(offsets)), max(0, max(offsets) + t - 1)
  padded = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  return jnp.stack([
      jnp.concatenate([padded[:, lo + oy + a:lo + oy + a + height, lo + ox + b:lo + ox + b + width]
                       for a in range(t) for b in range(t)], axis=-1)
      for oy, ox in phase_offsets]).reshape(len(phase_offsets), n * height * width, t * t * cin)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _phase_products(x, kernels, phase_offsets, t: int):
  """[phases, N*H*W, F]: each phase's patches times its kernel, one batched matmul."""
  return jnp.einsum('pmk,pkf->pmf', _phase_patches(x, phase_offsets, t), kernels)


def _phase_products_fwd(x, kernels, phase_offsets, t):
  return _phase_products(x, kernels, phase_offsets, t), (x, kernels)


def _phase_products_bwd(phase_offsets, t, residuals, grad):
  # The patches are rebuilt from x rather than kept: XLA shares them with the forward's.
  x, kernels = residuals
  patches, patches_vjp = jax.vjp(lambda x: _phase_patches(x, phase_offsets, t), x)
  d_x, = patches_vjp(jnp.einsum('pmf,pkf->pmk', grad, kernels))
  # Autodiff would contract the patches' long M axis in place, which XLA:CPU runs at about
  # half the matmul rate; on the transposed output gradient (a small copy) it is an
  # ordinary [F, M] @ [M, K] product. The barrier keeps XLA from folding the transposes back.
  d_kernels_t = jnp.einsum('pfm,pmk->pfk', grad.transpose(0, 2, 1), patches)
  return d_x, jax.lax.optimization_barrier(d_kernels_t).transpose(0, 2, 1)


_phase_products.defvjp(_phase_products_fwd, _phase_products_bwd)


# Winograd's minimal filtering F(m, r) (Lavin & Gray, 2016): m outputs of an r-tap correlation
# from n = m + r - 1 products, y = A^T [(G g) * (B^T d)], built here by Toom-Cook from n - 1
# finite interpolation points and infinity. With more points than these f32 rounding grows fast.
_WINOGRAD_POINTS = (0, 1, -1, 2, -2, 0.5, -0.5)


@functools.lru_cache(maxsize=None)
def _winograd_matrices(m: int, r: int):
  """(A^T [m, n], G [n, r], B^T [n, n]) of F(m, r) as float64 numpy arrays."""
  n = m + r - 1
  points = _WINOGRAD_POINTS[:n - 1]

  def evaluation(k):  # Rows evaluate a degree k - 1 polynomial at each point, then infinity.
    return np.array([[p ** i for i in range(k)] for p in points] + [[0] * (k - 1) + [1]], float)
  # A linear convolution is interpolate(evaluate(a) * evaluate(g)); correlation is its transpose.
  # The inverse is rational: rounding drops float noise that would add terms of ~1e-17.
  return evaluation(m).T, evaluation(r), np.round(np.linalg.inv(evaluation(n)), 12).T


# XLA:CPU runs each product of a batched matmul as one matmul, which it spreads over the
# threads only from about 2^24 multiply-adds; below that the rate falls towards one thread's.
_THREADED_MATMUL_MACS = 2**24


def _winograd_geometry(size: int, offsets, m: int, r: int):
  """(tiles, padding in front, padded length, first input, each phase's output shift) of an axis.

  Every phase reads the same windows: phase p's tile u computes its outputs m * u - shift_p ..
  m * u - shift_p + m - 1, shift_p = offsets[p] - min(offsets), so that its window starts at
  m * u + min(offsets) as the others' do. Rows a shift pushes out of range are dropped.
  """
  first = min(offsets)
  shifts = tuple(o - first for o in offsets)
  tiles = -(-(size + max(shifts)) // m)
  before = max(0, -first)
  # Tile u reads inputs m * u .. m * u + m + r - 2: whole tiles of m, so the transpose can weave.
  length = max(before + first + m * (tiles + (m + r - 2) // m), before + size)
  return tiles, before, length, first, shifts


def _geometries(x_shape, offsets, tiles, r: int):
  """The (H, W) geometries of `_winograd_geometry` for tiles (m_h, m_w)."""
  return [_winograd_geometry(size, offsets, m, r) for size, m in zip(x_shape[1:3], tiles)]


def _winograd_tiles(x_shape, offsets, r: int, features: int):
  """(m_h, m_w): outputs per tile along each axis, for the least estimated matmul time.

  `features` is the products' column count: every phase's filters side by side (s*s*F).
  """
  n, _, _, cin = x_shape
  sizes = range(1, len(_WINOGRAD_POINTS) + 3 - r)

  def cost(tiles):  # Transformed rows over the product's relative matmul rate; then the smaller m.
    (th, *_), (tw, *_) = _geometries(x_shape, offsets, tiles, r)
    rate = min(1.0, max(0.5, n * th * tw * cin * features / _THREADED_MATMUL_MACS))
    return th * tw * (tiles[0] + r - 1) * (tiles[1] + r - 1) / rate, tiles
  return min(((m_h, m_w) for m_h in sizes for m_w in sizes), key=cost)


def _mix(arrays, matrix):
  """[sum_j matrix[k, j] * arrays[j] for each row k], skipping zeros and unit factors."""
  out = []
  for row in matrix:
    terms = [a if c == 1 else -a if c == -1 else float(c) * a for c, a in zip(row, arrays) if c]
    out.append(functools.reduce(jnp.add, terms))
  return out


def _unstack(a, axis: int):
  return [jnp.take(a, i, axis) for i in range(a.shape[axis])]


def _winograd_filter(kernel, taps, tiles):
  """[n_w*n_h, C, s*s*F]: every phase's taps transformed (G g G^T), phases side by side."""
  (_, g_h, _), (_, g_w, _) = (_winograd_matrices(m, taps.shape[1]) for m in tiles)
  rows = jnp.stack([jnp.stack(_mix(_unstack(kernel[tap], 0), g_h)) for tap in taps])
  both = jnp.stack([jnp.stack(_mix(_unstack(rows[:, :, tap], 2), g_w)) for tap in taps])
  # [rx, b, ry, a, C, F] -> [b, a, C, ry, rx, F]
  s, (cin, features) = taps.shape[0], kernel.shape[2:]
  return both.transpose(1, 3, 4, 2, 0, 5).reshape(-1, cin, s * s * features)


def _winograd_input(x, axis: int, start: int, tiles: int, m: int, r: int):
  """B^T d of the tiles along `axis` (x padded), stacked as a new leading axis of n points."""
  points = [jax.lax.slice_in_dim(x, start + j, start + j + m * (tiles - 1) + 1, m, axis)
            for j in range(m + r - 1)]
  return jnp.stack(_mix(points, _winograd_matrices(m, r)[2]))


def _pad_axis(a, axis: int, before: int, after: int):
  return jnp.pad(a, [(before, after) if d == axis else (0, 0) for d in range(a.ndim)])


def _winograd_input_transpose(v, axis: int, start: int, tiles: int, length: int, m: int, r: int):
  """The transpose of `_winograd_input`: [n, ...] back to the padded axis of `length`."""
  spill = (m + r - 2) // m  # Tile u's inputs reach into tiles u + 1 .. u + spill.
  d = _mix(_unstack(v, 0), _winograd_matrices(m, r)[2].T)
  # Input j of tile u is row start + m * (u + j // m) + j % m.
  rows = [sum(_pad_axis(d[j], axis, j // m, spill - j // m) for j in range(rem, m + r - 1, m))
          for rem in range(m)]
  tiled = jnp.stack(rows, axis + 1)  # [..., tiles + spill, m, ...]
  woven = tiled.reshape(*tiled.shape[:axis], m * (tiles + spill), *tiled.shape[axis + 2:])
  return _pad_axis(woven, axis, start, length - start - m * (tiles + spill))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _winograd_products(x, filters, offsets, stride: int, tiles, r: int):
  """The transposed conv (r taps a phase): input transform, one batched matmul, output transform."""
  return _winograd_products_fwd(x, filters, offsets, stride, tiles, r)[0]


def _winograd_transformed_input(x, offsets, tiles, r: int):
  """[n_w*n_h, N*th*tw, C]: every tile's B^T d B, shared by all phases, points in (b, a) order."""
  n, height, width, cin = x.shape
  (th, bh, lh, fh, _), (tw, bw, lw, fw, _) = _geometries(x.shape, offsets, tiles, r)
  x = jnp.pad(x, ((0, 0), (bh, lh - bh - height), (bw, lw - bw - width), (0, 0)))
  rows = _winograd_input(x, 1, bh + fh, th, tiles[0], r)  # [a, N, th, W, C]
  v = _winograd_input(rows, 3, bw + fw, tw, tiles[1], r)  # [b, a, N, th, tw, C]
  return v.reshape(-1, n * th * tw, cin)


def _winograd_output(products, x_shape, offsets, stride: int, tiles, r: int):
  """[n_w*n_h, T, s*s*F] products to the [N, s*H, s*W, F] output: A^T M A, then depth-to-space."""
  n, height, width, _ = x_shape
  m_h, m_w = tiles
  (th, _, _, _, shift_h), (tw, _, _, _, shift_w) = _geometries(x_shape, offsets, tiles, r)
  # One matmul for the whole transform: as sums of slices XLA:CPU makes two passes over the
  # products and one over the output.
  a_h, a_w = (_winograd_matrices(m, r)[0] for m in tiles)
  a_t = jnp.asarray(np.kron(a_w, a_h), products.dtype)  # [(j, i), (b, a)]: A^T along both axes.
  y = (a_t @ products.reshape(a_t.shape[1], -1)).reshape(m_w, m_h, n, th, tw, stride, stride, -1)
  y = y.transpose(2, 3, 1, 5, 4, 0, 6, 7).reshape(n, th * m_h, stride, tw * m_w, stride, -1)
  # Phase (ry, rx) holds output row (m_h * u + i - shift_h[ry]) * s + ry, and so for columns.
  y = _phase_windows(_phase_windows(y, 1, shift_h, height), 3, shift_w, width)
  return y.reshape(n, height * stride, width * stride, -1)


def _phase_windows(y, axis: int, shifts, size: int):
  """y[..., shifts[p] + i, p, ...] for i < size: each phase's rows (at `axis`, phases after it).

  As selects between shifted slices, which XLA fuses with the transposes around them and the
  activation after them into one pass (stacking per-phase slices takes two more).
  """
  phase_shifts = np.reshape(shifts, [len(shifts) if d == axis + 1 else 1 for d in range(y.ndim)])
  out = None
  for shift in sorted(set(shifts)):
    rows = jax.lax.slice_in_dim(y, shift, shift + size, axis=axis)
    out = rows if out is None else jnp.where(phase_shifts == shift, rows, out)
  return out


def _winograd_products_fwd(x, filters, offsets, stride, tiles, r):
  v = _winograd_transformed_input(x, offsets, tiles, r)
  products = jnp.einsum('ptc,pcf->ptf', v, filters)
  # The transformed input is kept: rebuilding it costs as much memory traffic as the matmul.
  return _winograd_output(products, x.shape, offsets, stride, tiles, r), (x, v, filters)


def _winograd_products_bwd(offsets, stride, tiles, r, residuals, grad):
  x, v, filters = residuals
  n, height, width, cin = x.shape
  m_h, m_w = tiles
  (th, bh, lh, fh, shift_h), (tw, bw, lw, fw, shift_w) = _geometries(x.shape, offsets, tiles, r)
  # Transpose of the output transform: each phase back into its shifted place among whole
  # tiles (zeros where the forward dropped rows), then A (A^T transposed) along each axis.
  g = grad.reshape(n, height, stride, width, stride, -1)
  g = jnp.stack([jnp.stack([
      jnp.pad(g[:, :, ry, :, rx], ((0, 0), (oh, th * m_h - height - oh),
                                   (ow, tw * m_w - width - ow), (0, 0)))
      for rx, ow in enumerate(shift_w)], 3) for ry, oh in enumerate(shift_h)], 3)
  g = g.reshape(n, th, m_h, tw, m_w, stride, stride, -1).transpose(4, 2, 0, 1, 3, 5, 6, 7)
  # As sums of slices: here XLA fuses them with the transpose, so a matmul, as in the forward,
  # saves no pass.
  g = jnp.stack(_mix(_unstack(g, 1), _winograd_matrices(m_h, r)[0].T), 1)
  g = jnp.stack(_mix(_unstack(g, 0), _winograd_matrices(m_w, r)[0].T), 0)  # [b, a, N, th, tw, ...]
  g = g.reshape(filters.shape[0], n * th * tw, -1)
  d_filters = jnp.einsum('ptc,ptf->pcf', v, g)
  # Against the transposed filters (a small copy the barrier keeps from being folded back): an
  # ordinary [T, F] @ [F, C] product, which XLA:CPU runs faster than one against [C, F].
  filters_t = jax.lax.optimization_barrier(filters.transpose(0, 2, 1))
  d_v = jnp.einsum('ptf,pfc->ptc', g, filters_t).reshape(m_w + r - 1, m_h + r - 1, n, th, tw, cin)
  d_rows = _winograd_input_transpose(d_v, 3, bw + fw, tw, lw, m_w, r)
  d_x = _winograd_input_transpose(d_rows, 1, bh + fh, th, lh, m_h, r)
  return d_x[:, bh:bh + height, bw:bw + width], d_filters


_winograd_products.defvjp(_winograd_products_fwd, _winograd_products_bwd)


class ConvPatches(nn.Module):
  """`nn.Conv(padding='SAME')`, computed as im2col and one matmul on CPU.

  Same parameters, same function. A strided conv's input gradient is a dilated conv, which
  XLA:CPU runs on a slow generic path; here every gradient is a matmul or a pad/slice.
  'auto' picks 'patches' on CPU and XLA's own conv elsewhere.
  """
  features: int
  kernel_size: int = 3
  stride: int = 1
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  use_bias: bool = True  # False before a batch norm, which would cancel it.
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.stride
    impl = ('patches' if jax.default_backend() == 'cpu' else 'conv') if self.impl == 'auto' else self.impl
    cin = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (k, k, cin, self.features))
    bias = (self.param('bias', nn.initializers.zeros, (self.features,)) if self.use_bias
            else jnp.zeros((self.features,)))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if impl == 'conv':
      return jax.lax.conv_general_dilated(x, kernel, (s, s), 'SAME',
                                          dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + bias
    out_h, out_w = -(-x.shape[1] // s), -(-x.shape[2] // s)
    # SAME padding exactly as lax.conv_general_dilated: the extra pixel goes after.
    pad_h = max((out_h - 1) * s + k - x.shape[1], 0)
    pad_w = max((out_w - 1) * s + k - x.shape[2], 0)
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    # Patch features ordered (row tap, column tap, channel), as the kernel flattens.
    patches = jnp.concatenate(
        [x[:, i:i + (out_h - 1) * s + 1:s, j:j + (out_w - 1) * s + 1:s]
         for i in range(k) for j in range(k)], axis=-1)
    out = _patch_matmul(patches.reshape(-1, k * k * cin), kernel.reshape(k * k * cin, self.features))
    return out.reshape(*patches.shape[:-1], self.features) + bias


@jax.custom_vjp
def _patch_matmul(patches, kernel):
  """patches [M, K] @ kernel [K, F], its weight gradient a matmul on the transposed gradient."""
  return patches @ kernel


def _patch_matmul_fwd(patches, kernel):
  return patches @ kernel, (patches, kernel)


def _patch_matmul_bwd(residuals, grad):
  patches, kernel = residuals
  # Autodiff contracts both operands' long M axis, which XLA:CPU leaves to its generic dot; on
  # the transposed gradient (a small copy, kept by the barrier) it is an ordinary [F, M] @ [M, K]
  # matmul.
  grad_t = jax.lax.optimization_barrier(grad.T)
  d_kernel_t = jax.lax.optimization_barrier(grad_t @ patches)
  return grad @ kernel.T, d_kernel_t.T


_patch_matmul.defvjp(_patch_matmul_fwd, _patch_matmul_bwd)


def _same_pads(k: int):
  """(before, after) padding of a SAME stride-1 conv, as lax.conv_general_dilated pads."""
  return (k - 1) // 2, k - 1 - (k - 1) // 2


def _shift_add(taps, k: int):
  """out[h, w] = sum over (a, b) of taps[h + a - before, w + b - before, a, b] (zero outside)."""
  height, width = taps.shape[1:3]
  before, after = _same_pads(k)
  padded = jnp.pad(taps, ((0, 0), (before, after), (before, after), (0, 0), (0, 0), (0, 0)))
  return sum(padded[:, a:a + height, b:b + width, a, b] for a in range(k) for b in range(k))


def _taps_gradient(grad, k: int, columns: int):
  """[N, columns, H*W]: d taps[h, w, a, b, f] = grad[h - a + before, w - b + before, f], tap-major.

  The transpose of `_shift_add` gathers shifted slices of the small output gradient; the
  columns after k*k*F (the padded ones) are zero.
  """
  n, height, width, features = grad.shape
  before, after = _same_pads(k)
  planes = jnp.pad(grad.transpose(0, 3, 1, 2), ((0, 0), (0, 0), (after, before), (after, before)))
  taps = jnp.stack([planes[:, :, k - 1 - a:k - 1 - a + height, k - 1 - b:k - 1 - b + width]
                    for a in range(k) for b in range(k)], axis=1)
  taps = taps.reshape(n, k * k * features, height * width)
  return jnp.pad(taps, ((0, 0), (0, columns - k * k * features), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_shift_add(x, w, k: int, features: int):
  """The SAME conv from x @ w (every tap's contribution, columns (a, b, f)) by shift-add."""
  taps = (x @ w)[..., :k * k * features]
  return _shift_add(taps.reshape(*x.shape[:3], k, k, features), k)


def _conv_shift_add_fwd(x, w, k, features):
  return _conv_shift_add(x, w, k, features), (x, w)


def _conv_shift_add_bwd(k, features, residuals, grad):
  x, w = residuals
  n, height, width, cin = x.shape
  # The taps gradient per example, tap-major, read as it is by both products: the weight
  # gradient's contraction over all N*H*W pixels becomes N short ones, which XLA:CPU runs as
  # one batched matmul (autodiff's single long one runs on one core, after a transposed copy).
  d_taps = _taps_gradient(grad, k, w.shape[1])
  d_x = jnp.einsum('ntm,ct->nmc', d_taps, w).reshape(x.shape)
  d_w = jnp.einsum('ntm,nmc->ntc', d_taps, x.reshape(n, height * width, cin)).sum(0).T
  return d_x, d_w


_conv_shift_add.defvjp(_conv_shift_add_fwd, _conv_shift_add_bwd)


class ConvShiftAdd(nn.Module):
  """`nn.Conv(padding='SAME')`, stride 1, for few output channels: one matmul, then shift-add.

  Same parameters, same function. x @ W gives every tap's contribution at once (k*k*features
  columns: a well-shaped matmul even for one output channel), and the output sums each tap's
  plane shifted into place. XLA:CPU runs a conv with one output channel far below its matmul
  rate; here every gradient is a matmul or a slice.
  """
  features: int
  kernel_size: int = 7
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  impl: str = 'auto'  # 'auto' (shift-add on every platform) or 'conv' (XLA's convolution).

  @nn.compact
  def __call__(self, x):
    k, cin = self.kernel_size, x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (k, k, cin, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if self.impl == 'conv':
      return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                          dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + bias
    columns = k * k * self.features
    # Zero columns up to a multiple of 16: XLA:CPU runs the [M, C] @ [C, 49] product of a 7x7
    # conv to one channel at about half the rate of 64 columns.
    w = jnp.pad(kernel.transpose(2, 0, 1, 3).reshape(cin, columns), ((0, 0), (0, -columns % 16)))
    return _conv_shift_add(x, w, k, self.features) + bias
