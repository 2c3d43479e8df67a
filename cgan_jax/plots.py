"""Pictures: sample grids and image files, and the Matplotlib figures of `cgan_jax.inspect`,
rendered off-screen (Agg) at a fixed pixel size."""

from typing import Dict, Sequence, Tuple

import numpy as np

DPI = 100
PANEL_INCHES = 4.5  # Each panel is PANEL_INCHES * DPI pixels square.
GRID_EXTENSIONS = ('.png', '.jpg', '.jpeg')  # What write_image writes.

Curves = Dict[str, Tuple[np.ndarray, np.ndarray]]  # tag -> (steps, values)


def grid(images: np.ndarray, num_columns: int, *, min_cell: int = 28, pad: int = 2) -> np.ndarray:
  """Tiles (N, H, W, C) uint8 images into one picture, `num_columns` per row.

  Small images are enlarged by an integer factor (nearest neighbour) so every cell is
  at least `min_cell` pixels; cells are separated by `pad` gray pixels.
  """
  n, h, w, c = images.shape
  zoom = max(1, -(-min_cell // h))
  images = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
  h, w = h * zoom, w * zoom
  rows = -(-n // num_columns)
  canvas = np.full((rows * (h + pad) + pad, num_columns * (w + pad) + pad, c), 128, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, num_columns)
    canvas[pad + r * (h + pad):pad + r * (h + pad) + h,
           pad + col * (w + pad):pad + col * (w + pad) + w] = image
  return canvas


def write_image(path: str, picture: np.ndarray):
  """Writes a uint8 HWC picture in the format its extension names (PNG or JPEG)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(path)


def _panels(num_panels: int):
  """A figure of `num_panels` panels side by side, and their axes. A Figure of its own, not
  pyplot's: nothing global (backend, open figures) changes, and the Agg canvas draws it."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(num_panels * PANEL_INCHES, PANEL_INCHES))
  return fig, fig.subplots(1, num_panels, squeeze=False)


def _save(fig, path: str) -> str:
  # No bbox_inches='tight': the picture keeps exactly figsize * DPI pixels.
  fig.savefig(path, dpi=DPI)
  return path


def figure_size(num_panels: int) -> Tuple[int, int]:
  """(height, width) in pixels of a figure with `num_panels` side by side."""
  return int(PANEL_INCHES * DPI), int(num_panels * PANEL_INCHES * DPI)


def heatmaps(matrices: Sequence[Tuple[str, np.ndarray]], tick_labels: Sequence[str],
             path: str) -> str:
  """One cosine-similarity heatmap per (title, square matrix), values in [-1, 1]."""
  fig, axes = _panels(len(matrices))
  for ax, (title, matrix) in zip(axes[0], matrices):
    im = ax.imshow(matrix, cmap='RdBu_r', vmin=-1, vmax=1)
    ticks = np.arange(len(matrix))
    # Rows past the names (another attribute's table) are labelled by their index.
    names = list(tick_labels[:len(matrix)]) + [str(i) for i in range(len(tick_labels), len(matrix))]
    ax.set_xticks(ticks, names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  return _save(fig, path)


def scatter_by_class(panels: Sequence[Tuple[np.ndarray, str, Tuple[str, str]]],
                     labels: np.ndarray, class_names: Sequence[str], path: str) -> str:
  """One panel per (2-D points, title, axis labels), points coloured by class."""
  fig, axes = _panels(len(panels))
  import matplotlib  # pylint: disable=g-import-not-at-top
  cmap = matplotlib.colormaps['tab10' if len(class_names) <= 10 else 'tab20']
  for ax, (points, title, axis_labels) in zip(axes[0], panels):
    for c in np.unique(labels):
      sel = labels == c
      ax.scatter(points[sel, 0], points[sel, 1], s=6, alpha=0.6, color=cmap(int(c) % cmap.N),
                 label=class_names[c] if c < len(class_names) else str(c))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(axis_labels[0], fontsize=8)
    ax.set_ylabel(axis_labels[1], fontsize=8)
    if len(class_names) <= 20:
      ax.legend(fontsize=6, markerscale=2, loc='best', ncol=2)
  fig.tight_layout()
  return _save(fig, path)


def curves(panels: Sequence[Tuple[str, Curves]], path: str) -> str:
  """One panel per (title, {tag: (steps, values)}), every tag a line against the step."""
  fig, axes = _panels(len(panels))
  for ax, (title, series) in zip(axes[0], panels):
    for tag, (steps, values) in sorted(series.items()):
      ax.plot(steps, values, label=tag, linewidth=1.2)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel('step', fontsize=8)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return _save(fig, path)
