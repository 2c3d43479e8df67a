"""Matplotlib figures for `cgan_jax.inspect`, rendered off-screen (Agg) at a fixed pixel size."""

from typing import Dict, Sequence, Tuple

import matplotlib

matplotlib.use('Agg')  # No display on training machines; must precede pyplot.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

DPI = 100
PANEL_INCHES = 4.5  # Each panel is PANEL_INCHES * DPI pixels square.

Curves = Dict[str, Tuple[np.ndarray, np.ndarray]]  # tag -> (steps, values)


def _save(fig, path: str) -> str:
  # No bbox_inches='tight': the picture keeps exactly figsize * DPI pixels.
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  return path


def figure_size(num_panels: int) -> Tuple[int, int]:
  """(height, width) in pixels of a figure with `num_panels` side by side."""
  return int(PANEL_INCHES * DPI), int(num_panels * PANEL_INCHES * DPI)


def heatmaps(matrices: Sequence[Tuple[str, np.ndarray]], tick_labels: Sequence[str],
             path: str) -> str:
  """One cosine-similarity heatmap per (title, square matrix), values in [-1, 1]."""
  fig, axes = plt.subplots(1, len(matrices), squeeze=False,
                           figsize=(len(matrices) * PANEL_INCHES, PANEL_INCHES))
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
  fig, axes = plt.subplots(1, len(panels), squeeze=False,
                           figsize=(len(panels) * PANEL_INCHES, PANEL_INCHES))
  cmap = plt.get_cmap('tab10' if len(class_names) <= 10 else 'tab20')
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
  fig, axes = plt.subplots(1, len(panels), squeeze=False,
                           figsize=(len(panels) * PANEL_INCHES, PANEL_INCHES))
  for ax, (title, series) in zip(axes[0], panels):
    for tag, (steps, values) in sorted(series.items()):
      ax.plot(steps, values, label=tag, linewidth=1.2)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel('step', fontsize=8)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return _save(fig, path)
