"""What the models need to know about a dataset's labels, without TensorFlow: DatasetInfo and
the class counts of single- and multi-attribute labels."""

import dataclasses
import itertools
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the models need to know about the data."""
  num_classes: Any  # int, or a tuple of class counts, one per attribute of config.labels.
  image_shape: tuple  # (height, width, channels) after preprocessing.
  num_examples: int  # In the training split, over all hosts; 0 if unknown.
  class_names: tuple  # Names of the classes (a tuple of them per attribute with config.labels).


def attribute_counts(num_classes) -> tuple:
  """Class counts per attribute: (n,) for a single label."""
  return tuple(num_classes) if isinstance(num_classes, (tuple, list)) else (int(num_classes),)


def num_classes_from_json(value):
  """A saved num_classes (an int, or a JSON list per attribute) as the models take it."""
  return tuple(value) if isinstance(value, (tuple, list)) else value


def default_labels(num_classes, max_combinations: int = 100) -> np.ndarray:
  """Labels to draw when none are asked for: every class, or (N, A) combinations of attributes.

  Every combination when there are at most `max_combinations`, else each attribute's values
  in turn with the other attributes at 0.
  """
  if not isinstance(num_classes, (tuple, list)):
    return np.arange(num_classes, dtype=np.int32)
  if np.prod(num_classes) <= max_combinations:
    return np.array(list(itertools.product(*map(range, num_classes))), np.int32)
  rows = [[v if i == a else 0 for i in range(len(num_classes))]
          for a, n in enumerate(num_classes) for v in range(n)]
  return np.array(rows, np.int32)


def label_keys(config) -> tuple:
  """The class-label features of config.labels; () for the dataset's own label."""
  return tuple(k.strip() for k in config.get('labels', '').split(',') if k.strip())
